//! The janitor, black-box: jobs lost by the pipeline are found and finished, finished jobs are
//! forgotten after JOB_CLEANUP_DAYS, and a job still running is never touched, however old.

use std::time::Duration;

use jetscribe_tests::{JFK_REFERENCE, JOB_TIMEOUT, TestApp, fixture, wait_for, word_error_rate};

/// The stage processes of a deployment, each its own process.
const STAGES: [&str; 4] = ["decoder", "transcriber", "analyzer", "notifier"];

fn assert_jfk_transcript(result: &serde_json::Value) {
    let transcript = result["result"]["transcript"].as_str().expect("transcript");
    let wer = word_error_rate(JFK_REFERENCE, transcript);
    assert!(wer < 0.15, "WER {wer:.3}: {transcript}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_message_was_lost_is_queued_again_and_completes() {
    // Only the API at first: the job's message waits in the work queue.
    let mut app = TestApp::spawn_parts(&["api"], &[("JOB_ACK_WAIT", "2")]).await;
    let job_id = app.submit_job(&fixture("jfk.flac"), "").await;
    // The message is lost (as nats-server dropped messages past `max_deliver`, or a stream
    // restored from an old backup).
    let pipeline = app.pipeline().await;
    let mut stream = pipeline
        .jetstream()
        .get_stream(proto_msgs::PIPELINE_STREAM)
        .await
        .expect("work stream");
    stream.purge().await.expect("purged");
    assert_eq!(stream.info().await.expect("info").state.messages, 0);

    for stage in STAGES {
        app.start_part(stage);
    }
    let ended = app.wait_until_ended(&job_id).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    let (_, result) = app.get_json(&format!("/result/{job_id}")).await;
    assert_jfk_transcript(&result);
    let record = pipeline
        .jobs()
        .get(job_id.parse().expect("uuid"))
        .await
        .expect("read")
        .expect("record");
    assert_eq!(record.requeues, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_forgotten_after_the_retention_and_a_running_one_is_untouched() {
    // 0.0003 days: 26 s.
    let env = [("JOB_CLEANUP_DAYS", "0.0003"), ("JOB_ACK_WAIT", "2")];
    let mut app = TestApp::spawn_parts(
        &["api", "decoder", "analyzer", "notifier", "transcriber"],
        &env,
    )
    .await;
    let finished = app.submit_job(&fixture("jfk.flac"), "").await;
    let ended = app.wait_until_ended(&finished).await;
    assert_eq!(ended["status"], "completed", "{ended}");

    // The next job waits for a transcriber, for longer than the retention.
    app.kill_part("transcriber");
    let running = app.submit_job(&fixture("jfk.flac"), "").await;
    wait_for(
        "the job to wait for the transcriber",
        Duration::from_secs(60),
        || {
            let (app, path) = (&app, format!("/status/{running}"));
            async move {
                let (_, body) = app.get_json(&path).await;
                (body["step"] == "transcribing"
                    || body["stages"]["decode"]["finished_at"].is_string())
                .then_some(())
            }
        },
    )
    .await;

    let pipeline = app.pipeline().await;
    let blobs = app.data_dir.path().join("blobs/jobs");
    let finished_id: uuid::Uuid = finished.parse().expect("uuid");
    wait_for(
        "the finished job to be forgotten",
        Duration::from_secs(90),
        || {
            let (app, path) = (&app, format!("/status/{finished}"));
            let files = blobs.join(&finished).exists();
            let pipeline = &pipeline;
            async move {
                let (code, _) = app.get_json(&path).await;
                let events = pipeline.last_event_sequence(finished_id).await;
                let events = events.expect("events read");
                (code == 404 && !files && events.is_none()).then_some(())
            }
        },
    )
    .await;
    // Older than the retention by now, the waiting job kept its record and its files.
    let (code, body) = app.get_json(&format!("/status/{running}")).await;
    assert_eq!(code, 200, "{body}");
    assert!(blobs.join(&running).join("input").exists());
    assert!(blobs.join(&running).join("audio.s16le").exists());

    app.start_part("transcriber");
    let (ended, _) = app.follow_status_for(&running, JOB_TIMEOUT).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    let (_, result) = app.get_json(&format!("/result/{running}")).await;
    assert_jfk_transcript(&result);
    // It waited in a queue all along: never taken for lost.
    let record = pipeline
        .jobs()
        .get(running.parse().expect("uuid"))
        .await
        .expect("read")
        .expect("record");
    assert_eq!(record.requeues, 0);
}
