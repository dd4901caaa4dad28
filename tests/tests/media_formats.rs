//! Every common container and codec decodes and transcribes; media without sound fails clearly.
//! The inputs are made from the JFK clip by the real ffmpeg in the test.

use std::path::Path;

use jetscribe_tests::media::ffmpeg;
use jetscribe_tests::{JFK_REFERENCE, TestApp, fixture, word_error_rate};

/// Offset of a top-level MP4 box, by its type.
fn box_offset(file: &Path, kind: &[u8; 4]) -> Option<u64> {
    let bytes = std::fs::read(file).ok()?;
    let mut offset = 0usize;
    while offset + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[offset..offset + 4].try_into().ok()?) as usize;
        if &bytes[offset + 4..offset + 8] == kind {
            return Some(offset as u64);
        }
        if size < 8 {
            return None;
        }
        offset += size;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_and_video_containers_are_transcribed_and_silent_video_fails_naming_audio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jfk = fixture("jfk.flac");
    let jfk = jfk.to_str().expect("utf-8 path");
    let picture = ["-f", "lavfi", "-i", "color=c=navy:s=160x120:r=10:d=11"];
    let with_picture = |rest: &[&'static str]| -> Vec<&str> {
        let mut args = picture.to_vec();
        args.extend(["-i", jfk, "-map", "0:v", "-map", "1:a", "-shortest"]);
        args.extend(rest);
        args
    };
    let inputs = [
        ffmpeg(dir.path(), "speech.wav", &["-i", jfk]),
        ffmpeg(dir.path(), "speech.flac", &["-i", jfk, "-ac", "1"]),
        ffmpeg(
            dir.path(),
            "speech.mp3",
            &["-i", jfk, "-c:a", "libmp3lame", "-b:a", "64k"],
        ),
        ffmpeg(
            dir.path(),
            "speech.ogg",
            &["-i", jfk, "-c:a", "libopus", "-b:a", "32k"],
        ),
        ffmpeg(
            dir.path(),
            "speech.m4a",
            &["-i", jfk, "-c:a", "aac", "-b:a", "64k"],
        ),
        ffmpeg(
            dir.path(),
            "talk.mp4",
            &with_picture(&["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]),
        ),
        ffmpeg(
            dir.path(),
            "talk.mkv",
            &with_picture(&["-c:v", "mpeg4", "-c:a", "libopus"]),
        ),
        ffmpeg(
            dir.path(),
            "talk.webm",
            &with_picture(&["-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libopus"]),
        ),
    ];
    // ffmpeg writes the index (moov) after the media data (mdat) unless told to move it: these
    // files need a seekable input, which is why uploads are staged before decoding.
    for name in ["speech.m4a", "talk.mp4"] {
        let file = dir.path().join(name);
        let (moov, mdat) = (box_offset(&file, b"moov"), box_offset(&file, b"mdat"));
        assert!(
            moov.is_some() && mdat.is_some() && moov > mdat,
            "{name}: moov {moov:?} mdat {mdat:?}"
        );
    }
    let silent = ffmpeg(
        dir.path(),
        "silent-film.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=160x120:r=10:d=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );

    let app = TestApp::spawn(&[]).await;
    let mut jobs = Vec::new();
    for input in inputs.iter().chain([&silent]) {
        let name = input.file_name().expect("name").to_string_lossy();
        jobs.push((name.into_owned(), app.submit_job(input, "").await));
    }
    for (name, job_id) in &jobs {
        let status = app.wait_until_ended(job_id).await;
        if name == "silent-film.mp4" {
            assert_eq!(status["status"], "failed", "{status}");
            assert_eq!(
                status["error_message"],
                "no audio stream in silent-film.mp4"
            );
            continue;
        }
        assert_eq!(status["status"], "completed", "{name}: {status}");
        let duration = status["duration_s"].as_f64().expect("duration");
        assert!((duration - 11.0).abs() < 0.2, "{name}: duration {duration}");
        let (_, result) = app.get_json(&format!("/result/{job_id}")).await;
        let transcript = result["result"]["transcript"].as_str().expect("transcript");
        let wer = word_error_rate(JFK_REFERENCE, transcript);
        assert!(wer <= 0.10, "{name}: WER {wer:.3} for {transcript:?}");
    }
}
