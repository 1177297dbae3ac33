//! The server's life: accept connections and hand them to the lanes, reload policies on
//! SIGHUP, and on SIGTERM or SIGINT stop accepting, let in-flight requests and streams finish,
//! and exit when they are done or when the drain deadline has passed, whichever is first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;

use super::AppState;
use super::edge::{self, EdgeLimits};
use super::lanes::Lanes;
use super::router::app;

/// Connections the kernel completes and holds for the acceptor. The standard library's and
/// mio's 128 overflowed in a burst past capacity: a SYN dropped when the queue is full is
/// retried by the client only after a second. Linux caps it at `net.core.somaxconn` (4096 by
/// default since 5.4) without an error.
const BACKLOG: u32 = 4096;

/// Binds the client listener, with room in the kernel's accept queue for a burst.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and mio do: a restarted gateway rebinds while its old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves until SIGTERM or SIGINT and the drain after it; returns the lanes still running, for
/// the caller to stop once the last records are committed (their connections may still be
/// writing settlements).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    drain: Duration,
    limits: EdgeLimits,
) -> std::io::Result<Lanes> {
    tokio::spawn(reload_on_sighup(state.clone()));
    let pipeline = state.pipeline.clone();
    let load = state.load.clone();
    let lanes = Lanes::start(app(state), limits, &load)?;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of descriptors, most likely: say so, and give the open
                        // connections a moment to finish instead of spinning.
                        tracing::error!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(permit) = edge::admit(&slots, &tcp) else {
                    tracing::warn!(limit = limits.max_connections, "connection refused: at the connection limit");
                    continue;
                };
                // Disable Nagle: SSE frames are small and must leave at once (a naive server
                // stalls 40 ms on delayed ACKs between streams on one keep-alive connection).
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                lanes.hand(tcp, permit, graceful.watcher());
            }
        }
    }
    drop(listener);
    tracing::info!(
        drain_secs = drain.as_secs(),
        "shutting down: draining in-flight requests"
    );
    pipeline.start_draining();
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(drain) => {
            tracing::warn!("drain deadline passed with requests still open; exiting");
        }
    }
    Ok(lanes)
}

/// SIGHUP re-reads the policy directory and the prices file and swaps each in whole; a policy
/// set or a prices file that fails to load or validate is refused and the one in force stays.
async fn reload_on_sighup(state: AppState) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    while hangups.recv().await.is_some() {
        match state.pipeline.reload_policy() {
            Ok(()) => tracing::info!("policies reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "policy reload refused; the previous policies stay")
            }
        }
        match state.pipeline.reload_prices() {
            Ok(true) => tracing::info!("prices reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "price reload refused; the previous prices stay")
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
