//! Instructions per request: dsgw and the bare pass-through proxy each run under valgrind's
//! callgrind, which counts the same on a busy machine; requests go one after another over one
//! keep-alive connection, counters zeroed after a warm-up and dumped after the measured ones.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use dsgw_tests::harness::{self, Gateway};

use super::{Args, Target, chat_body, client, once};

/// Requests before the counters are zeroed (connections, lazy statics, the allocator's arenas).
const WARM_UP: usize = 30;

/// A process under callgrind, its counters driven with `callgrind_control`.
struct Counted {
    pid: u32,
    out: PathBuf,
}

impl Counted {
    fn wrapper(out: &Path) -> Vec<String> {
        vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            "--quiet".into(),
            format!("--callgrind-out-file={}/callgrind.%p", out.display()),
        ]
    }

    fn control(&self, flag: &str) {
        let status = Command::new("callgrind_control")
            .arg(flag)
            .arg(self.pid.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("callgrind_control (valgrind) is installed");
        assert!(status.success(), "callgrind_control {flag} failed");
    }

    /// Instructions since the last zeroing: the newest dump's `totals:` line.
    fn dump_total(&self) -> u64 {
        self.control("-d");
        let prefix = format!("callgrind.{}.", self.pid);
        let newest = std::fs::read_dir(&self.out)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .max_by_key(|e| {
                e.file_name().to_string_lossy()[prefix.len()..]
                    .parse::<u32>()
                    .unwrap_or(0)
            })
            .expect("callgrind wrote a dump");
        let text = std::fs::read_to_string(newest.path()).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("totals: ").or(l.strip_prefix("summary: ")))
            .and_then(|t| t.trim().parse().ok())
            .expect("a callgrind dump has totals")
    }

    /// Instructions per request for `requests` requests of `body`, one after another, over one
    /// keep-alive connection or (`fresh`) each on a connection of its own, as a client that
    /// finds every pooled connection busy opens one.
    async fn per_request(
        &self,
        target: &Target,
        body: &bytes::Bytes,
        requests: usize,
        fresh: bool,
    ) -> f64 {
        let single = client(usize::from(!fresh));
        for _ in 0..WARM_UP {
            assert!(
                once(&single, target, body).await.is_some(),
                "warm-up failed"
            );
        }
        self.control("-z");
        for _ in 0..requests {
            assert!(
                once(&single, target, body).await.is_some(),
                "a request failed"
            );
        }
        self.dump_total() as f64 / requests as f64
    }
}

pub async fn run(args: &Args, base: &str, env: &[(&str, &str)]) {
    let out = args.callgrind_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("dsgw-bench-callgrind-{}", std::process::id()))
    });
    std::fs::create_dir_all(&out).unwrap();
    let wrapper = Counted::wrapper(&out);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();

    let gw = Gateway::start_under(&wrapper, &args.dsgw, &harness::config(base, ""), env);
    let dsgw = Counted {
        pid: gw.pid(),
        out: out.clone(),
    };
    let via = Target {
        name: "dsgw",
        url: gw.url("/v1/chat/completions"),
        key: "sk-alice",
    };
    let mut proxy_cmd = Command::new(wrapper[0]);
    proxy_cmd
        .args(&wrapper[1..])
        .arg(&args.fake)
        .arg("--proxy-to")
        .arg(base);
    let (mut proxy_child, proxy_addr, _): (Child, _, _) =
        harness::spawn_announcing(proxy_cmd, "fake-deepseek: listening on ");
    let proxy = Counted {
        pid: proxy_child.id(),
        out: out.clone(),
    };
    let hop = Target {
        name: "bare proxy",
        url: format!("http://{proxy_addr}/chat/completions"),
        key: harness::UPSTREAM_KEY,
    };

    let n = args.instruction_requests;
    println!(
        "\n## Instructions per request (callgrind, {n} requests one after another, over one keep-alive connection unless said, after {WARM_UP} of warm-up, DSGW_LOG={})\n",
        args.log
    );
    println!("| request | bare proxy | dsgw | dsgw's own (dsgw - bare proxy) |");
    println!("|---|---|---|---|");
    for (name, stream, fresh) in [
        ("non-streaming", false, false),
        ("12-chunk stream", true, false),
        ("non-streaming, a new connection each", false, true),
    ] {
        let body = chat_body("deepseek-chat", "Hello", stream);
        let floor = proxy.per_request(&hop, &body, n, fresh).await;
        let ours = dsgw.per_request(&via, &body, n, fresh).await;
        println!(
            "| {name} | {:.0} K | {:.0} K | {:.0} K |",
            floor / 1e3,
            ours / 1e3,
            (ours - floor) / 1e3
        );
    }
    drop(gw);
    let _ = proxy_child.kill();
    let _ = proxy_child.wait();
    if args.callgrind_dir.is_none() {
        let _ = std::fs::remove_dir_all(&out);
    } else {
        println!("\ncallgrind dumps kept in {}", out.display());
    }
}
