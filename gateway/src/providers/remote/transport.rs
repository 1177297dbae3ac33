//! The HTTP client a remote provider's calls go through: hyper's pooled client over TCP, TLS
//! (rustls with the platform's roots, HTTP/2 where the provider offers it) and the proxy the
//! environment names, with nothing else on the path. A general client's conveniences cost
//! every request here (reqwest's redirect layer parsed the URL and cloned the headers of each
//! call); a provider's API needs none of them: a redirect from it is an error, not a hop.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Uri};
use http_body_util::Full;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Pooled = Client<hyper_rustls::HttpsConnector<Connector>, Full<Bytes>>;

/// A provider's clients, one per lane, with the `Proxy-Authorization` their requests carry when
/// they go through a forwarding proxy (a tunnel carries it in its `CONNECT` instead).
///
/// Each lane has a pool of its own: a connection's task runs on the runtime that opened it, so a
/// connection shared between lanes would wake the other thread for every read and write.
#[derive(Clone, Debug)]
pub struct Transport {
    clients: Arc<[Pooled]>,
    pub proxy_authorization: Option<HeaderValue>,
}

/// How the connections are made, fixed per provider.
pub struct Options {
    pub connect_timeout: Duration,
    /// How long a pooled connection may stay idle.
    pub pool_idle: Duration,
    /// Idle connections kept at most, over all lanes.
    pub max_idle: usize,
}

/// Why no client could be built for a base URL.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the proxy {0} is not an http:// proxy (the only kind dsgw speaks)")]
    ProxyScheme(String),
    #[error("cannot load the platform's TLS roots: {0}")]
    Roots(rustls::Error),
}

impl Transport {
    /// The client for calls to `base` (every call of a provider goes to one host, so whether a
    /// proxy carries them is decided here, once, from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`
    /// and `NO_PROXY`).
    pub fn new(base: &Uri, options: &Options) -> Result<Self, TransportError> {
        Self::with_proxies(base, options, &Matcher::from_env())
    }

    fn with_proxies(
        base: &Uri,
        options: &Options,
        proxies: &Matcher,
    ) -> Result<Self, TransportError> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(options.connect_timeout));
        let (route, proxy_authorization) = route(base, proxies, &tcp)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(Connector { tcp, route });
        let lanes = crate::support::lane::count();
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(options.pool_idle)
            .pool_max_idle_per_host(options.max_idle.div_ceil(lanes))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let clients = (0..lanes)
            .map(|_| builder.build(connector.clone()))
            .collect();
        Ok(Self {
            clients,
            proxy_authorization: proxy_authorization.map(|mut v| {
                v.set_sensitive(true);
                v
            }),
        })
    }
}

impl Transport {
    /// The client of the lane this runs on.
    pub fn client(&self) -> &Pooled {
        let lane = crate::support::lane::current();
        &self.clients[lane.min(self.clients.len() - 1)]
    }
}

/// rustls with ring and the platform's roots, built once for every provider: each verifier
/// would load the system's certificate store again at its first handshake.
fn tls_config() -> Result<rustls::ClientConfig, TransportError> {
    static SHARED: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    if let Some(config) = SHARED.get() {
        return Ok(config.clone());
    }
    let config = rustls_platform_verifier::BuilderVerifierExt::with_platform_verifier(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(TransportError::Roots)?,
    )
    .map_err(TransportError::Roots)?
    .with_no_client_auth();
    Ok(SHARED.get_or_init(|| config).clone())
}

/// How calls to `base` are carried, and the `Proxy-Authorization` each request needs.
fn route(
    base: &Uri,
    proxies: &Matcher,
    tcp: &HttpConnector,
) -> Result<(Route, Option<HeaderValue>), TransportError> {
    let Some(proxy) = proxies.intercept(base) else {
        return Ok((Route::Direct, None));
    };
    if proxy.uri().scheme_str() != Some("http") {
        return Err(TransportError::ProxyScheme(redacted(proxy.uri())));
    }
    let auth = proxy.basic_auth().cloned();
    if base.scheme_str() == Some("https") {
        let mut tunnel = Tunnel::new(proxy.uri().clone(), tcp.clone());
        if let Some(auth) = auth {
            tunnel = tunnel.with_auth(auth);
        }
        return Ok((Route::Tunnel(tunnel), None));
    }
    Ok((Route::Forward(proxy.uri().clone()), auth))
}

/// A proxy's address for a message: without the credentials it may carry.
fn redacted(uri: &Uri) -> String {
    let host = uri.host().unwrap_or("?");
    match (uri.scheme_str(), uri.port_u16()) {
        (Some(scheme), Some(port)) => format!("{scheme}://{host}:{port}"),
        (Some(scheme), None) => format!("{scheme}://{host}"),
        _ => host.to_owned(),
    }
}

/// Connects straight to the provider, through a `CONNECT` tunnel, or to a forwarding proxy.
#[derive(Clone, Debug)]
pub struct Connector {
    tcp: HttpConnector,
    route: Route,
}

