//! Webhooks as a receiver sees them: signed per Standard Webhooks (checked here by Python's
//! standard library, not by jetscribe's code), retried with backoff through JetStream so that a
//! notifier killed between two attempts still delivers, every attempt on the job's status, and
//! URLs that point inside the network refused at submission.

use std::time::Duration;

use jetscribe_tests::{
    JOB_TIMEOUT, ScriptedAnswer, TestApp, WebhookDelivery, WebhookReceiver, assert_refused,
    fixture, wait_for,
};
/// A Standard Webhooks secret: `whsec_` and a base64 key.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn submit_with_webhook(app: &TestApp, url: &str) -> String {
    app.submit_job(&fixture("jfk.flac"), &format!("?webhook_url={url}"))
        .await
}

/// The job's `webhook` once `done` holds for it.
async fn webhook_status(
    app: &TestApp,
    job_id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for("the webhook status", JOB_TIMEOUT, || async {
        let (_, status) = app.get_json(&format!("/status/{job_id}")).await;
        Some(status["webhook"].clone()).filter(|webhook| done(webhook))
    })
    .await
}

/// Recomputes the signature with Python's hmac, hashlib and base64: an implementation that
/// shares nothing with the notifier's.
fn python_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    use std::io::Write as _;
    let script = "import base64, hashlib, hmac, sys\n\
        key = base64.b64decode(sys.argv[1].removeprefix('whsec_'))\n\
        signed = sys.argv[2].encode() + b'.' + sys.argv[3].encode() + b'.' + sys.stdin.buffer.read()\n\
        print('v1,' + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode())\n";
    let mut python = std::process::Command::new("python3")
        .args(["-c", script, secret, id, timestamp])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("body written");
    let output = python.wait_with_output().expect("python3 ends");
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

