//! The edge, before any key is checked: each connection is bounded in time and their number
//! is capped. A request head must arrive whole within `header_timeout` of its first byte (or of
//! the connection's opening); an idle keep-alive connection closes after `keepalive_idle`
//! (hyper's header-read timer, which runs while a connection waits for its next head); a
//! connection beyond `max_connections` gets a 503 and is closed at once. A request body must
//! keep arriving (`body_timeout`, a layer in the router); a healthy long stream is never cut
//! here (the provider's idle timeout bounds those).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Service, ServiceExt};

use crate::support::config::ServerConfig;

/// The edge's bounds, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub header_timeout: Duration,
    pub keepalive_idle: Duration,
    pub max_connections: usize,
}

impl EdgeLimits {
    pub fn from_config(server: &ServerConfig) -> Self {
        Self {
            header_timeout: Duration::from_millis(server.header_timeout_ms),
            keepalive_idle: Duration::from_millis(server.keepalive_idle_ms),
            max_connections: server.connection_cap(),
        }
    }
}

/// One connection's state, shared by its socket, its requests and its watchdog.
#[derive(Debug)]
struct Watch {
    opened: Instant,
    /// Milliseconds after `opened` (plus one) when the head being awaited began; 0: none is
    /// (a request is being served, or the connection is idle between requests).
    head_since: AtomicU64,
    /// Requests whose response has not ended.
    in_service: AtomicU64,
}

