//! A certificate authority made for one test with the `openssl` command line: a CA, a server
//! certificate for `127.0.0.1` / `localhost` (or other names), and a client certificate, all in a temporary
//! folder removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug)]
pub struct TestCa {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        Self::with_names(name, "DNS:localhost,IP:127.0.0.1")
    }

    /// A CA whose server certificate names `names` (a `subjectAltName` value) instead.
    pub fn with_names(name: &str, names: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dsgw-ca-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=dsgw test CA",
            ],
        );
        // X.509 v3 certificates (what rustls accepts), with the usages each side checks; a
        // cluster node also presents the server certificate as a client on the cluster bus.
        std::fs::write(
            dir.join("server.ext"),
            format!("subjectAltName={names}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (who, subject, ext) in [
            ("server", "/CN=localhost", Some("server.ext")),
            ("client", "/CN=dsgw", Some("client.ext")),
        ] {
            openssl(
                &dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{who}.key"),
                    "-out",
                    &format!("{who}.csr"),
                    "-subj",
                    subject,
                ],
            );
            let mut sign = vec![
                "x509",
                "-req",
                "-in",
                &*format!("{who}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &*format!("{who}.crt"),
                "-days",
                "2",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
            if let Some(ext) = ext {
                sign.extend(["-extfile".to_owned(), ext.to_owned()]);
            }
            openssl(&dir, &sign.iter().map(String::as_str).collect::<Vec<_>>());
        }
        Self {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            dir,
        }
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
