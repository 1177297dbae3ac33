//! The lifecycle of requests and of the process: clients that leave mid-stream, and graceful
//! shutdown that lets streams finish within a bounded drain.

mod common;

use std::time::Duration;

use common::{setup, setup_with, sse_data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_stream_cancels_upstream_and_is_recorded() {
    let s = setup().await;
    let mut r = s.open_stream("__slow__").await;
    let mut seen = 0;
    while seen < 3 {
        let chunk = r.chunk().await.unwrap().expect("stream open");
        seen += sse_data(&String::from_utf8_lossy(&chunk)).len();
    }
    drop(r);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.fake.disconnects() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        s.fake.disconnects(),
        1,
        "the gateway kept the upstream stream open"
    );
    assert!(
        s.gw.wait_for_log("outcome=\"client_disconnected\"", Duration::from_secs(5)),
        "{}",
        s.gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_streams_finish_then_exits() {
    let mut s = setup().await;
    let mut r = s.open_stream("__drip__").await;
    let mut body = String::from_utf8(r.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    s.gw.terminate();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    while let Some(chunk) = r.chunk().await.unwrap() {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        body.ends_with("data: [DONE]\n\n"),
        "the stream was cut by shutdown"
    );
    assert!(s.gw.wait_exit(std::time::Duration::from_secs(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_bounds_shutdown() {
    let mut s = setup_with(|c| c.replace("drain_timeout_secs = 5", "drain_timeout_secs = 1")).await;
    let mut r = s.open_stream("__slow__").await;
    r.chunk().await.unwrap().unwrap();
    let started = std::time::Instant::now();
    s.gw.terminate();
    assert!(
        s.gw.wait_exit(std::time::Duration::from_secs(4)),
        "shutdown waited for a 10 s stream"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
}
