//! The `jetscribe` binary as a client of a running server: submit with --wait writing the
//! result, status, result, watch, jobs, cancel, and exit codes a script can use (0 done, 1 job
//! failed, 2 bad usage, 3 server unreachable). Run without a terminal: no bars.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use jetscribe_tests::app::jetscribe_binary;
use jetscribe_tests::{JFK_REFERENCE, TestApp, fixture, word_error_rate};

const KEY: &str = "cli-user-key-0123456789ab";

/// Runs `jetscribe args…` in `dir` against `url` with `key`.
async fn jetscribe(dir: &Path, url: &str, key: Option<&str>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(jetscribe_binary());
    command
        .args(args)
        .current_dir(dir)
        .env("JETSCRIBE_URL", url);
    command.env_remove("JETSCRIBE_API_KEY");
    if let Some(key) = key {
        command.env("JETSCRIBE_API_KEY", key);
    }
    let ran = tokio::time::timeout(Duration::from_secs(300), command.output()).await;
    ran.expect("the client ends").expect("the client runs")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_waits_and_reads_jobs_with_exit_codes_a_script_can_use() {
    let keys = format!("cli={KEY}");
    let app = TestApp::spawn(&[("API_KEYS", keys.as_str())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    for (fixture_name, name) in [
        ("jfk.flac", "jfk.flac"),
        ("jfk.flac", "again.flac"),
        ("voxpopuli.ogg", "long.ogg"),
    ] {
        std::fs::copy(fixture(fixture_name), dir.path().join(name)).expect("copied");
    }
    std::fs::create_dir(dir.path().join("other")).expect("a folder");
    std::fs::copy(fixture("jfk.flac"), dir.path().join("other/jfk.flac")).expect("copied");
    std::fs::write(dir.path().join("noise.mp3"), b"not audio".repeat(500)).expect("written");
    let dir = dir.path();
    let url = app.base_url.as_str();

    // --wait follows the job and writes its subtitles where -o says.
    let waited = jetscribe(
        dir,
        url,
        Some(KEY),
        &[
            "submit",
            "jfk.flac",
            "--language",
            "en",
            "--wait",
            "--format",
            "srt",
            "-o",
            "jfk.srt",
        ],
    )
    .await;
    assert_eq!(code(&waited), 0, "{}", text(&waited.stderr));
    let srt = std::fs::read_to_string(dir.join("jfk.srt")).expect("jfk.srt written");
    assert!(srt.starts_with("1\n00:00:00,000 --> "), "{srt}");

    // Several files with -o: a folder of results named after them; two files of one name
    // would overwrite each other's and are refused before anything is sent.
    let args = [
        "submit",
        "jfk.flac",
        "again.flac",
        "--wait",
        "--format",
        "vtt",
        "-o",
        "out",
    ];
    let both = jetscribe(dir, url, Some(KEY), &args).await;
    assert_eq!(code(&both), 0, "{}", text(&both.stderr));
    // Both are uploaded before either is followed; then they are followed together, each
    // line naming its file.
    let log = text(&both.stderr);
    let second_upload = log.find("again.flac: job ").expect("the second job's id");
    let first_stage = log
        .find("jfk.flac: decode")
        .expect("the first job's stages");
    assert!(second_upload < first_stage, "{log}");
    assert!(log.contains("again.flac: transcribe"), "{log}");
    for name in ["out/jfk.flac.vtt", "out/again.flac.vtt"] {
        let vtt = std::fs::read_to_string(dir.join(name)).expect(name);
        assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    }
    let args = [
        "submit",
        "jfk.flac",
        "other/jfk.flac",
        "--wait",
        "-o",
        "twice",
    ];
    let twice = jetscribe(dir, url, Some(KEY), &args).await;
    assert_eq!(code(&twice), 2, "{}", text(&twice.stderr));
    let no_wait = jetscribe(dir, url, Some(KEY), &["submit", "jfk.flac", "-o", "x.txt"]).await;
    assert_eq!(code(&no_wait), 2, "{}", text(&no_wait.stderr));

    // The result of a job still running: exit 4 (69 s of speech take seconds to transcribe).
    let running = jetscribe(dir, url, Some(KEY), &["submit", "long.ogg"]).await;
    let running_id = text(&running.stdout).trim().to_owned();
    let early = jetscribe(dir, url, Some(KEY), &["result", &running_id]).await;
    assert_eq!(code(&early), 4, "{}", text(&early.stderr));
    assert!(text(&early.stdout).is_empty(), "{}", text(&early.stdout));

    // Without --wait, the job's id on stdout, to follow and read.
    let submitted = jetscribe(dir, url, Some(KEY), &["submit", "jfk.flac"]).await;
    assert_eq!(code(&submitted), 0, "{}", text(&submitted.stderr));
    let job_id = text(&submitted.stdout).trim().to_owned();
    assert_eq!(job_id.len(), 36, "{job_id:?}");
    let watched = jetscribe(dir, url, Some(KEY), &["watch", &job_id]).await;
    assert_eq!(code(&watched), 0, "{}", text(&watched.stderr));
    let status = jetscribe(dir, url, Some(KEY), &["status", &job_id]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["status"], "completed", "{status}");
    let result = jetscribe(dir, url, Some(KEY), &["result", &job_id, "--format", "txt"]).await;
    assert_eq!(code(&result), 0);
    assert!(
        word_error_rate(JFK_REFERENCE, &text(&result.stdout)) < 0.1,
        "{}",
        text(&result.stdout)
    );
    let jobs = jetscribe(dir, url, Some(KEY), &["jobs"]).await;
    assert!(
        text(&jobs.stdout).contains(&job_id),
        "{}",
        text(&jobs.stdout)
    );

    // A job that has ended cannot be cancelled; a job that fails exits 1 too.
    let cancel = jetscribe(dir, url, Some(KEY), &["cancel", &job_id]).await;
    assert_eq!(code(&cancel), 1, "{}", text(&cancel.stderr));
    let failed = jetscribe(dir, url, Some(KEY), &["submit", "noise.mp3", "--wait"]).await;
    assert_eq!(code(&failed), 1, "{}", text(&failed.stderr));
    assert!(
        text(&failed.stderr).contains("failed"),
        "{}",
        text(&failed.stderr)
    );
    // Jobs by status, a page at a time.
    let failed_jobs = jetscribe(dir, url, Some(KEY), &["jobs", "--status", "failed"]).await;
    let listed = text(&failed_jobs.stdout);
    assert!(
        listed.contains("failed") && !listed.contains(&job_id),
        "{listed}"
    );
    let first = jetscribe(dir, url, Some(KEY), &["jobs", "--limit", "1"]).await;
    let more = text(&first.stderr);
    let cursor = (more.split_whitespace().last()).expect("a cursor to the next page");
    assert!(more.starts_with("more: jetscribe jobs --cursor"), "{more}");
    let next = jetscribe(
        dir,
        url,
        Some(KEY),
        &["jobs", "--limit", "1", "--cursor", cursor],
    )
    .await;
    assert_eq!(code(&next), 0, "{}", text(&next.stderr));
    assert_eq!(text(&next.stdout).lines().count(), 1);
    assert_ne!(text(&next.stdout), text(&first.stdout));

    // A refused request is bad usage: a job id that is not one, a missing key.
    // A job id that is not one never reaches the server (no path to another route).
    let refused = jetscribe(dir, url, Some(KEY), &["status", "../jobs"]).await;
    assert_eq!(code(&refused), 2, "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("JOB_ID"),
        "{}",
        text(&refused.stderr)
    );
    let no_key = jetscribe(dir, url, None, &["jobs"]).await;
    assert_eq!(code(&no_key), 2, "{}", text(&no_key.stderr));
}

#[tokio::test]
async fn the_cli_exits_3_when_the_server_is_unreachable_and_2_on_bad_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 1 of the loopback.
    let unreachable = jetscribe(dir.path(), "http://127.0.0.1:1", None, &["jobs"]).await;
    assert_eq!(code(&unreachable), 3, "{}", text(&unreachable.stderr));
    let cases: [&[&str]; 3] = [
        &["submit"],
        &["submit", "missing.wav"],
        &["result", "x", "--format", "docx"],
    ];
    for args in cases {
        let output = jetscribe(dir.path(), "http://127.0.0.1:1", None, args).await;
        assert_eq!(code(&output), 2, "{args:?}: {}", text(&output.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_where_it_was_when_the_api_is_killed_and_restarted() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    // One window per batch: 69 s of speech take several batches, time to kill the API.
    let parts = ["api", "decoder", "transcriber", "analyzer", "notifier"];
    let mut app = TestApp::spawn_parts(&parts, &[("WHISPER_BATCH_SIZE", "1")]).await;
    let job_id = app.submit_job(&fixture("voxpopuli.ogg"), "").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut watch = tokio::process::Command::new(jetscribe_binary())
        .args(["watch", &job_id])
        .current_dir(dir.path())
        .env("JETSCRIBE_URL", &app.base_url)
        .env_remove("JETSCRIBE_API_KEY")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the client runs");
    let mut lines = BufReader::new(watch.stderr.take().expect("stderr")).lines();
    let mut log = Vec::new();
    let transcribing = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push(line);
            if log
                .last()
                .is_some_and(|line| line.starts_with("transcribe"))
            {
                return;
            }
        }
    })
    .await;
    assert!(transcribing.is_ok(), "{log:?}");

    // The API dies while the job is being transcribed and comes back on its address.
    let address = app.base_url.trim_start_matches("http://").to_owned();
    app.kill_part("api");
    let status_now = reqwest::get(app.url("/health")).await;
    assert!(status_now.is_err(), "the API is down");
    assert!(watch.try_wait().expect("waitable").is_none(), "{log:?}");
    app.start_part_with("api", &[("BIND_ADDR", address.as_str())]);

    // The client reconnects with Last-Event-ID and sees the rest of the job through.
    let rest = tokio::time::timeout(Duration::from_secs(300), async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push(line);
        }
        watch.wait().await.expect("the client ends")
    })
    .await;
    let exit = rest.unwrap_or_else(|_| panic!("the client ends: {log:?}"));
    assert_eq!(exit.code(), Some(0), "{log:?}");
    assert!(
        log.iter().any(|line| line.starts_with("analyze")),
        "{log:?}"
    );
    let (_, status) = app.get_json(&format!("/status/{job_id}")).await;
    assert_eq!(status["status"], "completed", "{status}");
}
