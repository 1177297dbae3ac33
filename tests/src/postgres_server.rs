//! A real PostgreSQL started by the tests that need one: `initdb` in a temporary folder and
//! `postgres` on a free loopback port, as a non-root user when the tests run as root (the server
//! refuses root), trust authentication on loopback only. Stopped and removed on drop.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::free_port;

#[derive(Debug)]
pub struct PostgresServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    bin: PathBuf,
    /// The user the server runs as when the tests are root.
    run_as: Option<String>,
}

/// The folder holding `initdb` and `postgres`: on the PATH, else Debian's versioned folder.
fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").is_file() && p.join("postgres").is_file())
    });
    if let Some(dir) = on_path {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|d| d.join("initdb").is_file())
        .expect("PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A user that is not root to run the server as: `postgres` (Debian's package makes it), else
/// `nobody`.
fn unprivileged_user() -> String {
    let exists = |u: &str| {
        Command::new("id")
            .arg(u)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    ["postgres", "nobody"]
        .into_iter()
        .find(|u| exists(u))
        .expect("no unprivileged user to run PostgreSQL as")
        .to_owned()
}

impl PostgresServer {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("dsgw-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run_as = is_root().then(unprivileged_user);
        if let Some(user) = &run_as {
            let ok = Command::new("chown")
                .args(["-R", user])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown {} to {user}", dir.display());
        }
        let mut server = Self {
            port,
            child: None,
            dir,
            bin: bin_dir(),
            run_as,
        };
        let data = server.data();
        let status = server
            .command("initdb")
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "dsgw",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        server.restart();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                // setpriv execs the program itself, so the child is the server (a signal
                // to it reaches the postmaster).
                let id = |flag: &str| {
                    let out = Command::new("id").args([flag, user]).output().expect("id");
                    String::from_utf8_lossy(&out.stdout).trim().to_owned()
                };
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={}", id("-u")))
                    .arg(format!("--regid={}", id("-g")))
                    .arg("--clear-groups")
                    .arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// `postgres://dsgw@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://dsgw@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again, after [`PostgresServer::kill`]) and waits until it accepts.
    pub fn restart(&mut self) {
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            // Tests need no durability across a power cut (fsync), but they do kill the server:
            // every commit must reach the kernel before it is acknowledged (synchronous_commit).
            .args(["-c", "fsync=off"])
            .args(["-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        wait_accepting(self.port, Duration::from_secs(30));
        // Accepting TCP is not yet accepting queries: wait for a real answer.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.psql("SELECT 1").is_ok_and(|o| o.trim() == "1") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("postgres on {} never answered", self.port);
    }

    /// Runs one statement with `psql`, its output unaligned and without headers.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let beside = self.bin.join("psql");
        let psql = if beside.is_file() {
            beside
        } else {
            PathBuf::from("psql")
        };
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "dsgw",
                "-d",
                "postgres",
            ])
            .args(["-At", "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Stops the server at once: an immediate shutdown (SIGQUIT: every connection cut, no
    /// checkpoint; the next start recovers as after a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn wait_accepting(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("postgres on {port} did not start accepting");
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A fast shutdown lets the children go too.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
