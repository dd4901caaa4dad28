//! Stages scaled out and routed: several transcriber processes share one queue, each job
//! transcribed once; each Whisper model is a pool of transcribers, a job names its model (or
//! gets the default) and only that pool takes it; a pool declared with no transcriber running
//! keeps its jobs until one starts, as when an autoscaler scales it from zero.

use std::time::Duration;

use jetscribe_tests::reference::repo_root;
use jetscribe_tests::{JFK_REFERENCE, TestApp, assert_refused, fixture, wait_for, word_error_rate};

/// `name=folder` for WHISPER_MODELS, with the folder under `models/`.
fn model(name: &str, folder: &str) -> String {
    let dir = repo_root().join("models").join(folder);
    assert!(
        dir.join("model.bin").is_file(),
        "{}: run `make models`",
        dir.display()
    );
    format!("{name}={}", dir.display())
}

/// `/models`' pools as (name, default, queued, idle workers).
async fn pools(app: &TestApp) -> Vec<(String, bool, u64, u64)> {
    let (status, body) = app.get_json("/models").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["default"], "base", "{body}");
    body["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|pool| {
            (
                pool["name"].as_str().expect("name").to_owned(),
                pool["default"].as_bool().expect("default"),
                pool["queued"].as_u64().expect("queued"),
                pool["idle_workers"].as_u64().expect("idle_workers"),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_job_is_transcribed_by_the_pool_of_the_model_it_names() {
    // The API declares three pools; transcribers run for two of them, one process each.
    let mut app = TestApp::spawn_parts(
        &["api", "decoder", "analyzer", "notifier"],
        &[("WHISPER_MODELS", "base,tiny.en,small")],
    )
    .await;
    app.start_part_with(
        "transcriber",
        &[("WHISPER_MODELS", &model("base", "whisper-base"))],
    );
    let tiny = model("tiny.en", "whisper-tiny.en");
    let tiny_only = [
        ("WHISPER_MODELS", tiny.as_str()),
        ("WHISPER_DEFAULT_MODEL", "base"),
    ];
    app.start_part_with("transcriber", &tiny_only);
    wait_for(
        "a transcriber waiting in each served pool",
        Duration::from_secs(120),
        || {
            let app = &app;
            async move {
                let pools = pools(app).await;
                let idle = |name: &str| pools.iter().any(|p| p.0 == name && p.3 > 0);
                (idle("base") && idle("tiny.en")).then_some(())
            }
        },
    )
    .await;
    let names: Vec<(String, bool)> = pools(&app).await.into_iter().map(|p| (p.0, p.1)).collect();
    let expected = [("base", true), ("small", false), ("tiny.en", false)];
    let expected: Vec<(String, bool)> = expected.iter().map(|(n, d)| ((*n).into(), *d)).collect();
    assert_eq!(names, expected, "the default first, then by name");

    // Refused before a byte is stored: a model no pool serves, a name that is no model name.
    let jfk = fixture("jfk.flac");
    let unknown = app.submit(&jfk, "?model=large-v3").await;
    let body = assert_refused(unknown, 422, "model").await;
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("served models: base, small, tiny.en"),
        "{detail}"
    );
    let refused = app
        .post_file("/process", &jfk, &[("model", "../base")])
        .await;
    assert_refused(refused, 422, "model").await;
    let refused = app
        .post_file("/process", &jfk, &[("model", "large-v3")])
        .await;
    assert_refused(refused, 422, "served models: base, small, tiny.en").await;
    let (_, page) = app.get_json("/jobs").await;
    let listed = page["jobs"].as_array().map(Vec::len);
    assert_eq!(
        listed,
        Some(0),
        "no job was made of a refused submission: {page}"
    );

    let by_default = app.submit_job(&jfk, "").await;
    let by_query = app.submit_job(&jfk, "?model=tiny.en").await;
    let by_field = app
        .post_file("/process", &jfk, &[("model", "tiny.en")])
        .await;
    assert_eq!(by_field.status(), 202);
    let by_field: serde_json::Value = by_field.json().await.expect("json");
    let by_field = by_field["job_id"].as_str().expect("job_id").to_owned();
    let waiting = app.submit_job(&jfk, "?model=small").await;
    for (job_id, name, folder) in [
        (&by_default, "base", "whisper-base"),
        (&by_query, "tiny.en", "whisper-tiny.en"),
        (&by_field, "tiny.en", "whisper-tiny.en"),
    ] {
        let status = app.wait_until_ended(job_id).await;
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["model"], name, "{status}");
        let (_, body) = app.get_json(&format!("/result/{job_id}")).await;
        assert_eq!(body["result"]["model"], folder, "{body}");
        let text = body["result"]["transcript"].as_str().expect("transcript");
        let wer = word_error_rate(JFK_REFERENCE, text);
        assert!(wer < 0.2, "{name}: WER {wer} on {text:?}");
    }

    // The pool with no transcriber keeps its job, decoded and queued, until one starts.
    wait_for(
        "the job queued in its pool",
        Duration::from_secs(60),
        || {
            let app = &app;
            async move {
                let pools = pools(app).await;
                pools
                    .iter()
                    .any(|p| p.0 == "small" && p.2 == 1)
                    .then_some(())
            }
        },
    )
    .await;
    let (_, status) = app.get_json(&format!("/status/{waiting}")).await;
    assert_eq!(status["status"], "processing", "{status}");
    let small = model("small", "whisper-tiny.en");
    app.start_part_with("transcriber", &[("WHISPER_MODELS", &small)]);
    let status = app.wait_until_ended(&waiting).await;
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["model"], "small", "{status}");
    assert_eq!(status["stages"]["transcribe"]["attempts"], 1, "{status}");
    app.terminate(Duration::from_secs(30));
}

#[tokio::test]
async fn two_transcriber_processes_share_the_queue_and_transcribe_each_job_once() {
    let one_thread = [("WHISPER_THREADS", "1"), ("MAX_CONCURRENT_JOBS", "1")];
    let mut app =
        TestApp::spawn_parts(&["api", "decoder", "analyzer", "notifier"], &one_thread).await;
    let pids = [app.start_part("transcriber"), app.start_part("transcriber")];
    wait_for(
        "both transcribers waiting for work",
        Duration::from_secs(120),
        || {
            let app = &app;
            async move {
                pools(app)
                    .await
                    .iter()
                    .any(|p| p.0 == "base" && p.3 == 2)
                    .then_some(())
            }
        },
    )
    .await;
    let jfk = fixture("jfk.flac");
    let mut jobs = Vec::new();
    for _ in 0..4 {
        jobs.push(app.submit_job(&jfk, "").await);
    }
    let mut workers = std::collections::BTreeSet::new();
    for job_id in &jobs {
        let status = app.wait_until_ended(job_id).await;
        assert_eq!(status["status"], "completed", "{status}");
        let transcribe = &status["stages"]["transcribe"];
        assert_eq!(transcribe["attempts"], 1, "{status}");
        let worker = transcribe["worker"].as_str().expect("worker").to_owned();
        workers.insert(worker.rsplit_once('/').expect("host/pid").1.to_owned());
    }
    let expected: std::collections::BTreeSet<String> = pids.iter().map(u32::to_string).collect();
    assert_eq!(workers, expected, "each transcriber process took jobs");
    app.terminate(Duration::from_secs(30));
}
