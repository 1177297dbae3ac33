//! `[server]`: the listener and the edge's bounds (timeouts, caps, load shedding, browsers).

use std::net::SocketAddr;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get a 413.
    pub max_body_bytes: usize,
    /// How long in-flight requests and streams may run after SIGTERM/SIGINT before the process exits.
    pub drain_timeout_secs: u64,
    /// Record spend in the ledger and metrics. Only benchmarks turn this off, to measure its cost;
    /// budgets cannot hold without it.
    pub accounting: bool,
    /// Browser origins (`https://chat.example.com`) allowed to call the API: they get CORS
    /// answers (preflights included). Without keys, a request from any other origin is refused.
    pub cors_origins: Vec<String>,
    /// A request's head must arrive whole within this, from its first byte (or from the
    /// connection's opening): slow-header clients are cut.
    pub header_timeout_ms: u64,
    /// A request body must keep arriving: the longest wait for its next bytes.
    pub body_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this.
    pub keepalive_idle_ms: u64,
    /// Requests in flight at once (streams until they end); one beyond is answered 503 with
    /// `Retry-After` at once.
    pub max_in_flight: usize,
    /// New requests are shed (503) once work has waited longer than this to run for 100 ms
    /// on end: the queueing a request would meet at each of its turns on its lane. 0 turns it
    /// off (`max_in_flight` still holds).
    pub queue_budget_ms: u64,
    /// Client connections held at once; one beyond is answered 503 and closed at once.
    /// Default: from the open-files limit (each client connection may need an upstream one).
    pub max_connections: Option<usize>,
    /// Threads serving connections (lanes), each with its own runtime and upstream connection
    /// pools. Default: one per CPU the process may run on.
    pub workers: Option<usize>,
}

impl ServerConfig {
    /// The edge's timeouts and caps are positive; each CORS origin is exactly what browsers
    /// send in `Origin`: a scheme, a host, a port.
    pub fn validate(&self) -> Result<(), String> {
        let s = self;
        if s.header_timeout_ms == 0
            || s.body_timeout_ms == 0
            || s.keepalive_idle_ms == 0
            || s.max_connections == Some(0)
            || s.max_in_flight == 0
            || s.workers == Some(0)
        {
            return Err("[server]: `header_timeout_ms`, `body_timeout_ms`, `keepalive_idle_ms`, `max_in_flight`, `max_connections` and `workers` must be greater than 0".into());
        }
        for (i, origin) in self.cors_origins.iter().enumerate() {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let ok = rest.is_some_and(|r| {
                !r.is_empty()
                    && !r.contains(['/', '?', '#', '*', ' '])
                    && r == r.to_ascii_lowercase()
            }) && http::HeaderValue::from_str(origin).is_ok();
            if !ok {
                return Err(format!(
                    "[server] cors_origins[{i}] = {origin:?}: an origin is \"https://host[:port]\" (lowercase, no path, no wildcard)"
                ));
            }
        }
        Ok(())
    }

    /// The lanes to run: the configured number, or one per CPU this process may use (its
    /// affinity mask and cgroup quota counted).
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// The connection cap in force: the configured one, or half the open-files limit (after
    /// `dsgw serve` raised it) less a reserve for listeners, logs and Redis.
    pub fn connection_cap(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
            (soft.saturating_sub(64) / 2).clamp(16, 1 << 20) as usize
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 8 * 1024 * 1024,
            drain_timeout_secs: 30,
            accounting: true,
            cors_origins: Vec::new(),
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            keepalive_idle_ms: 60_000,
            max_in_flight: 4096,
            queue_budget_ms: 50,
            max_connections: None,
            workers: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(text: &str) -> Result<ServerConfig, String> {
        let s: ServerConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate().map(|()| s)
    }

    #[test]
    fn origins_are_exact_and_bounds_positive() {
        let ok = server("cors_origins = [\"https://chat.example.com\", \"http://localhost:3000\"]")
            .unwrap();
        assert_eq!(ok.header_timeout_ms, 10_000);
        assert_eq!(ok.max_in_flight, 4096);
        assert_eq!(ok.queue_budget_ms, 50);
        assert_eq!(server("queue_budget_ms = 0").unwrap().queue_budget_ms, 0);
        assert_eq!(server("max_connections = 7").unwrap().connection_cap(), 7);
        assert_eq!(server("workers = 3").unwrap().workers(), 3);
        assert!(server("").unwrap().workers() >= 1);
        for (text, why) in [
            ("cors_origins = [\"https://a.example/path\"]", "no path"),
            ("cors_origins = [\"*\"]", "no wildcard"),
            ("cors_origins = [\"https://A.example\"]", "lowercase"),
            ("cors_origins = [\"ftp://a.example\"]", "https://host"),
            ("header_timeout_ms = 0", "greater than 0"),
            ("max_in_flight = 0", "greater than 0"),
            ("workers = 0", "`workers`"),
        ] {
            let e = server(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
