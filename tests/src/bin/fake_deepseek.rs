//! Runs the fake DeepSeek upstream as a process, for the Python SDK tests and benchmarks.
//! Prints `fake-deepseek: listening on http://ADDR` once ready.

use clap::Parser;

/// A faithful fake of DeepSeek's chat API (see tests/src/fake.rs for its switches).
#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Bearer key the fake requires from its callers.
    #[arg(long, env = "FAKE_DEEPSEEK_KEY")]
    key: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .expect("bind");
    let fake = dsgw_tests::fake::FakeUpstream::serve(listener, args.key.as_deref());
    eprintln!("fake-deepseek: listening on {}", fake.base_url());
    std::future::pending::<()>().await;
}
