//! What neither a client nor a log reader learns: credentials in NATS_URL.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use jetscribe_tests::app::jetscribe_binary;

#[test]
fn credentials_in_nats_url_are_not_printed() {
    // A port nobody listens on: the API keeps trying and says so.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut api = Command::new(jetscribe_binary())
        .arg("api")
        .env(
            "NATS_URL",
            format!("nats://alice:s3cret-pass@127.0.0.1:{port}"),
        )
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    // The log goes to standard output.
    let log = api.stdout.take().expect("stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let retrying = loop {
        let line = received
            .recv_timeout(Duration::from_secs(30))
            .expect("a line about NATS within 30 s");
        if line.contains("NATS not reachable") {
            break line;
        }
    };
    api.kill().expect("killed");
    api.wait().expect("ended");
    assert!(!retrying.contains("s3cret-pass"), "{retrying}");
    assert!(retrying.contains("***@127.0.0.1"), "{retrying}");
}
