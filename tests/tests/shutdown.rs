//! Graceful drain: on SIGTERM the API stops accepting connections and finishes the uploads in
//! flight within SHUTDOWN_GRACE, then exits. (That a stage finishes the tries that end within
//! the grace and hands back the others is in `stage_loop.rs`.)

use std::time::Duration;

use jetscribe_tests::{TestApp, wait_for};

/// Whether a new connection to the API's address is accepted.
async fn accepts_connections(app: &TestApp) -> bool {
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_told_to_stop_finishes_the_upload_in_flight_and_takes_no_new_connection() {
    let mut app = TestApp::spawn_parts(&["api"], &[("SHUTDOWN_GRACE", "60")]).await;
    let (body, chunks) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    // More than one 8 MiB part: the first part reaches the store while the upload goes on.
    body.unbounded_send(Ok(vec![0u8; 12 << 20]))
        .expect("queued");
    let request = app.post_streamed_file(chunks).send();
    let response = tokio::spawn(request);
    let jobs = app.data_dir.path().join("blobs/jobs");
    wait_for(
        "the upload to reach the store",
        Duration::from_secs(60),
        || {
            let started =
                std::fs::read_dir(&jobs).is_ok_and(|mut entries| entries.next().is_some());
            async move { started.then_some(()) }
        },
    )
    .await;

    app.send_sigterm("api");
    wait_for(
        "the API to stop accepting connections",
        Duration::from_secs(30),
        || {
            let app = &app;
            async move { (!accepts_connections(app).await).then_some(()) }
        },
    )
    .await;
    body.unbounded_send(Ok(vec![0u8; 1 << 20])).expect("queued");
    drop(body);

    let response = response.await.expect("joined").expect("answered");
    assert_eq!(response.status(), 202, "the upload in flight is finished");
    let accepted: serde_json::Value = response.json().await.expect("json");
    assert_eq!(accepted["size_bytes"], (13 << 20) as u64, "{accepted}");
    let exit = app
        .wait_for_exit("api", Duration::from_secs(60))
        .expect("the API exits once its requests are done");
    assert!(exit.success(), "{exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_told_to_stop_stops_even_when_the_nats_server_is_gone() {
    let mut app = TestApp::spawn_parts(&["api", "decoder", "notifier"], &[]).await;
    app.stop_nats();
    for part in ["decoder", "notifier", "api"] {
        app.send_sigterm(part);
    }
    // SHUTDOWN_GRACE (20 s) bounds the stage loops, 5 s the last flush to the server.
    for part in ["decoder", "notifier", "api"] {
        let status = app.wait_for_exit(part, Duration::from_secs(40));
        assert!(status.is_some(), "{part} still runs after SIGTERM");
    }
}
