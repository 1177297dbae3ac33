//! Runs the real `dsgw` binary as a child process with a given configuration, and collects what it
//! logs so tests can assert on it (for example that no secret ever appears).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A running gateway. Killed on drop.
#[derive(Debug)]
pub struct Gateway {
    pub addr: SocketAddr,
    child: Child,
    logs: Arc<Mutex<String>>,
    _config: TempFile,
    bin: PathBuf,
    env: Vec<(String, String)>,
}

#[derive(Debug)]
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Gateway {
    /// Starts `bin serve --config <config>` and waits until it listens. `config` should listen on
    /// `127.0.0.1:0`; the chosen port is read from the gateway's start-up line.
    pub fn start(bin: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_under(&[], bin, config, env)
    }

    /// [`Gateway::start`] with `bin` run by `wrapper` (valgrind and its options, say).
    pub fn start_under(wrapper: &[&str], bin: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        let path = std::env::temp_dir().join(format!(
            "dsgw-test-{}-{}.toml",
            std::process::id(),
            unique()
        ));
        std::fs::write(&path, config).expect("write config");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(bin);
                command
            }
            None => Command::new(bin),
        };
        command
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("DSGW_LOG", "info,dsgw=debug")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            command.env(k, v);
        }
        let (child, addr, logs) = spawn_announcing(command, "dsgw: listening on http://");
        Self {
            addr,
            child,
            logs,
            _config: TempFile(path),
            bin: bin.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Stops this gateway (SIGKILL if it still runs) and starts it again on `config`, with the
    /// same environment; `addr` is the new one's.
    pub fn restart_with(&mut self, config: &str) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let bin = self.bin.clone();
        *self = Self::start(&bin, config, &env);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the gateway has written to stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits up to `limit` for `needle` to appear in the logs (they arrive through a pipe, a
    /// moment after the gateway wrote them).
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self.logs.lock().unwrap().contains(needle) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal named (`TERM`, `STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit`; returns whether it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command` with stderr piped, waits (up to 20 s) for a line `<prefix><addr>`, and keeps
/// collecting its stderr. Panics with the output so far if the line never comes.
pub fn spawn_announcing(
    mut command: Command,
    prefix: &'static str,
) -> (Child, SocketAddr, Arc<Mutex<String>>) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn child process");
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix(prefix)
                && let Some(tx) = tx.take()
            {
                let addr = addr.trim().trim_start_matches("http://");
                let _ = tx.send(addr.parse::<SocketAddr>().ok());
            }
            let mut logs = sink.lock().unwrap();
            logs.push_str(&line);
            logs.push('\n');
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Some(addr)) => (child, addr, logs),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "process did not start; its output:\n{}",
                logs.lock().unwrap()
            );
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A configuration with one provider per dialect on the fake at `base` and the three DeepSeek
/// names (priced at the flat `deepseek-v3.2` rates, so tests' arithmetic needs no clock), plus a key `sk-alice` (team research) and `sk-bob` (team ops). `extra` is appended.
pub fn config(base: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
drain_timeout_secs = 5

[ledger]
path = "{ledger}"

[[providers]]
name = "deepseek"
kind = "deepseek"
base_url = "{base}"
api_key_env = "FAKE_DEEPSEEK_KEY"
region = "cn"
idle_timeout_ms = 2000
first_byte_timeout_ms = 2000

[[providers]]
name = "vllm"
kind = "openai"
base_url = "{base}/openai/v1"
api_key_env = "FAKE_DEEPSEEK_KEY"
region = "on-prem"

[[providers]]
name = "openrouter"
kind = "openrouter"
base_url = "{base}/openrouter/api/v1"
api_key_env = "FAKE_DEEPSEEK_KEY"
routing = {{ only = ["deepseek"], data_collection = "deny" }}

[[models]]
name = "deepseek-chat"
deployments = [{{ provider = "deepseek", model = "deepseek-chat", price = "deepseek-v3.2" }}]

[[models]]
name = "deepseek-reasoner"
thinking = true
deployments = [{{ provider = "deepseek", model = "deepseek-reasoner", price = "deepseek-v3.2" }}]

[[models]]
name = "deepseek-v3.2-speciale"
thinking = true
thinking_only = true
tools = false
deployments = [{{ provider = "deepseek", model = "deepseek-reasoner", price = "deepseek-v3.2" }}]

[[models]]
name = "vllm-chat"
deployments = [{{ provider = "vllm", model = "deepseek-ai/DeepSeek-V3.2" }}]

[[models]]
name = "openrouter-reasoner"
thinking = true
deployments = [{{ provider = "openrouter", model = "deepseek/deepseek-v3.2" }}]

[[keys]]
id = "alice"
team = "research"
key_sha256 = "{alice}"

[[keys]]
id = "bob"
team = "ops"
key_env = "BOB_KEY"
{extra}
"#,
        alice = sha256_hex(b"sk-alice"),
        ledger = std::env::temp_dir()
            .join(format!(
                "dsgw-ledger-{}-{}.jsonl",
                std::process::id(),
                unique()
            ))
            .display(),
    )
}

/// Where dsgw keeps the offset of a ledger spool the store has confirmed.
pub fn shipped_checkpoint(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".shipped");
    PathBuf::from(name)
}

/// The upstream key the fake expects; tests assert it never leaks.
pub const UPSTREAM_KEY: &str = "sk-upstream-secret-0123456789";

/// Environment for [`config`].
pub fn env() -> Vec<(&'static str, &'static str)> {
    vec![("FAKE_DEEPSEEK_KEY", UPSTREAM_KEY), ("BOB_KEY", "sk-bob")]
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
