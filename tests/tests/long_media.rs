//! Half an hour of media, assembled in the test from real speech and silence, through a
//! pipeline whose stages run as separate processes: the transcriber is killed mid-job, a new
//! one resumes from its checkpoint, and memory stays bounded.

use std::path::Path;
use std::time::Duration;

use jetscribe_tests::media::{SAMPLE_RATE, decode, write_wav};
use jetscribe_tests::{TestApp, fixture, peak_rss_bytes, wait_for};
use proto_msgs::Stage;

const TOTAL_S: usize = 30 * 60;

/// 30 minutes: the two clips placed at fixed times, silence everywhere else.
fn assemble_half_hour(path: &Path) -> Vec<(usize, &'static str)> {
    let vox = decode(&fixture("voxpopuli.ogg"));
    let jfk = decode(&fixture("jfk.flac"));
    let placements: Vec<(usize, &'static str, &Vec<i16>)> = vec![
        (20, "ivory", &vox),
        (400, "country", &jfk),
        (900, "ivory", &vox),
        (1500, "country", &jfk),
        (1760, "country", &jfk),
    ];
    let mut samples = vec![0i16; TOTAL_S * SAMPLE_RATE];
    for (at_s, _, clip) in &placements {
        let at = at_s * SAMPLE_RATE;
        samples[at..at + clip.len()].copy_from_slice(clip);
    }
    write_wav(path, &samples);
    placements
        .into_iter()
        .map(|(at, word, _)| (at, word))
        .collect()
}

const MEMORY_BOUND: u64 = 1536 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_an_hour_survives_a_killed_transcriber_and_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let media = dir.path().join("half-hour.wav");
    let placements = assemble_half_hour(&media);

    let mut app = TestApp::spawn_parts(
        &["api", "decoder", "transcriber", "analyzer", "notifier"],
        &[("JOB_ACK_WAIT", "3"), ("WHISPER_BATCH_SIZE", "1")],
    )
    .await;
    let job_id = app.submit_job(&media, "").await;

    // Once the first batch is checkpointed, the transcriber dies without warning.
    let checkpoint = app
        .data_dir
        .path()
        .join(format!("blobs/jobs/{job_id}/transcribe.checkpoint.json"));
    wait_for("the first checkpoint", Duration::from_secs(300), || {
        let exists = checkpoint.is_file();
        async move { exists.then_some(()) }
    })
    .await;
    let first = app.pid_of("transcriber").expect("transcriber running");
    let first_peak = peak_rss_bytes(first).expect("VmHWM");
    app.kill_part("transcriber");
    let second = app.start_part("transcriber");

    let (status, progress_seen) = app
        .follow_status_for(&job_id, Duration::from_secs(600))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    assert!(
        progress_seen.windows(2).all(|p| p[0] <= p[1]),
        "{progress_seen:?}"
    );
    let duration = status["duration_s"].as_f64().expect("duration");
    assert!(
        (duration - TOTAL_S as f64).abs() < 0.5,
        "duration {duration}"
    );
    let second_peak = peak_rss_bytes(second).expect("VmHWM");
    eprintln!(
        "transcriber peak RSS: first {} MiB, second {} MiB",
        first_peak >> 20,
        second_peak >> 20
    );
    for peak in [first_peak, second_peak] {
        assert!(
            peak < MEMORY_BOUND,
            "transcriber peak RSS {} MiB",
            peak >> 20
        );
    }

    // The second transcriber resumed where the first one's checkpoint said.
    let record = app
        .pipeline()
        .await
        .jobs()
        .get(job_id.parse().expect("uuid"))
        .await
        .expect("read")
        .expect("record");
    let run = &record.stages[&Stage::Transcribe];
    assert!(run.attempts >= 2, "{run:?}");
    assert!(run.resumed_from_s.is_some_and(|s| s > 0.0), "{run:?}");
    eprintln!("second transcriber resumed from {:?} s", run.resumed_from_s);

    let (_, result) = app.get_json(&format!("/result/{job_id}")).await;
    let segments = result["result"]["segments"].as_array().expect("segments");
    let mut previous_end = 0.0;
    for segment in segments {
        let start = segment["start"].as_f64().expect("start");
        let end = segment["end"].as_f64().expect("end");
        assert!(
            start >= previous_end && end >= start && end <= TOTAL_S as f64,
            "{segment}"
        );
        previous_end = end;
    }
    // Each placed clip is found near where it was put: silence was skipped, not shifted.
    for (at_s, word) in placements {
        let found = segments.iter().any(|segment| {
            let start = segment["start"].as_f64().unwrap_or(-1.0);
            (at_s as f64 - 1.0..at_s as f64 + 75.0).contains(&start)
                && segment["text"]
                    .as_str()
                    .is_some_and(|t| t.to_lowercase().contains(word))
        });
        assert!(
            found,
            "no segment near {at_s} s says {word:?}: {segments:?}"
        );
    }
}
