//! Real `redis-server`s on free loopback ports, started by the tests that need them: one node,
//! one node over TLS (with a CA made for the test), or a Redis Cluster of three masters.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls_ca::TestCa;

#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    /// Extra arguments (TLS, cluster mode).
    args: Vec<String>,
    /// The CA file, for a TLS node.
    tls: Option<PathBuf>,
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port whose cluster-bus twin (port + 10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(free_port(), Vec::new(), None)
    }

    /// A TLS-only node whose certificate `ca` signed; with `mutual`, it requires a client
    /// certificate from `ca` too.
    pub fn start_tls(ca: &TestCa, mutual: bool) -> Self {
        let port = free_port();
        Self::start_with(port, tls_args(ca, port, mutual), Some(ca.ca_cert.clone()))
    }

    fn start_with(port: u16, args: Vec<String>, tls: Option<PathBuf>) -> Self {
        let dir = std::env::temp_dir().join(format!("dsgw-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            child: None,
            dir,
            args,
            tls,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` against this node, its output as text.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cli = Command::new("redis-cli");
        cli.args(["-p", &self.port.to_string()]);
        if let Some(ca) = &self.tls {
            cli.arg("--tls").arg("--cacert").arg(ca);
        }
        let out = cli
            .args(args)
            .output()
            .expect("redis-cli comes with redis-server");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the server (as a crash would: SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs Debian's redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS-only node on `port` with `ca`'s server certificate.
fn tls_args(ca: &TestCa, port: u16, mutual: bool) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    vec![
        "--port".into(),
        "0".into(),
        "--tls-port".into(),
        port.to_string(),
        "--tls-cert-file".into(),
        path(&ca.server_cert),
        "--tls-key-file".into(),
        path(&ca.server_key),
        "--tls-ca-cert-file".into(),
        path(&ca.ca_cert),
        "--tls-auth-clients".into(),
        if mutual { "yes" } else { "no" }.into(),
    ]
}

/// Calls per command since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
pub fn command_calls(info: &str) -> std::collections::BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// A Redis Cluster of three masters (no replicas) on loopback; a master may be killed and
/// restarted (it comes back empty, owning its slots again). Coverage is not required, so the
/// slots of the other masters keep serving while one is down.
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// The same cluster with TLS on clients' and the cluster bus's connections.
    pub fn start_tls(ca: &TestCa) -> Self {
        Self::start_with(Some(ca))
    }

    fn start_with(ca: Option<&TestCa>) -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = free_cluster_port();
                let mut args = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-require-full-coverage",
                    "no",
                ]
                .map(str::to_owned)
                .to_vec();
                if let Some(ca) = ca {
                    args.extend(tls_args(ca, port, false));
                    args.extend(["--tls-cluster".to_owned(), "yes".to_owned()]);
                }
                RedisServer::start_with(port, args, ca.map(|c| c.ca_cert.clone()))
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        // Bounded: a cluster whose nodes cannot reach each other would wait to join forever.
        let mut create = Command::new("timeout");
        create.args(["30", "redis-cli"]);
        if let Some(ca) = ca {
            create.arg("--tls").arg("--cacert").arg(&ca.ca_cert);
        }
        let out = create
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli comes with redis-server");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every running node says the cluster is ok.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The seed nodes' URLs, for `[redis] nodes`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The index of the master that owns `key`'s slot.
    pub fn owner_of(&self, key: &str) -> usize {
        let slot: u64 = self.nodes[0]
            .cli(&["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        let nodes = self.nodes[0].cli(&["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(port) = fields
                .get(1)
                .and_then(|a| a.split(['@', ':']).nth(1))
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            let owns = fields
                .iter()
                .skip(8)
                .any(|range| match range.split_once('-') {
                    Some((a, b)) => (a.parse::<u64>().unwrap_or(u64::MAX)..=b.parse().unwrap_or(0))
                        .contains(&slot),
                    None => range.parse::<u64>().ok() == Some(slot),
                });
            if owns {
                return self.nodes.iter().position(|n| n.port == port).unwrap();
            }
        }
        panic!("no master owns slot {slot}:\n{nodes}")
    }
}
