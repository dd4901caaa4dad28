//! jetscribe on a real S3 server (SeaweedFS, started by the test): a job from upload to
//! transcript with nothing left under DATA_DIR, and a 2 GiB upload streamed to the store in
//! multipart parts while the API's memory stays flat.

use std::path::PathBuf;
use std::time::Duration;

use jetscribe_tests::{
    JFK_REFERENCE, S3Server, TestApp, files_under, fixture, peak_rss_bytes, wait_for,
    word_error_rate,
};

const MIB: u64 = 1 << 20;

fn env_of(s3: &S3Server) -> Vec<(String, String)> {
    s3.env()
}

fn as_pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_s3_completes_and_leaves_nothing_under_data_dir() {
    let s3 = S3Server::start().await;
    let env = env_of(&s3);
    let app = TestApp::spawn(&as_pairs(&env)).await;
    let job_id = app.submit_job(&fixture("jfk.flac"), "").await;
    let ended = app.wait_until_ended(&job_id).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    let (_, result) = app.get_json(&format!("/result/{job_id}")).await;
    let transcript = result["result"]["transcript"].as_str().unwrap_or_default();
    assert!(
        word_error_rate(JFK_REFERENCE, transcript) < 0.1,
        "{transcript}"
    );

    // The decoder's staging copy (ffmpeg reads a file) is removed once decoded; the blobs are
    // in S3.
    let data_dir = app.data_dir.path().to_owned();
    let left = wait_for(
        "DATA_DIR to hold no job data",
        Duration::from_secs(30),
        || {
            let left: Vec<PathBuf> = files_under(&data_dir)
                .into_iter()
                .filter(|file| file.file_name().is_none_or(|name| name != "api.addr"))
                .collect();
            async move { left.is_empty().then_some(left) }
        },
    )
    .await;
    assert!(left.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_gib_upload_to_s3_streams_through_an_api_of_flat_memory() {
    let s3 = S3Server::start().await;
    let mut env = env_of(&s3);
    env.push(("MAX_FILE_SIZE".into(), "3G".into()));
    let app = TestApp::spawn_parts(&["api"], &as_pairs(&env)).await;
    let api = app.pid_of("api").expect("the api process");
    let before = peak_rss_bytes(api).expect("VmHWM");

    let chunks = 2048;
    let body = futures::stream::iter(
        (0..chunks)
            .map(|i: u32| vec![(i % 251) as u8; MIB as usize])
            .map(Ok::<_, std::io::Error>),
    );
    let response = app.post_streamed_file(body).send().await.expect("answered");
    assert_eq!(response.status(), 202);
    let accepted: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        accepted["size_bytes"],
        u64::from(chunks) * MIB,
        "{accepted}"
    );

    let grown = peak_rss_bytes(api).expect("VmHWM").saturating_sub(before);
    eprintln!("2 GiB to S3: API peak +{} MiB", grown / MIB);
    // Parts of 8 MiB, two in flight: a few dozen MiB at most, whatever the size.
    assert!(grown < 128 * MIB, "the API grew by {} MiB", grown / MIB);
    assert!(
        files_under(&app.data_dir.path().join("blobs")).is_empty(),
        "nothing of it was written under DATA_DIR"
    );
}