#[derive(Clone, Debug)]
enum Route {
    Direct,
    /// HTTPS through a proxy: TLS runs end to end inside the tunnel.
    Tunnel(Tunnel<HttpConnector>),
    /// Plain HTTP through a proxy: requests go to it in absolute form.
    Forward(Uri),
}

impl Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let stream = |io, forwarded| Stream { io, forwarded };
        match &mut self.route {
            Route::Direct => {
                let connecting = self.tcp.call(dst);
                Box::pin(async move { Ok(stream(connecting.await?, false)) })
            }
            Route::Tunnel(tunnel) => {
                let connecting = tunnel.call(dst);
                Box::pin(async move { Ok(stream(connecting.await?, false)) })
            }
            Route::Forward(proxy) => {
                let connecting = self.tcp.call(proxy.clone());
                Box::pin(async move { Ok(stream(connecting.await?, true)) })
            }
        }
    }
}

/// A connection, marked as one to a forwarding proxy where it is (hyper then writes the
/// request's target in absolute form).
#[derive(Debug)]
pub struct Stream {
    io: TokioIo<TcpStream>,
    forwarded: bool,
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.forwarded)
    }
}

impl Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// What failed in a call, for the status the client sees.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// This process could not open a socket (EMFILE, ENFILE): its saturation.
    OutOfDescriptors,
    /// The connection (or the proxy's tunnel) was not made in time.
    ConnectTimeout,
    Connect,
    Other,
}

/// Classifies a client error by its causes.
pub fn failure(error: &hyper_util::client::legacy::Error) -> Failure {
    if out_of_descriptors(error) {
        return Failure::OutOfDescriptors;
    }
    if !error.is_connect() {
        return Failure::Other;
    }
    if io_causes(error).any(|io| io.kind() == std::io::ErrorKind::TimedOut) {
        return Failure::ConnectTimeout;
    }
    Failure::Connect
}

/// Whether `error` comes from this process running out of file descriptors (EMFILE, ENFILE).
fn out_of_descriptors(error: &(dyn std::error::Error + 'static)) -> bool {
    io_causes(error).any(|io| matches!(io.raw_os_error(), Some(23 | 24)))
}

/// The I/O errors among `error` and its sources.
fn io_causes<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e std::io::Error> {
    std::iter::successors(Some(error), |e| e.source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            connect_timeout: Duration::from_millis(200),
            pool_idle: Duration::from_secs(90),
            max_idle: 4,
        }
    }

    #[test]
    fn running_out_of_descriptors_is_told_apart_from_a_refused_connection() {
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connect failed")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert!(out_of_descriptors(&Wrapped(
            std::io::Error::from_raw_os_error(24)
        )));
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(23)));
        assert!(!out_of_descriptors(&Wrapped(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
    }

    #[test]
    fn proxies_are_chosen_once_per_provider_and_only_http_ones_are_spoken() {
        let proxies = Matcher::builder()
            .http("http://user:pass@proxy.internal:3128")
            .https("http://user:pass@proxy.internal:3128")
            .no("vllm.internal")
            .build();
        let tcp = HttpConnector::new();
        let carried = |uri: &str| route(&uri.parse().unwrap(), &proxies, &tcp).unwrap();

        // HTTPS goes through a CONNECT tunnel, which carries the credentials: the requests
        // inside it must not.
        let (tunnel, auth) = carried("https://api.deepseek.com/chat/completions");
        assert!(matches!(tunnel, Route::Tunnel(_)), "{tunnel:?}");
        assert!(auth.is_none());

        let (forward, auth) = carried("http://models.example/v1/chat/completions");
        assert!(
            matches!(&forward, Route::Forward(p) if p.host() == Some("proxy.internal")),
            "{forward:?}"
        );
        assert_eq!(auth.unwrap(), "Basic dXNlcjpwYXNz");

        let (direct, auth) = carried("http://vllm.internal:8000/v1/chat/completions");
        assert!(matches!(direct, Route::Direct));
        assert!(auth.is_none());

        let socks = Matcher::builder()
            .all("socks5://user:secret@proxy.internal:1080")
            .build();
        let https: Uri = "https://api.deepseek.com/v1".parse().unwrap();
        let error = route(&https, &socks, &tcp).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the proxy socks5://proxy.internal:1080 is not an http:// proxy (the only kind dsgw speaks)"
        );
    }

    #[test]
    fn proxy_credentials_of_forwarded_requests_are_marked_sensitive() {
        crate::providers::remote::install_tls();
        let proxies = Matcher::builder()
            .http("http://user:pass@proxy.internal:3128")
            .build();
        let plain: Uri = "http://models.example/v1".parse().unwrap();
        let transport = Transport::with_proxies(&plain, &options(), &proxies).unwrap();
        assert!(transport.proxy_authorization.unwrap().is_sensitive());
    }
}
