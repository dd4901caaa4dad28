//! Uploads that must leave nothing behind: too large, or cut off by the client.

use std::path::Path;
use std::time::Duration;

use jetscribe_tests::{TestApp, assert_refused, files_under, fixture, wait_for};
use tokio::io::AsyncWriteExt;

async fn job_count(app: &TestApp) -> usize {
    use futures::StreamExt;
    let pipeline = app.pipeline().await;
    pipeline.scan_jobs().await.expect("jobs").count().await
}

/// Waits until no file is left under `blobs`, then checks that no job was created.
async fn assert_nothing_left(app: &TestApp, blobs: &Path) {
    wait_for(
        "the partial upload to be removed",
        Duration::from_secs(10),
        || {
            let left = files_under(blobs);
            async move { left.is_empty().then_some(()) }
        },
    )
    .await;
    assert_eq!(job_count(app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_upload_gets_413_and_leaves_no_blob_and_no_job() {
    let app = TestApp::spawn(&[("MAX_FILE_SIZE", "256K")]).await;
    let blobs = app.data_dir.path().join("blobs");
    // jfk.flac is 1.1 MB: four times the limit.
    let response = app.submit(&fixture("jfk.flac"), "").await;
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.expect("json");
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("MAX_FILE_SIZE") && detail.contains("file"),
        "{detail}"
    );
    assert_nothing_left(&app, &blobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_midway_leaves_no_blob_and_no_job() {
    let app = TestApp::spawn(&[]).await;
    let blobs = app.data_dir.path().join("blobs");
    let address = app.base_url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let boundary = "jetscribe-test-boundary";
    let part_header = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"long.wav\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    // Announce 50 MB, send 2 MB of it, then vanish.
    let request = format!(
        "POST /process HTTP/1.1\r\nHost: {address}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n{part_header}",
        50 * 1024 * 1024
    );
    socket.write_all(request.as_bytes()).await.expect("headers");
    socket
        .write_all(&vec![7u8; 2 * 1024 * 1024])
        .await
        .expect("part of the body");
    socket.flush().await.expect("flush");
    wait_for(
        "the upload to reach the store",
        Duration::from_secs(10),
        || {
            let staged = files_under(&blobs);
            async move { (!staged.is_empty()).then_some(()) }
        },
    )
    .await;
    drop(socket);
    assert_nothing_left(&app, &blobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_submissions_get_a_json_answer_naming_the_field_and_leave_nothing()
{
    let app = TestApp::spawn(&[]).await;
    let blobs = app.data_dir.path().join("blobs");
    let empty = app.data_dir.path().join("empty.wav");
    std::fs::write(&empty, b"").expect("written");
    let jfk = fixture("jfk.flac");
    let big = "x".repeat(100 * 1024);
    let long_url = format!("https://example.org/{}", "a".repeat(3000));
    type Fields<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&Path, Fields, u16, &str)> = vec![
        (&empty, vec![], 422, "file: the file is empty"),
        (
            &jfk,
            vec![("language", big.as_str())],
            422,
            "language: a form field longer",
        ),
        (
            &jfk,
            vec![("comment", big.as_str())],
            422,
            "comment: a form field longer",
        ),
        (
            &jfk,
            vec![("webhook_url", long_url.as_str())],
            422,
            "webhook_url: longer than",
        ),
        (
            &jfk,
            vec![("language", "xx")],
            422,
            "language: expected one of Whisper's",
        ),
    ];
    for (file, fields, status, detail) in cases {
        let response = app.post_file("/process", file, &fields).await;
        let body = assert_refused(response, status, detail).await;
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(detail)),
            "{body}"
        );
    }
    // A file name no file system here would take.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"RIFF".to_vec()).file_name("n".repeat(300)),
    );
    let response = app.post_form("/process", form).await;
    assert_refused(response, 422, "file: the file name is longer").await;
    // Not UTF-8, as a form field.
    let form = reqwest::multipart::Form::new()
        .part(
            "language",
            reqwest::multipart::Part::bytes(vec![0xff, 0xfe]),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("a.wav"),
        );
    let response = app.post_form("/process", form).await;
    assert_refused(response, 422, "language: not UTF-8 text").await;
    // Not multipart at all: 400 JSON, not 415 text.
    let response = app
        .http
        .post(app.url("/process"))
        .json(&serde_json::json!({"file": "jfk.flac"}))
        .send()
        .await
        .expect("POST");
    assert_refused(response, 400, "multipart/form-data").await;
    assert_nothing_left(&app, &blobs).await;
}
