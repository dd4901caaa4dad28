//! Half an hour of media, assembled in the test from real speech and silence, through a
//! pipeline whose stages run as separate processes: the transcriber is killed mid-job, a new
//! one resumes from its checkpoint, and memory stays bounded.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use jetscribe_nats::{Pipeline, PipelineSettings};
use jetscribe_tests::{TestApp, fixture, peak_rss_bytes, wait_for};

const SAMPLE_RATE: usize = 16_000;
const TOTAL_S: usize = 30 * 60;

/// A clip as 16 kHz mono samples, decoded by ffmpeg.
fn decode(clip: &Path) -> Vec<i16> {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(clip)
        .args(["-f", "s16le", "-ac", "1", "-ar", "16000", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(output.status.success());
    output
        .stdout
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect()
}

/// Writes a 16-bit mono WAV file.
fn write_wav(path: &Path, samples: &[i16]) {
    let data_len = (samples.len() * 2) as u32;
    let mut bytes = Vec::with_capacity(44 + data_len as usize);
    bytes.extend(b"RIFF");
    bytes.extend((36 + data_len).to_le_bytes());
    bytes.extend(b"WAVEfmt ");
    bytes.extend(16u32.to_le_bytes());
    bytes.extend(1u16.to_le_bytes()); // PCM
    bytes.extend(1u16.to_le_bytes()); // mono
    bytes.extend((SAMPLE_RATE as u32).to_le_bytes());
    bytes.extend((SAMPLE_RATE as u32 * 2).to_le_bytes());
    bytes.extend(2u16.to_le_bytes());
    bytes.extend(16u16.to_le_bytes());
    bytes.extend(b"data");
    bytes.extend(data_len.to_le_bytes());
    for sample in samples {
        bytes.extend(sample.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("wav written");
}

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
    let response = app.submit(&media, "").await;
    assert_eq!(response.status(), 202);
    let accepted: serde_json::Value = response.json().await.expect("json");
    let job_id = accepted["job_id"].as_str().expect("job_id").to_owned();

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

    let deadline = Instant::now() + Duration::from_secs(600);
    let mut progress_seen = Vec::new();
    let status = loop {
        let (_, status) = app.get_json(&format!("/status/{job_id}")).await;
        progress_seen.push(status["progress"].as_u64().expect("progress"));
        if matches!(status["status"].as_str(), Some("completed" | "failed")) {
            break status;
        }
        assert!(Instant::now() < deadline, "job did not end: {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
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
    let pipeline = Pipeline::connect(PipelineSettings::new(app.nats_url.clone()))
        .await
        .expect("pipeline");
    let record = pipeline
        .jobs()
        .get(job_id.parse().expect("uuid"))
        .await
        .expect("read")
        .expect("record");
    let run = &record.stages["transcribe"];
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
