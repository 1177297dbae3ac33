//! Runs the fake DeepSeek upstream as a process, for the Python SDK tests and benchmarks.
//! Prints `fake-deepseek: listening on http://ADDR` once ready.
//!
//! With `--proxy-to URL` it is instead a bare pass-through HTTP proxy (hyper server + hyper
//! client, no parsing): the benchmark's floor for what any extra HTTP hop costs on this machine.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A faithful fake of DeepSeek's chat API (see tests/src/fake.rs for its switches).
#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Bearer key the fake requires from its callers.
    #[arg(long, env = "FAKE_DEEPSEEK_KEY")]
    key: Option<String>,
    /// Be a bare pass-through proxy to this base URL instead of the fake.
    #[arg(long)]
    proxy_to: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .expect("bind");
    match args.proxy_to {
        None => {
            let fake = dsgw_tests::fake::FakeUpstream::serve(listener, args.key.as_deref());
            eprintln!("fake-deepseek: listening on {}", fake.base_url());
        }
        Some(base) => {
            eprintln!(
                "fake-deepseek: listening on http://{}",
                listener.local_addr().unwrap()
            );
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let client: Client<HttpConnector, Body> =
                Client::builder(TokioExecutor::new()).build(connector);
            let app = axum::Router::new()
                .fallback(proxy)
                .with_state((client, base));
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
    }
    std::future::pending::<()>().await;
}

async fn proxy(
    State((client, base)): State<(Client<HttpConnector, Body>, String)>,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("{base}{path}").parse().expect("valid upstream URI");
    parts.headers.remove(http::header::HOST);
    match client.request(http::Request::from_parts(parts, body)).await {
        Ok(response) => response.map(Body::new).into_response(),
        Err(_) => http::StatusCode::BAD_GATEWAY.into_response(),
    }
}