impl Watch {
    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64 + 1
    }

    /// Bytes arrived: with no request in service they are the next head's, and its clock runs.
    fn bytes_arrived(&self) {
        if self.in_service.load(Ordering::Relaxed) == 0 {
            let _ = self.head_since.compare_exchange(
                0,
                self.now_ms(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn head_overdue(&self, limit: Duration) -> bool {
        let since = self.head_since.load(Ordering::Relaxed);
        since != 0 && self.now_ms().saturating_sub(since) > limit.as_millis() as u64
    }
}

/// The socket, telling its watch when bytes arrive, and answering hyper's own rejections in
/// the error envelope.
struct WatchedIo {
    inner: TcpStream,
    watch: Arc<Watch>,
    /// Set once hyper rejected a head: our answer in its place, and how much of it is sent.
    rejection: Option<(Vec<u8>, usize)>,
}

impl WatchedIo {
    /// hyper answers a head it cannot parse itself (400, 431, 414: `Conn::on_parse_error`),
    /// with an empty body and no hook to change it. That answer, told apart by its exact shape
    /// with no request in service, is replaced here before it leaves by the same status in the
    /// envelope every other error has; hyper closes the connection after it.
    fn intercept(&mut self, written: &[u8]) {
        if self.rejection.is_none()
            && self.watch.in_service.load(Ordering::Relaxed) == 0
            && let Some(status) = rejected_status(written)
        {
            tracing::debug!(
                status = status.as_u16(),
                "request head rejected by the parser"
            );
            self.rejection = Some((rejection(status), 0));
        }
    }

    /// Sends what is left of the replacement answer; `Ready` once all of it is out.
    fn poll_rejection(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some((answer, sent)) = &mut self.rejection else {
            return Poll::Ready(Ok(()));
        };
        while *sent < answer.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &answer[*sent..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The status of `bytes` when they are exactly the answer hyper makes itself to a head it
/// cannot parse: a 4xx head with no header but `connection: close`, `content-length: 0` and
/// `date`, and nothing after it. Every answer of the service has a content type and a request
/// id, so none is taken for one (a small one is written after its body is done, when no
/// request is in service any more).
fn rejected_status(bytes: &[u8]) -> Option<http::StatusCode> {
    // Cheap tests first: every small answer of the service passes through here too.
    if bytes.len() > 256 || !bytes.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let head = std::str::from_utf8(bytes).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?.strip_prefix("HTTP/1.1 ")?;
    let status = http::StatusCode::from_bytes(status_line.get(..3)?.as_bytes()).ok()?;
    let own = |line: &str| {
        line == "connection: close" || line == "content-length: 0" || line.starts_with("date: ")
    };
    (status.is_client_error() && lines.all(own)).then_some(status)
}

/// A whole HTTP/1.1 response: `status` in DeepSeek's envelope, closing the connection.
fn rejection(status: http::StatusCode) -> Vec<u8> {
    let message = match status {
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "The request head is too large (more than 100 headers, or more than the gateway's \
             buffer holds)."
        }
        http::StatusCode::URI_TOO_LONG => "The request URI is too long (64 KiB at most).",
        _ => {
            "The request is not valid HTTP/1.1 (a malformed request line, header name or header \
             value)."
        }
    };
    let mut error = crate::wire::error::ApiError::bad_request(message);
    error.status = status;
    let body = error.envelope_json();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.intercept(buf);
        if self.rejection.is_some() {
            // hyper's own bytes are dropped: ours went in their place.
            return self.poll_rejection(cx).map_ok(|()| buf.len());
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_rejection(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_rejection(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut written = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(head), None) = (written.next(), written.next()) {
            self.intercept(head);
        }
        if self.rejection.is_some() {
            let len = bufs.iter().map(|b| b.len()).sum();
            return self.poll_rejection(cx).map_ok(|()| len);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that holds `guard` until it is done (or dropped): a request's slot, or its
/// connection's count of requests in service.
pub struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G> Guarded<G> {
    pub fn new(inner: Body, guard: G) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}

impl<G: Unpin + Send + 'static> HttpBody for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One request in service on a connection, until its response is done.
struct InService(Arc<Watch>);

impl Drop for InService {
    fn drop(&mut self) {
        self.0.in_service.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection beyond the cap is told before it is closed: a 503 in DeepSeek's envelope.
fn over_capacity() -> &'static [u8] {
    static RESPONSE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    RESPONSE.get_or_init(|| {
        let body = crate::wire::error::ApiError::unavailable(
            "The gateway is at its connection limit; retry shortly.",
        )
        .envelope_json();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
}

/// Takes a slot for a new connection, or answers it 503 and closes it.
pub fn admit(slots: &Arc<Semaphore>, tcp: &TcpStream) -> Option<OwnedSemaphorePermit> {
    match slots.clone().try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) => {
            // Best effort and never blocking: the socket is closed right after.
            let _ = tcp.try_write(over_capacity());
            None
        }
    }
}

/// What serves a connection's requests: the application, cloned into each connection.
pub trait App:
    Service<
        Request<Body>,
        Response = Response<Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> App for S where
    S: Service<
            Request<Body>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Serves one connection with `app` until it ends, its head is overdue, or `graceful` shuts
/// it down.
pub async fn serve_connection(
    tcp: TcpStream,
    app: impl App,
    limits: EdgeLimits,
    graceful: Watcher,
    permit: OwnedSemaphorePermit,
) {
    let watch = Arc::new(Watch {
        opened: Instant::now(),
        // A new connection is awaiting its first head from now.
        head_since: AtomicU64::new(1),
        in_service: AtomicU64::new(0),
    });
    let in_request = watch.clone();
    let service = app.map_request(move |request: Request<Incoming>| {
        in_request.in_service.fetch_add(1, Ordering::Relaxed);
        in_request.head_since.store(0, Ordering::Relaxed);
        request.map(Body::new)
    });
    let on_response = watch.clone();
    let service = service.map_response(move |response: Response<Body>| {
        // Handed to hyper as it is: boxed again into a `Body`, every frame would go through
        // one more dynamic call.
        let guard = InService(on_response.clone());
        response.map(|inner| Guarded::new(inner, guard))
    });
    let io = TokioIo::new(WatchedIo {
        inner: tcp,
        watch: watch.clone(),
        rejection: None,
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.keepalive_idle)
        .keep_alive(true);
    let connection = graceful.watch(http.serve_connection(io, TowerToHyperService::new(service)));
    tokio::pin!(connection);
    let mut tick = tokio::time::interval(limits.header_timeout.min(Duration::from_secs(1)) / 2);
    loop {
        tokio::select! {
            _ = &mut connection => break,
            _ = tick.tick() => {
                if watch.head_overdue(limits.header_timeout) {
                    tracing::debug!("request head not received in time; closing the connection");
                    break;
                }
            }
        }
    }
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_client_error_heads_are_taken_for_rejections() {
        // As hyper 1 writes them (captured from a hyper server).
        let own = |status: &str| {
            format!(
                "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 16:36:40 GMT\r\n\r\n"
            )
        };
        assert_eq!(
            rejected_status(own("431 Request Header Fields Too Large").as_bytes()),
            Some(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        assert_eq!(
            rejected_status(own("400 Bad Request").as_bytes()),
            Some(http::StatusCode::BAD_REQUEST)
        );
        assert_eq!(rejected_status(own("200 OK").as_bytes()), None);
        assert_eq!(
            rejected_status(own("503 Service Unavailable").as_bytes()),
            None
        );
        // The service's own 4xx answers carry more than hyper's three headers.
        let ours = "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(rejected_status(ours.as_bytes()), None);
        // A head followed by anything is not hyper's empty answer.
        assert_eq!(
            rejected_status(format!("{}x", own("400 Bad Request")).as_bytes()),
            None
        );
        assert_eq!(rejected_status(b"data: {\"id\":1}\n\n"), None);
        assert_eq!(rejected_status(b"HTTP/1.1 4"), None);
        for status in [400, 414, 431] {
            let status = http::StatusCode::from_u16(status).unwrap();
            let text = String::from_utf8(rejection(status)).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {}", status.as_str())),
                "{head}"
            );
            assert!(head.contains(&format!("content-length: {}", body.len())));
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["error"]["type"], "invalid_request_error");
        }
    }

    #[test]
    fn the_over_capacity_answer_is_a_whole_http_response() {
        let text = String::from_utf8(over_capacity().to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