fn assert_signed(delivery: &WebhookDelivery) {
    let header = |name: &str| {
        delivery
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", delivery.headers))
            .clone()
    };
    let (id, timestamp, signatures) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let sent_at: i64 = timestamp.parse().expect("timestamp in seconds");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now - sent_at).abs() < 300,
        "timestamp {sent_at} is not now ({now})"
    );
    let expected = python_signature(SECRET, &id, &timestamp, &delivery.raw_body);
    assert!(
        signatures.split(' ').any(|signature| signature == expected),
        "signature {signatures} is not {expected}"
    );
    // A body changed in transit no longer verifies.
    let mut tampered = delivery.raw_body.clone();
    tampered.push(b' ');
    assert_ne!(
        python_signature(SECRET, &id, &timestamp, &tampered),
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_twice_gets_one_signed_delivery_with_every_attempt_recorded() {
    let mut hook = WebhookReceiver::scripted(&[
        ScriptedAnswer::status(500),
        ScriptedAnswer::retry_after(503, 2),
    ])
    .await;
    let app = TestApp::spawn(&[("WEBHOOK_SECRET", SECRET), ("WEBHOOK_RETRY_DELAY", "0.5")]).await;
    let job_id = submit_with_webhook(&app, &hook.url).await;

    let first = hook.next_delivery(JOB_TIMEOUT).await;
    let second = hook.next_delivery(Duration::from_secs(30)).await;
    let third = hook.next_delivery(Duration::from_secs(30)).await;
    assert_eq!(
        [first.answered, second.answered, third.answered],
        [500, 503, 200]
    );
    for delivery in [&first, &second, &third] {
        assert_signed(delivery);
        assert_eq!(delivery.body["job_id"], job_id.as_str());
        assert_eq!(delivery.body["status"], "completed");
    }
    // One delivery, three attempts: the same webhook-id on each.
    assert_eq!(first.headers["webhook-id"], third.headers["webhook-id"]);
    // The backoff: at least WEBHOOK_RETRY_DELAY before the first retry, and the receiver's
    // Retry-After (2 s, more than the doubled delay) before the second.
    let first_gap = second.arrived - first.arrived;
    let second_gap = third.arrived - second.arrived;
    assert!(first_gap >= Duration::from_millis(500), "{first_gap:?}");
    assert!(second_gap >= Duration::from_secs(2), "{second_gap:?}");

    let webhook = webhook_status(&app, &job_id, |webhook| webhook["state"] == "delivered").await;
    assert_eq!(webhook["attempts"], 3, "{webhook}");
    assert_eq!(webhook["last_status_code"], 200, "{webhook}");
    assert!(webhook["delivered_at"].is_string(), "{webhook}");
    assert!(webhook["next_attempt_at"].is_null(), "{webhook}");
    let codes: Vec<u64> = webhook["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|attempt| attempt["status_code"].as_u64().expect("status code"))
        .collect();
    assert_eq!(codes, vec![500, 503, 200], "{webhook}");
    // Delivered is the end of it: nothing more arrives.
    assert!(hook.try_next(Duration::from_secs(2)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_while_a_retry_is_pending_delivers_after_it_restarts() {
    let mut hook = WebhookReceiver::scripted(&[ScriptedAnswer::status(502)]).await;
    let mut app = TestApp::spawn_parts(
        &["api", "decoder", "transcriber", "analyzer", "notifier"],
        // Killed while it holds the retry (between its delivery and its hand-back), the notifier
        // leaves it to be redelivered after JOB_ACK_WAIT: short here, so that either way the
        // retry arrives within the wait below.
        &[("WEBHOOK_RETRY_DELAY", "4"), ("JOB_ACK_WAIT", "10")],
    )
    .await;
    let job_id = submit_with_webhook(&app, &hook.url).await;
    let failed = hook.next_delivery(JOB_TIMEOUT).await;
    assert_eq!(failed.answered, 502);
    // The retry is scheduled (on the job, and as a message in JetStream)...
    let webhook = webhook_status(&app, &job_id, |webhook| {
        webhook["next_attempt_at"].is_string()
    })
    .await;
    assert_eq!(webhook["state"], "pending", "{webhook}");
    assert_eq!(webhook["attempts"], 1, "{webhook}");
    // ...and the only process that knew about it dies before it is due.
    app.kill_part("notifier");
    app.start_part("notifier");

    let delivered = hook.next_delivery(Duration::from_secs(60)).await;
    assert_eq!(delivered.answered, 200);
    assert_eq!(delivered.body["job_id"], job_id.as_str());
    assert_eq!(
        delivered.headers["webhook-id"],
        failed.headers["webhook-id"]
    );
    assert!(delivered.arrived - failed.arrived >= Duration::from_secs(4));
    let webhook = webhook_status(&app, &job_id, |webhook| webhook["state"] == "delivered").await;
    assert_eq!(webhook["attempts"], 2, "{webhook}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_refuses_with_a_client_error_is_not_retried() {
    let mut hook = WebhookReceiver::scripted(&[ScriptedAnswer::status(410)]).await;
    let app = TestApp::spawn(&[]).await;
    let job_id = submit_with_webhook(&app, &hook.url).await;
    assert_eq!(hook.next_delivery(JOB_TIMEOUT).await.answered, 410);
    let webhook = webhook_status(&app, &job_id, |webhook| webhook["state"] == "failed").await;
    assert_eq!(webhook["attempts"], 1, "{webhook}");
    assert_eq!(webhook["last_status_code"], 410, "{webhook}");
    // The job itself stays completed.
    let (_, status) = app.get_json(&format!("/status/{job_id}")).await;
    assert_eq!(status["status"], "completed", "{status}");
    assert!(hook.try_next(Duration::from_secs(2)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_pointing_inside_the_network_are_refused_and_create_no_job() {
    let app = TestApp::spawn(&[("WEBHOOK_ALLOW_PRIVATE", "false")]).await;
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        "file:///etc/passwd",
    ] {
        let response = app
            .submit(&fixture("jfk.flac"), &format!("?webhook_url={url}"))
            .await;
        assert_eq!(response.status(), 422, "{url}");
        let body: serde_json::Value = response.json().await.expect("json");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with("webhook_url: "), "{url}: {body}");
    }
    // The reason is given: which address, of what kind.
    let response = app
        .submit(&fixture("jfk.flac"), "?webhook_url=http://localhost/hook")
        .await;
    assert_refused(response, 422, "loopback").await;
    let (_, processing) = app.get_json("/jobs/processing").await;
    assert_eq!(processing["count"], 0, "{processing}");
    let jobs = app.data_dir.path().join("blobs/jobs");
    let stored = std::fs::read_dir(&jobs).map(|dir| dir.count()).unwrap_or(0);
    assert_eq!(stored, 0, "nothing stored under {}", jobs.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_runs_out_of_deliveries_marks_the_webhook_failed_and_the_job_stays_completed()
{
    let mut hook = WebhookReceiver::scripted(&[ScriptedAnswer::status(503)]).await;
    let app = TestApp::spawn(&[("WEBHOOK_RETRY_DELAY", "2")]).await;
    let job_id = submit_with_webhook(&app, &hook.url).await;
    assert_eq!(hook.next_delivery(JOB_TIMEOUT).await.answered, 503);
    webhook_status(&app, &job_id, |webhook| {
        webhook["next_attempt_at"].is_string()
    })
    .await;
    // The result the retry must send disappears: every delivery of the retry now fails, until
    // the message has none left.
    let result = app
        .data_dir
        .path()
        .join(format!("blobs/jobs/{job_id}/result.json"));
    std::fs::remove_file(&result).expect("the result file exists");

    let webhook = webhook_status(&app, &job_id, |webhook| webhook["state"] != "pending").await;
    assert_eq!(webhook["state"], "failed", "{webhook}");
    assert!(
        webhook["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("reading the result")),
        "{webhook}"
    );
    assert!(webhook["next_attempt_at"].is_null(), "{webhook}");
    let (_, status) = app.get_json(&format!("/status/{job_id}")).await;
    assert_eq!(status["status"], "completed", "{status}");
    assert!(hook.try_next(Duration::from_secs(1)).await.is_none());
}
