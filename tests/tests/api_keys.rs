//! API keys as a client meets them: every route but /health needs one, a job is seen by the key
//! that submitted it and by admin keys only (another key gets 404, as for an unknown job), and
//! an API without keys does not start on an address other hosts can reach.

use jetscribe_tests::app::jetscribe_binary;
use jetscribe_tests::{TestApp, fixture};

const ALICE: &str = "alice-0123456789abcdef";
const BOB: &str = "bob-0123456789abcdef01";
/// Given to the service only as its SHA-256 (API_KEYS_FILE).
const ROOT: &str = "root-0123456789abcdef0";

fn sha256_hex(text: &str) -> String {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())",
        ])
        .arg(text)
        .output()
        .expect("python3 runs");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_a_job_is_seen_by_the_key_that_submitted_it_and_by_admins_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys_file = dir.path().join("keys");
    let root_hash = sha256_hex(ROOT);
    std::fs::write(&keys_file, format!("# admins\nroot=sha256:{root_hash}\n")).expect("keys");
    let keys_file = keys_file.display().to_string();
    let inline = format!("alice={ALICE},bob={BOB}");
    let mut app = TestApp::spawn(&[
        ("API_KEYS", inline.as_str()),
        ("API_KEYS_FILE", keys_file.as_str()),
        ("ADMIN_KEYS", "root"),
    ])
    .await;

    // No key, or a wrong one: 401 with the way to authenticate.
    for key in [None, Some("not-a-key-0123456789")] {
        app.set_api_key(key);
        let response = app
            .http
            .get(app.url("/jobs/processing"))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 401, "{key:?}");
        let challenge = response.headers().get("www-authenticate").cloned();
        assert_eq!(
            challenge.as_ref().and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        let body: serde_json::Value = response.json().await.expect("json");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("API key")),
            "{body}"
        );
        let refused = app.submit(&fixture("jfk.flac"), "").await;
        assert_eq!(refused.status(), 401);
    }
    assert_eq!(app.get_json("/health").await.0, 200);

    app.set_api_key(Some(ALICE));
    let job_id = app.submit_job(&fixture("jfk.flac"), "").await;
    let (code, status) = app.get_json(&format!("/status/{job_id}")).await;
    assert_eq!(
        (code, &status["owner"]),
        (200, &serde_json::json!("alice")),
        "{status}"
    );

    // Bob cannot tell the job exists.
    app.set_api_key(Some(BOB));
    for path in ["status", "result", "events"] {
        app.get_refused(&format!("/{path}/{job_id}"), 404, "Job not found")
            .await;
    }
    let (_, processing) = app.get_json("/jobs/processing").await;
    assert!(!processing.to_string().contains(&job_id), "{processing}");

    // The admin key sees it, sent the other way.
    app.set_api_key(None);
    let response = app
        .http
        .get(app.url(&format!("/status/{job_id}")))
        .header("X-API-Key", ROOT)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);

    app.set_api_key(Some(ALICE));
    let ended = app.wait_until_ended(&job_id).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(app.get_json(&format!("/result/{job_id}")).await.0, 200);
}

#[test]
fn an_api_without_keys_does_not_start_on_an_address_other_hosts_reach() {
    let output = std::process::Command::new(jetscribe_binary())
        .arg("api")
        .env("BIND_ADDR", "0.0.0.0:0")
        .env_remove("API_KEYS")
        .env_remove("API_KEYS_FILE")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("ALLOW_ANONYMOUS") && stderr.contains("API_KEYS"),
        "{stderr}"
    );
}

/// The job ids of a `GET /jobs` page and its next cursor.
async fn job_page(app: &TestApp, query: &str) -> (Vec<String>, Option<String>) {
    let (status, body) = app.get_json(&format!("/jobs{query}")).await;
    assert_eq!(status, 200, "{body}");
    let ids = body["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| job["job_id"].as_str().expect("job_id").to_owned())
        .collect();
    (ids, body["next_cursor"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_listed_newest_first_a_page_at_a_time_and_only_to_their_owner() {
    let inline = format!("alice={ALICE},bob={BOB},root={ROOT}");
    let settings = [("API_KEYS", inline.as_str()), ("ADMIN_KEYS", "root")];
    // Without stages every job stays pending.
    let mut app = TestApp::spawn_parts(&["api"], &settings).await;
    let jfk = fixture("jfk.flac");
    app.set_api_key(Some(ALICE));
    let mut alices = Vec::new();
    for _ in 0..3 {
        alices.push(app.submit_job(&jfk, "").await);
    }
    app.set_api_key(Some(BOB));
    let bobs = app.submit_job(&jfk, "").await;
    alices.reverse();

    app.set_api_key(Some(ALICE));
    let (first, cursor) = job_page(&app, "?limit=2").await;
    assert_eq!(first, alices[..2]);
    let cursor = cursor.expect("a next page");
    let (second, last) = job_page(&app, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(second, alices[2..]);
    assert_eq!(last, None);
    assert_eq!(job_page(&app, "?status=pending").await.0, alices);
    assert_eq!(
        job_page(&app, "?status=completed").await.0,
        Vec::<String>::new()
    );
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?status=done", "status"),
        ("?cursor=x", "cursor"),
    ] {
        app.get_refused(&format!("/jobs{query}"), 400, field).await;
    }

    app.set_api_key(Some(BOB));
    assert_eq!(job_page(&app, "").await.0, vec![bobs.clone()]);
    let (status, active) = app.get_json("/jobs/processing").await;
    assert_eq!(status, 200);
    assert_eq!(active["count"], 1, "{active}");

    app.set_api_key(Some(ROOT));
    let everyone = job_page(&app, "").await.0;
    assert_eq!(everyone.len(), 4);
    assert_eq!(everyone[0], bobs);
    assert_eq!(app.get_json("/jobs/processing").await.1["count"], 4);
}

/// POSTs jfk.flac to /process with `Idempotency-Key: idempotency_key`.
async fn submit_once(app: &TestApp, idempotency_key: &str) -> (u16, serde_json::Value) {
    let bytes = std::fs::read(fixture("jfk.flac")).expect("fixture");
    let part = reqwest::multipart::Part::bytes(bytes).file_name("jfk.flac");
    let response = app
        .http
        .post(app.url("/process"))
        .header("Idempotency-Key", idempotency_key)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_repeated_with_its_idempotency_key_gets_the_same_job_once() {
    let inline = format!("alice={ALICE},bob={BOB}");
    let mut app = TestApp::spawn_parts(&["api"], &[("API_KEYS", inline.as_str())]).await;
    app.set_api_key(Some(ALICE));
    let (status, first) = submit_once(&app, "upload-1").await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = submit_once(&app, "upload-1").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["job_id"], first["job_id"]);
    let (status, other) = submit_once(&app, "upload-2").await;
    assert_eq!(status, 202);
    assert_ne!(other["job_id"], first["job_id"]);
    let (status, refused) = submit_once(&app, &"k".repeat(300)).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("Idempotency-Key"))
    );
    let (_, listed) = app.get_json("/jobs").await;
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(2), "{listed}");

    // The same key from another API key is another submission.
    app.set_api_key(Some(BOB));
    let (status, bobs) = submit_once(&app, "upload-1").await;
    assert_eq!(status, 202);
    assert_ne!(bobs["job_id"], first["job_id"]);
}
