//! Faults injected into a running deployment, each stage its own process against a real
//! nats-server: stage processes killed at random (chaos), the transcriber stopped and started
//! again and again during one job, the nats-server itself killed mid-job, and the object store
//! (a folder, and a real S3 server) down for half a minute. Nothing is lost, nothing runs twice to a client, and no process
//! needs a restart to recover.
//!
//! The CI runs short versions; `make chaos` runs them long (CHAOS_KILLS, CHAOS_JOBS,
//! CHAOS_MAX_S, ROLLING_RESTARTS) and prints a table.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jetscribe_tests::media::speech_every;
use jetscribe_tests::{
    JFK_REFERENCE, JOB_TIMEOUT, S3Server, TestApp, WebhookReceiver, fixture, wait_for,
    word_error_rate,
};

/// The stage processes of a deployment, each its own process.
const STAGES: [&str; 4] = ["decoder", "transcriber", "analyzer", "notifier"];

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

async fn spawn_deployment(extra_env: &[(&str, &str)]) -> TestApp {
    let mut parts = vec!["api"];
    parts.extend(STAGES);
    // A try stopped by SIGTERM is handed back a second later: these tests restart processes
    // in the middle of long jobs, which no grace would let finish.
    let mut env = vec![("JOB_ACK_WAIT", "3"), ("SHUTDOWN_GRACE", "1")];
    env.extend_from_slice(extra_env);
    TestApp::spawn_parts(&parts, &env).await
}

/// The transcript's word error rate against what its media says.
fn error_rate(result: &serde_json::Value, reference: &str) -> f64 {
    let transcript = result["result"]["transcript"].as_str().unwrap_or_default();
    word_error_rate(reference, transcript)
}

async fn status(app: &TestApp, job_id: &str) -> serde_json::Value {
    app.get_json(&format!("/status/{job_id}")).await.1
}

