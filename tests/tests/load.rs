//! Load, black-box: hundreds of submissions at once against one `jetscribe up`. Each one is
//! accepted or told to retry (503 or 429 with Retry-After), none is dropped, every accepted job
//! completes, none runs twice, and a refused one leaves no job behind.

use std::collections::HashSet;
use std::time::Instant;

use futures::StreamExt;
use jetscribe_tests::media::write_wav;
use jetscribe_tests::{JOB_TIMEOUT, TestApp, wait_for};

/// What one submission got.
enum Answer {
    Accepted(String),
    ToldToRetry,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_submissions_at_once_are_accepted_or_told_to_retry_and_none_is_lost_or_run_twice()
 {
    let submissions: usize = std::env::var("LOAD_SUBMISSIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = dir.path().join("second.wav");
    write_wav(&clip, &vec![0i16; 16_000]);
    let bytes = std::fs::read(&clip).expect("clip");
    let app = TestApp::spawn(&[("RATE_LIMIT", "off")]).await;

    let started = Instant::now();
    let answers: Vec<Result<Answer, String>> = futures::stream::iter(0..submissions)
        .map(|index| {
            let (app, bytes) = (&app, bytes.clone());
            async move {
                let part = reqwest::multipart::Part::bytes(bytes).file_name(format!("{index}.wav"));
                let form = reqwest::multipart::Form::new().part("file", part);
                let response = app
                    .http
                    .post(app.url("/process"))
                    .multipart(form)
                    .send()
                    .await
                    .map_err(|err| format!("submission {index}: {err}"))?;
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                match (status, retry_after) {
                    (202, _) => Ok(Answer::Accepted(
                        body["job_id"].as_str().expect("job_id").to_owned(),
                    )),
                    (429 | 503, true) => Ok(Answer::ToldToRetry),
                    _ => Err(format!("submission {index}: {status} {body}")),
                }
            }
        })
        .buffer_unordered(submissions)
        .collect()
        .await;
    let burst = started.elapsed();

    let mut accepted = HashSet::new();
    let mut told_to_retry = 0;
    for answer in answers {
        match answer.unwrap_or_else(|err| panic!("a submission was dropped: {err}")) {
            Answer::Accepted(job_id) => assert!(accepted.insert(job_id), "a job id twice"),
            Answer::ToldToRetry => told_to_retry += 1,
        }
    }
    eprintln!(
        "{submissions} submissions in {burst:?}: {} accepted, {told_to_retry} told to retry",
        accepted.len()
    );
    assert!(!accepted.is_empty());

    // Every accepted job completes, once: one try of each stage.
    for job_id in &accepted {
        let ended = wait_for("the job to end", JOB_TIMEOUT, || {
            let (app, path) = (&app, format!("/status/{job_id}"));
            async move {
                let (_, status) = app.get_json(&path).await;
                matches!(status["status"].as_str(), Some("completed" | "failed")).then_some(status)
            }
        })
        .await;
        assert_eq!(ended["status"], "completed", "{ended}");
        for stage in ["decode", "transcribe", "analyze", "notify"] {
            assert_eq!(ended["stages"][stage]["attempts"], 1, "{stage}: {ended}");
        }
    }
    // The refused ones left no job behind.
    let pipeline = app.pipeline().await;
    let jobs = pipeline.scan_jobs().await.expect("jobs").count().await;
    assert_eq!(jobs, accepted.len());
}
