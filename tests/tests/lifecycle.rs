//! Cancelling a job, black-box: `DELETE /jobs/{id}` stops a running job within seconds, keeps a
//! pending one from ever starting, ends its events with `cancelled`, tells its webhook, removes
//! its files, and `/result` answers 410; a job that has ended cannot be cancelled.

use std::time::{Duration, Instant};

use jetscribe_tests::media::speech_every;
use jetscribe_tests::{JOB_TIMEOUT, TestApp, WebhookReceiver, fixture, wait_for};
use proto_msgs::Stage;

/// The stage processes of a deployment, each its own process.
const STAGES: [&str; 4] = ["decoder", "transcriber", "analyzer", "notifier"];

async fn delete(app: &TestApp, job_id: &str) -> (u16, serde_json::Value) {
    let response = app
        .http
        .delete(app.url(&format!("/jobs/{job_id}")))
        .send()
        .await
        .expect("DELETE");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Messages of `stage` delivered to a process and not yet settled.
async fn in_progress(app: &TestApp, stage: Stage) -> usize {
    let queues = app.pipeline().await.queues().await.expect("queues");
    queues
        .iter()
        .find(|q| q.stage == stage)
        .map_or(0, |q| q.in_progress)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_cancelled_stops_within_seconds_tells_its_webhook_and_leaves_no_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let media = dir.path().join("five-minutes.wav");
    speech_every(&media, 300, 15);
    let mut hook = WebhookReceiver::start().await;
    let mut app_parts = vec!["api"];
    app_parts.extend(STAGES);
    let app = TestApp::spawn_parts(
        &app_parts,
        &[("JOB_ACK_WAIT", "3"), ("WHISPER_BATCH_SIZE", "1")],
    )
    .await;
    let job_id = app
        .submit_job(&media, &format!("?webhook_url={}", hook.url))
        .await;
    let folder = app.data_dir.path().join(format!("blobs/jobs/{job_id}"));
    let checkpoint = folder.join("transcribe.checkpoint.json");
    wait_for(
        "the transcriber to be under way",
        Duration::from_secs(300),
        || {
            let exists = checkpoint.is_file();
            async move { exists.then_some(()) }
        },
    )
    .await;

    let (code, body) = delete(&app, &job_id).await;
    let cancelled_at = Instant::now();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
    assert_eq!(body["step"], "cancelled", "{body}");
    wait_for("the transcriber to let go", Duration::from_secs(30), || {
        let app = &app;
        async move { (in_progress(app, Stage::Transcribe).await == 0).then_some(()) }
    })
    .await;
    let stopped_after = cancelled_at.elapsed();
    eprintln!("the transcriber stopped {stopped_after:?} after the cancellation");

    let delivery = hook.next(Duration::from_secs(60)).await;
    assert_eq!(delivery["status"], "cancelled", "{delivery}");
    assert_eq!(delivery["job_id"], job_id.as_str());
    let (code, result) = app.get_json(&format!("/result/{job_id}")).await;
    assert_eq!(code, 410, "{result}");
    assert_eq!(result["status"], "cancelled");
    // The events end with `cancelled`, and nothing follows it.
    let events = app.get_text(&format!("/events/{job_id}")).await;
    let kinds: Vec<&str> = events
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds.last(), Some(&"cancelled"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "cancelled").count(), 1);
    // Its files are gone, also any the transcriber wrote as it stopped.
    wait_for(
        "the job's files to be removed",
        Duration::from_secs(60),
        || {
            let gone = !folder.exists()
                || std::fs::read_dir(&folder).is_ok_and(|mut d| d.next().is_none());
            async move { gone.then_some(()) }
        },
    )
    .await;
    // A second DELETE is harmless.
    let (code, again) = delete(&app, &job_id).await;
    assert_eq!((code, &again["status"]), (200, &body["status"]), "{again}");
    let (_, status) = app.get_json(&format!("/status/{job_id}")).await;
    assert_eq!(status["status"], "cancelled", "{status}");
    assert!(
        hook.try_next(Duration::from_secs(1)).await.is_none(),
        "one webhook only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_job_cancelled_never_starts_and_an_ended_one_cannot_be_cancelled() {
    let mut app = TestApp::spawn_parts(&["api"], &[("JOB_ACK_WAIT", "3")]).await;
    let pending = app.submit_job(&fixture("jfk.flac"), "").await;
    let (code, body) = delete(&app, &pending).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "cancelled");

    for stage in STAGES {
        app.start_part(stage);
    }
    let finished = app.submit_job(&fixture("jfk.flac"), "").await;
    let (ended, _) = app.follow_status_for(&finished, JOB_TIMEOUT).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    // The decoder has taken the cancelled job's message since, and dropped it unread.
    let (_, status) = app.get_json(&format!("/status/{pending}")).await;
    assert_eq!(status["status"], "cancelled", "{status}");
    assert_eq!(status["stages"], serde_json::json!({}), "{status}");
    let (code, _) = app.get_json("/jobs?status=cancelled").await;
    assert_eq!(code, 200);

    let (code, refused) = delete(&app, &finished).await;
    assert_eq!(code, 409, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("already completed")),
        "{refused}"
    );
    let (_, status) = app.get_json(&format!("/status/{finished}")).await;
    assert_eq!(status["status"], "completed");
}
