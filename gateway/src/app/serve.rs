//! The server's life: accept connections, reload policies on SIGHUP, and on SIGTERM or SIGINT
//! stop accepting, let in-flight requests and streams finish, and exit when they are done or
//! when the drain deadline has passed, whichever is first.

use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use super::AppState;
use super::router::app;

pub async fn serve(listener: TcpListener, state: AppState, drain: Duration) -> std::io::Result<()> {
    // Disable Nagle: SSE frames are small and must leave at once (a naive server stalls 40 ms on
    // delayed ACKs between streams on one keep-alive connection).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(reload_on_sighup(state.clone()));
    let pipeline = state.pipeline.clone();
    let app = axum::ServiceExt::into_make_service(app(state));
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!(
            drain_secs = drain.as_secs(),
            "shutting down: draining in-flight requests"
        );
        pipeline.start_draining();
        let _ = signalled_tx.send(true);
    });
    let deadline = async move {
        let _ = signalled_rx.wait_for(|s| *s).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("drain deadline passed with requests still open; exiting");
            Ok(())
        }
    }
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
