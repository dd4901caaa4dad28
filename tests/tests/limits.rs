//! What one client may take of the API, tried as an attacker would: bodies that never end where
//! the API buffers, slow connections, too many uploads or event streams at once, submissions
//! past the rate limit, a disk short of space. Each gets a clear answer (or a closed
//! connection) while the API stays small and keeps serving others.

use std::time::Duration;

use futures::StreamExt;
use jetscribe_tests::{TestApp, assert_refused, files_under, fixture, peak_rss_bytes, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUNDARY: &str = "jetscribe-attack";
const MIB: u64 = 1024 * 1024;

fn address(app: &TestApp) -> String {
    app.base_url.trim_start_matches("http://").to_owned()
}

/// The head of a multipart POST to /process announcing a body of `length` bytes.
fn upload_head(address: &str, length: u64) -> String {
    format!(
        "POST /process HTTP/1.1\r\nHost: {address}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// What happened to a body that never ends.
struct EndlessBody {
    /// Bytes written before the API stopped reading (or `limit`).
    sent: u64,
    /// What the API answered (empty: it closed without an answer).
    answer: String,
}

/// Writes `head`, then `filler` again and again up to `limit` bytes, while reading the answer.
async fn send_endless(address: &str, head: &str, filler: &[u8], limit: u64) -> EndlessBody {
    let socket = TcpStream::connect(address).await.expect("connect");
    let (mut reader, mut writer) = socket.into_split();
    let answer = tokio::spawn(async move {
        let mut answer = Vec::new();
        let read = reader.read_to_end(&mut answer);
        let _ = tokio::time::timeout(Duration::from_secs(60), read).await;
        String::from_utf8_lossy(&answer).into_owned()
    });
    let mut sent = 0u64;
    let write = async {
        writer.write_all(head.as_bytes()).await?;
        while sent < limit {
            writer.write_all(filler).await?;
            sent += filler.len() as u64;
        }
        writer.shutdown().await
    };
    // The API stops reading: writing fails (reset) or blocks; either ends the attack.
    let _ = tokio::time::timeout(Duration::from_secs(30), write).await;
    drop(writer);
    let answer = answer.await.expect("reader");
    EndlessBody { sent, answer }
}

fn api_pid(app: &TestApp) -> u32 {
    app.pid_of("api").expect("the api process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_header_that_never_ends_is_refused_and_the_api_stays_small() {
    let app = TestApp::spawn_parts(&["api"], &[]).await;
    let before = peak_rss_bytes(api_pid(&app)).expect("VmHWM");
    let head = upload_head(&address(&app), 10 << 30);
    let head = format!("{head}--{BOUNDARY}\r\nX-Endless: ");
    let attack = send_endless(&address(&app), &head, &[b'x'; 64 * 1024], 512 * MIB).await;
    assert!(
        attack.answer.is_empty() || attack.answer.starts_with("HTTP/1.1 431"),
        "{}",
        attack.answer
    );
    assert!(attack.answer.is_empty() || attack.answer.contains("8192 bytes"));
    assert!(
        attack.sent < 512 * MIB,
        "the API read {} bytes",
        attack.sent
    );
    let grown = peak_rss_bytes(api_pid(&app)).expect("VmHWM") - before;
    eprintln!(
        "endless part header: {} KiB sent, API peak +{} KiB",
        attack.sent >> 10,
        grown >> 10
    );
    assert!(grown < 64 * MIB, "the API grew by {} MiB", grown / MIB);
    let (status, _) = app.get_json("/health").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_option_field_that_never_ends_is_refused_and_the_api_stays_small() {
    let app = TestApp::spawn_parts(&["api"], &[]).await;
    let before = peak_rss_bytes(api_pid(&app)).expect("VmHWM");
    let head = upload_head(&address(&app), 10 << 30);
    let head =
        format!("{head}--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\n");
    let attack = send_endless(&address(&app), &head, &[b'x'; 64 * 1024], 1024 * MIB).await;
    assert!(
        attack.answer.starts_with("HTTP/1.1 422") && attack.answer.contains("language: "),
        "{}",
        attack.answer
    );
    assert!(
        attack.sent < 1024 * MIB,
        "the API read {} bytes",
        attack.sent
    );
    let grown = peak_rss_bytes(api_pid(&app)).expect("VmHWM") - before;
    let (sent, peak) = (attack.sent >> 10, grown >> 10);
    eprintln!("endless option field: {sent} KiB sent, API peak +{peak} KiB");
    assert!(grown < 64 * MIB, "the API grew by {} MiB", grown / MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_connections_do_not_keep_a_client_from_being_served() {
    let app = TestApp::spawn_parts(&["api"], &[("HEADER_READ_TIMEOUT", "5")]).await;
    let before = peak_rss_bytes(api_pid(&app)).expect("VmHWM");
    let mut slow = Vec::new();
    for _ in 0..1000 {
        let mut socket = TcpStream::connect(address(&app)).await.expect("connect");
        // A head that never ends (slowloris).
        let head = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        socket
            .write_all(head.as_bytes())
            .await
            .expect("part of a head");
        slow.push(socket);
    }
    let (status, body) = app.get_json("/health").await;
    assert_eq!(status, 200, "{body}");
    // Each slow connection is cut off once HEADER_READ_TIMEOUT has passed.
    let cut_off = slow.into_iter().map(|mut socket| async move {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(60), socket.read(&mut byte)).await;
        matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    });
    let cut_off = futures::future::join_all(cut_off).await;
    assert!(
        cut_off.iter().all(|closed| *closed),
        "a slow connection stayed open"
    );
    let grown = peak_rss_bytes(api_pid(&app)).expect("VmHWM") - before;
    eprintln!("1000 slow connections: API peak +{} KiB", grown >> 10);
    assert!(grown < 128 * MIB, "the API grew by {} MiB", grown / MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_trickling_its_next_head_is_cut_off_and_a_silent_event_stream_is_not() {
    let app = TestApp::spawn_parts(&["api"], &[("HEADER_READ_TIMEOUT", "1")]).await;
    let job_id = app.submit_job(&fixture("jfk.flac"), "").await;
    // Without stages the job stays pending: its event stream stays open, the client silent.
    let events = app.http.get(app.url(&format!("/events/{job_id}"))).send();
    let mut events = events.await.expect("GET /events").bytes_stream();
    // One whole request, its answer, then the next head a byte at a time.
    let mut socket = TcpStream::connect(address(&app)).await.expect("connect");
    let request = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    socket.write_all(request.as_bytes()).await.expect("request");
    let mut answer = [0u8; 12];
    socket.read_exact(&mut answer).await.expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
    socket
        .write_all(b"GET /health HTTP/1.1\r\nX-Slow: ")
        .await
        .expect("part of a head");
    let cut_off = async {
        let mut rest = Vec::new();
        loop {
            socket.write_all(b"x").await?;
            // Ends (Ok) once the server closes the connection.
            if let Ok(read) =
                tokio::time::timeout(Duration::from_millis(200), socket.read_to_end(&mut rest))
                    .await
            {
                return read.map(drop);
            }
        }
    };
    let cut_off = tokio::time::timeout(Duration::from_secs(30), cut_off).await;
    assert!(cut_off.is_ok(), "the trickling connection stayed open");
    // The event stream, silent for longer than HEADER_READ_TIMEOUT, is still open.
    let next = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
    assert!(!matches!(next, Ok(None)), "the event stream was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_concurrent_uploads_a_submission_gets_503_with_retry_after() {
    let settings = [("MAX_CONCURRENT_UPLOADS", "1"), ("RATE_LIMIT", "off")];
    let app = TestApp::spawn_parts(&["api"], &settings).await;
    let blobs = app.data_dir.path().join("blobs");
    // One upload that takes its time: 1 MiB of an announced 50.
    let mut stalled = TcpStream::connect(address(&app)).await.expect("connect");
    let head = upload_head(&address(&app), 50 * MIB);
    let part = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.wav\"\r\n\r\n"
    );
    stalled
        .write_all(format!("{head}{part}").as_bytes())
        .await
        .expect("head");
    stalled
        .write_all(&vec![7u8; MIB as usize])
        .await
        .expect("some data");
    wait_for(
        "the slow upload to be stored",
        Duration::from_secs(30),
        || {
            let stored = files_under(&blobs).len();
            async move { (stored > 0).then_some(()) }
        },
    )
    .await;
    let jfk = fixture("jfk.flac");
    let refused = app.submit(&jfk, "").await;
    let retry_after = refused.headers().get("retry-after").cloned();
    assert_refused(refused, 503, "MAX_CONCURRENT_UPLOADS").await;
    assert!(retry_after.is_some(), "no Retry-After");
    drop(stalled);
    wait_for("an upload slot", Duration::from_secs(30), || {
        let submitted = app.submit(&jfk, "");
        async move { (submitted.await.status() == 202).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_rate_limit_a_key_gets_429_and_another_key_does_not() {
    let keys = "alice=alice-key-0123456789,bob=bob-key-0123456789ab";
    let settings = [("API_KEYS", keys), ("RATE_LIMIT", "2/min")];
    let mut app = TestApp::spawn_parts(&["api"], &settings).await;
    let jfk = fixture("jfk.flac");
    app.set_api_key(Some("alice-key-0123456789"));
    app.submit_job(&jfk, "").await;
    app.submit_job(&jfk, "").await;
    let refused = app.submit(&jfk, "").await;
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok()?.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_refused(refused, 429, "RATE_LIMIT").await;
    app.set_api_key(Some("bob-key-0123456789ab"));
    app.submit_job(&jfk, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_refused_with_507_when_the_disk_is_short_of_space() {
    let app = TestApp::spawn_parts(&["api"], &[("MIN_FREE_SPACE", "1000T")]).await;
    let refused = app.submit(&fixture("jfk.flac"), "").await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_refused(refused, 507, "short of disk space").await;
    assert_eq!(files_under(&app.data_dir.path().join("blobs")).len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_event_streams_a_stream_gets_503_until_one_closes() {
    let app = TestApp::spawn_parts(&["api"], &[("MAX_EVENT_STREAMS", "1")]).await;
    // Without stages the job stays pending: its stream stays open.
    let job_id = app.submit_job(&fixture("jfk.flac"), "").await;
    let events = format!("/events/{job_id}");
    let open = app.http.get(app.url(&events)).send().await.expect("GET");
    assert_eq!(open.status(), 200);
    let (status, body) = app.get_json(&events).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("MAX_EVENT_STREAMS"))
    );
    drop(open);
    wait_for(
        "the stream's slot to be given back",
        Duration::from_secs(60),
        || {
            let request = app.http.get(app.url(&events)).send();
            async move { request.await.ok().filter(|r| r.status() == 200).map(drop) }
        },
    )
    .await;
}