/// A job of the chaos run and what it should say.
struct ChaosJob {
    job_id: String,
    reference: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_processes_killed_at_random_lose_no_job_and_miss_no_webhook() {
    let kills_wanted = env_number("CHAOS_KILLS", 6);
    let jobs_per_round = env_number("CHAOS_JOBS", 4);
    let longest_s = env_number("CHAOS_MAX_S", 180);
    let seed = env_number("CHAOS_SEED", fastrand::usize(..10_000)) as u64;
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    // Media from seconds to minutes: the JFK clip alone, or a clip every 15 s of a longer file.
    let media: Vec<_> = [0, 60, 180, 600]
        .into_iter()
        .filter(|length_s| *length_s <= longest_s)
        .map(|length_s| match length_s {
            0 => (fixture("jfk.flac"), JFK_REFERENCE.to_owned()),
            _ => {
                let path = dir.path().join(format!("{length_s}s.wav"));
                (path.clone(), speech_every(&path, length_s, 15).reference)
            }
        })
        .collect();
    let mut hook = WebhookReceiver::start().await;
    let mut app = spawn_deployment(&[("WHISPER_BATCH_SIZE", "2")]).await;

    let started = Instant::now();
    let deadline = started + JOB_TIMEOUT * 4;
    let (mut jobs, mut kills, mut ended) = (Vec::<ChaosJob>::new(), 0, HashMap::new());
    loop {
        for job in &jobs {
            if ended.contains_key(&job.job_id) {
                continue;
            }
            let status = status(&app, &job.job_id).await;
            if matches!(status["status"].as_str(), Some("completed" | "failed")) {
                ended.insert(job.job_id.clone(), status);
            }
        }
        if ended.len() == jobs.len() {
            if kills >= kills_wanted {
                break;
            }
            for index in 0..jobs_per_round {
                let (path, reference) = &media[index % media.len()];
                let query = format!("?webhook_url={}", hook.url);
                let job_id = app.submit_job(path, &query).await;
                jobs.push(ChaosJob {
                    job_id,
                    reference: reference.clone(),
                });
            }
        }
        if Instant::now() > deadline {
            break;
        }
        // The faults come on a clock on purpose, so that they land anywhere in a job.
        tokio::time::sleep(Duration::from_millis(rng.u64(1000..4000))).await;
        if kills < kills_wanted {
            let stage = STAGES[rng.usize(..STAGES.len())];
            app.kill_part(stage);
            app.start_part(stage);
            kills += 1;
        }
    }

    // Every webhook arrives; count the deliveries per job.
    let mut deliveries: HashMap<String, usize> = HashMap::new();
    let webhooks_by = Instant::now() + Duration::from_secs(120);
    while deliveries.len() < ended.len() && Instant::now() < webhooks_by {
        if let Some(delivery) = hook.try_next(Duration::from_secs(1)).await {
            let job_id = delivery.body["job_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            *deliveries.entry(job_id).or_default() += 1;
        }
    }
    // Late repeats, if any, arrive within a few seconds.
    while let Some(delivery) = hook.try_next(Duration::from_secs(3)).await {
        let job_id = delivery.body["job_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *deliveries.entry(job_id).or_default() += 1;
    }
    let completed = ended
        .values()
        .filter(|status| status["status"] == "completed")
        .count();
    let duplicates: usize = deliveries.values().map(|n| n.saturating_sub(1)).sum();
    let lost = jobs.len() - ended.len();
    eprintln!(
        "\n| seed | faults injected | jobs | completed | failed | lost | webhooks | duplicate webhooks | minutes |\n|---|---|---|---|---|---|---|---|---|\n| {seed} | {kills} | {} | {completed} | {} | {lost} | {} | {duplicates} | {:.1} |\n",
        jobs.len(),
        ended.len() - completed,
        deliveries.values().sum::<usize>(),
        started.elapsed().as_secs_f64() / 60.0,
    );

    assert_eq!(lost, 0, "jobs never ended (seed {seed})");
    for job in &jobs {
        let status = &ended[&job.job_id];
        assert_eq!(status["status"], "completed", "seed {seed}: {status}");
        let (_, result) = app.get_json(&format!("/result/{}", job.job_id)).await;
        let wer = error_rate(&result, &job.reference);
        assert!(wer < 0.2, "seed {seed}: WER {wer:.3}: {result}");
        let delivered = deliveries.get(&job.job_id).copied().unwrap_or(0);
        assert!(
            (1..=2).contains(&delivered),
            "seed {seed}: job {} got {delivered} webhooks",
            job.job_id
        );
    }
    assert!(kills >= kills_wanted.min(1), "no fault was injected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcriber_stopped_again_and_again_resumes_each_time_from_its_checkpoint() {
    let restarts = env_number("ROLLING_RESTARTS", 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let media = dir.path().join("long.wav");
    let speech = speech_every(&media, env_number("ROLLING_LENGTH_S", 300), 15);
    let mut app = spawn_deployment(&[("WHISPER_BATCH_SIZE", "1")]).await;
    let job_id = app.submit_job(&media, "").await;

    let mut resumed_from = Vec::new();
    for _ in 0..restarts {
        // A batch done since this transcriber started, then a SIGTERM: it hands the job back.
        let before = status(&app, &job_id).await["progress"]
            .as_u64()
            .unwrap_or(0);
        wait_for("a batch to be done", Duration::from_secs(300), || {
            let app = &app;
            let job_id = &job_id;
            async move {
                let status = status(app, job_id).await;
                let progress = status["progress"].as_u64().unwrap_or(0);
                (status["step"] == "transcribing" && progress > before.max(15)).then_some(())
            }
        })
        .await;
        let exit = app.terminate_part("transcriber");
        assert!(
            exit.success(),
            "the transcriber exits cleanly on SIGTERM: {exit}"
        );
        app.start_part("transcriber");
        let last = resumed_from.last().copied().unwrap_or(0.0);
        let resumed = wait_for("the job to resume", Duration::from_secs(120), || {
            let app = &app;
            let job_id = &job_id;
            async move {
                let status = status(app, job_id).await;
                let resumed = status["stages"]["transcribe"]["resumed_from_s"].as_f64()?;
                (resumed > last).then_some(resumed)
            }
        })
        .await;
        resumed_from.push(resumed);
    }

    let (ended, _) = app.follow_status_for(&job_id, JOB_TIMEOUT).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    eprintln!("resumed from {resumed_from:?} s");
    // Hand-backs on shutdown are not tries, let alone failed ones.
    let run = &ended["stages"]["transcribe"];
    assert_eq!(run["attempts"], 1, "{run}");
    assert_eq!(run["failures"], 0, "{run}");
    let (_, result) = app.get_json(&format!("/result/{job_id}")).await;
    let wer = error_rate(&result, &speech.reference);
    assert!(wer < 0.15, "WER {wer:.3}");
}

/// Whether a file named `name` lies anywhere under `dir`.
fn file_under(dir: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let path = entry.path();
            match path.is_dir() {
                true => file_under(&path, name),
                false => entry.file_name() == name,
            }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcriber_stopped_on_the_second_channel_of_a_split_job_resumes_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (left, right) = (dir.path().join("left.wav"), dir.path().join("right.wav"));
    let left_speech = speech_every(&left, 120, 30);
    let right_speech = speech_every(&right, 120, 20);
    let call = jetscribe_tests::media::stereo(dir.path(), &left, &right, "call.wav");
    let mut app = spawn_deployment(&[("WHISPER_BATCH_SIZE", "1")]).await;
    let job_id = app.submit_job(&call, "?channels=split&language=en").await;

    // The left channel done and a batch of the right one: stop the transcriber there.
    let data = app.data_dir.path().to_owned();
    wait_for("a checkpoint of the second channel", JOB_TIMEOUT, || {
        let found = file_under(&data, "transcribe.ch1.checkpoint.json");
        async move { found.then_some(()) }
    })
    .await;
    let exit = app.terminate_part("transcriber");
    assert!(exit.success(), "the transcriber exits cleanly: {exit}");
    app.start_part("transcriber");

    let (ended, _) = app.follow_status_for(&job_id, JOB_TIMEOUT).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    let run = &ended["stages"]["transcribe"];
    assert_eq!(
        (run["attempts"].as_u64(), run["failures"].as_u64()),
        (Some(1), Some(0)),
        "{run}"
    );
    // The last channel to resume was the second, part of the way in.
    let resumed = run["resumed_from_s"].as_f64().expect("resumed_from_s");
    assert!(resumed > 0.0 && resumed < 120.0, "{run}");
    let (_, result) = app.get_json(&format!("/result/{job_id}")).await;
    let segments = result["result"]["segments"].as_array().expect("segments");
    for (channel, speech) in [(0, &left_speech), (1, &right_speech)] {
        let heard: Vec<&str> = segments
            .iter()
            .filter(|segment| segment["channel"] == channel)
            .map(|segment| segment["text"].as_str().expect("text"))
            .collect();
        let wer = word_error_rate(&speech.reference, &heard.join(" "));
        assert!(wer < 0.15, "channel {channel}: WER {wer:.3}: {heard:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_killed_mid_job_comes_back_and_every_job_completes_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let minute = dir.path().join("minute.wav");
    let minute_speech = speech_every(&minute, 60, 15).reference;
    let mut app = spawn_deployment(&[]).await;
    let jfk = fixture("jfk.flac");
    let jobs = [
        (app.submit_job(&minute, "").await, minute_speech),
        (app.submit_job(&jfk, "").await, JFK_REFERENCE.to_owned()),
        (app.submit_job(&jfk, "").await, JFK_REFERENCE.to_owned()),
    ];
    wait_for(
        "the first job to be transcribed",
        Duration::from_secs(120),
        || {
            let app = &app;
            let job_id = &jobs[0].0;
            async move { (status(app, job_id).await["step"] == "transcribing").then_some(()) }
        },
    )
    .await;

    app.restart_nats();

    for (job_id, reference) in &jobs {
        let (ended, _) = app.follow_status_for(job_id, JOB_TIMEOUT).await;
        assert_eq!(ended["status"], "completed", "{ended}");
        let (_, result) = app.get_json(&format!("/result/{job_id}")).await;
        let wer = error_rate(&result, reference);
        assert!(wer < 0.15, "WER {wer:.3}");
    }
    assert_eq!(
        app.exited_parts(),
        Vec::<String>::new(),
        "every process reconnected by itself"
    );
}

/// Two jobs placed for an outage of the object store: a long one being transcribed, and a
/// short one waiting for a decoder (stopped here; the test starts it once the store is down).
struct JobsAtBothStages {
    /// Job id and what its media says.
    jobs: [(String, String); 2],
    _media: tempfile::TempDir,
}

async fn jobs_at_both_stages(app: &mut TestApp) -> JobsAtBothStages {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = dir.path().join("long.wav");
    let long_speech = speech_every(&long, 180, 15).reference;
    let long_job = app.submit_job(&long, "").await;
    wait_for(
        "the long job to be transcribed",
        Duration::from_secs(120),
        || {
            let (app, job_id) = (&*app, &long_job);
            async move { (status(app, job_id).await["step"] == "transcribing").then_some(()) }
        },
    )
    .await;
    assert!(app.terminate_part("decoder").success());
    let short_job = app.submit_job(&fixture("jfk.flac"), "").await;
    JobsAtBothStages {
        jobs: [
            (long_job, long_speech),
            (short_job, JFK_REFERENCE.to_owned()),
        ],
        _media: dir,
    }
}

/// Waits for each job to end; checks it completed with its transcript. Returns the last
/// `/status` of each.
async fn assert_completed(app: &TestApp, placed: &JobsAtBothStages) -> Vec<serde_json::Value> {
    let mut ended_all = Vec::new();
    for (job_id, reference) in &placed.jobs {
        let (ended, _) = app.follow_status_for(job_id, JOB_TIMEOUT).await;
        assert_eq!(ended["status"], "completed", "{ended}");
        let (_, result) = app.get_json(&format!("/result/{job_id}")).await;
        let wer = error_rate(&result, reference);
        assert!(wer < 0.15, "WER {wer:.3}");
        ended_all.push(ended);
    }
    ended_all
}

/// Sets the permission bits of `path`; returns the ones it had.
fn set_mode(path: &std::path::Path, mode: u32) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let before = std::fs::metadata(path)
        .expect("the folder exists")
        .permissions();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    before.mode() & 0o7777
}

/// The object store (a folder here) made unreadable and unwritable for OUTAGE_S (30) seconds
/// while one job is being transcribed and another waits for the decoder: both stages wait for
/// it with backoff, counting outages, not failed tries (a single failed try would fail a job
/// here), and both jobs complete; an upload meanwhile is refused with 503 and Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_down_for_half_a_minute_fails_no_job() {
    let outage = Duration::from_secs(env_number("OUTAGE_S", 30) as u64);
    let mut parts = vec!["api"];
    parts.extend(STAGES);
    let env = [
        ("JOB_ACK_WAIT", "3"),
        ("JOB_MAX_ATTEMPTS", "1"),
        ("WHISPER_BATCH_SIZE", "1"),
    ];
    let mut app = TestApp::spawn_parts_unprivileged(&parts, &env).await;
    let placed = jobs_at_both_stages(&mut app).await;
    let [(long_job, _), (short_job, _)] = &placed.jobs;

    let store = app.data_dir.path().join("blobs");
    let down_since = Instant::now();
    let mode = set_mode(&store, 0o000);
    let mut launcher = jetscribe_tests::app::unprivileged_launcher();
    launcher.extend(["ls".to_owned(), store.display().to_string()]);
    let listed = std::process::Command::new(&launcher[0])
        .args(&launcher[1..])
        .output()
        .expect("ls runs");
    assert!(
        !listed.status.success(),
        "the app's processes can still read {}: the outage cannot be made here",
        store.display()
    );
    let refused = app.submit(&fixture("jfk.flac"), "").await;
    assert_eq!(refused.status(), 503, "an upload while the store is down");
    assert!(refused.headers().contains_key("retry-after"));
    app.start_part("decoder");
    wait_for(
        "both stages to meet the outage",
        Duration::from_secs(120),
        || {
            let app = &app;
            async move {
                let long = status(app, long_job).await;
                let short = status(app, short_job).await;
                let outages = |status: &serde_json::Value, stage: &str| {
                    status["stages"][stage]["outages"].as_u64().unwrap_or(0)
                };
                (outages(&long, "transcribe") > 0 && outages(&short, "decode") > 0).then_some(())
            }
        },
    )
    .await;
    // The fault lasts its length (a clock, not a state to wait for).
    tokio::time::sleep(outage.saturating_sub(down_since.elapsed())).await;
    set_mode(&store, mode);

    for ended in assert_completed(&app, &placed).await {
        let stages = ended["stages"].as_object().expect("stages");
        for (stage, run) in stages {
            assert_eq!(run["failures"], 0, "{stage}: {run}");
        }
    }
}

/// The object store a real S3 server (SeaweedFS), stopped for OUTAGE_S (30) seconds while one
/// job is being transcribed and another waits for the decoder: the S3 client retries with
/// backoff, then the stages, and both jobs complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_server_stopped_for_half_a_minute_fails_no_job() {
    let outage = Duration::from_secs(env_number("OUTAGE_S", 30) as u64);
    let mut s3 = S3Server::start().await;
    let s3_env = s3.env();
    let mut env: Vec<(&str, &str)> = s3_env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    env.push(("WHISPER_BATCH_SIZE", "1"));
    let mut app = spawn_deployment(&env).await;
    let placed = jobs_at_both_stages(&mut app).await;

    s3.stop();
    app.start_part("decoder");
    // The fault lasts its length (a clock, not a state to wait for).
    tokio::time::sleep(outage).await;
    s3.start_again().await;

    assert_completed(&app, &placed).await;
    assert_eq!(app.exited_parts(), Vec::<String>::new());
}
