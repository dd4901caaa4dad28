//! Uploads made to hurt: playlists and lists that name files on the server or URLs, and
//! duration bombs, one with a header that lies. ffprobe and ffmpeg read only local files through
//! an allow-list of container formats, and nothing longer than MAX_DURATION is decoded.

use std::path::Path;

use jetscribe_tests::media::ffmpeg;
use jetscribe_tests::{TestApp, Tripwire, fixture};

/// Submits each file; returns the `/status` of each once its job has ended.
async fn run_jobs(app: &TestApp, files: &[&Path]) -> Vec<serde_json::Value> {
    let mut ids = Vec::new();
    for file in files {
        ids.push(app.submit_job(file, "").await);
    }
    let mut ended = Vec::new();
    for id in &ids {
        ended.push(app.wait_until_ended(id).await);
    }
    ended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_and_lists_that_name_local_files_or_urls_are_refused_and_read_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jfk = fixture("jfk.flac");
    let speech = ffmpeg(
        dir.path(),
        "speech.wav",
        &["-i", jfk.to_str().expect("utf-8")],
    );
    let speech = speech.to_str().expect("utf-8 path");
    let tripwire = Tripwire::start().await;
    let playlist = |entry: &str| {
        format!("#EXTM3U\n#EXT-X-TARGETDURATION:11\n#EXTINF:11,\n{entry}\n#EXT-X-ENDLIST\n")
    };
    let hostile = [
        ("local.m3u8", playlist(speech)),
        ("file-url.m3u8", playlist(&format!("file://{speech}"))),
        (
            "remote.m3u8",
            playlist(&format!("{}/speech.wav", tripwire.url)),
        ),
        // An extension that lies changes nothing: the content is what is probed.
        ("playlist.mp3", playlist(speech)),
        (
            "list.ffconcat",
            format!("ffconcat version 1.0\nfile {speech}\n"),
        ),
        (
            "remote.ffconcat",
            format!("ffconcat version 1.0\nfile {}/speech.wav\n", tripwire.url),
        ),
    ];
    let mut files = Vec::new();
    for (name, content) in &hostile {
        let file = dir.path().join(name);
        std::fs::write(&file, content).expect("written");
        files.push(file);
    }
    let app = TestApp::spawn(&[]).await;
    let refs: Vec<&Path> = files.iter().map(|file| file.as_path()).collect();
    for ((name, _), status) in hostile.iter().zip(run_jobs(&app, &refs).await) {
        assert_eq!(status["status"], "failed", "{name}: {status}");
        let error = status["error_message"].as_str().expect("a reason");
        let format = if name.ends_with(".ffconcat") {
            "concat"
        } else {
            "hls"
        };
        assert_eq!(
            error,
            format!("cannot decode {name}: unsupported format {format}"),
            "{status}"
        );
        let job_id = status["job_id"].as_str().expect("job_id");
        let (code, result) = app.get_json(&format!("/result/{job_id}")).await;
        assert_eq!(code, 500, "{result}");
        assert!(!result.to_string().contains("country"), "{result}");
        let audio = app
            .data_dir
            .path()
            .join(format!("blobs/jobs/{job_id}/audio.s16le"));
        assert!(!audio.exists(), "{name}: audio was decoded");
    }
    assert_eq!(tripwire.hits(), 0, "a URL named in an upload was fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_longer_than_max_duration_is_refused_even_when_its_header_lies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let silence = ["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono"];
    let with = |rest: &[&'static str]| [&silence[..], rest].concat();
    // Twenty minutes of silence: 220 KB of FLAC.
    let bomb = ffmpeg(
        dir.path(),
        "bomb.flac",
        &with(&["-t", "1200", "-c:a", "flac"]),
    );
    // Twenty minutes, then one second chained after them: the Ogg duration ffprobe reads is the
    // last stream's, one second.
    let long = ffmpeg(
        dir.path(),
        "long.ogg",
        &with(&["-t", "1200", "-c:a", "libvorbis"]),
    );
    let short = ffmpeg(
        dir.path(),
        "short.ogg",
        &with(&["-t", "1", "-c:a", "libvorbis"]),
    );
    let chained = dir.path().join("chained.ogg");
    let bytes = [
        std::fs::read(&long).expect("long"),
        std::fs::read(&short).expect("short"),
    ];
    std::fs::write(&chained, bytes.concat()).expect("chained");

    let app = TestApp::spawn(&[("MAX_DURATION", "10m")]).await;
    let ended = run_jobs(&app, &[bomb.as_path(), chained.as_path()]).await;
    let expected = [
        "bomb.flac is 0:20:00 long; MAX_DURATION is 0:10:00",
        "chained.ogg is longer than MAX_DURATION (0:10:00), whatever its header says",
    ];
    for (status, reason) in ended.iter().zip(expected) {
        assert_eq!(status["status"], "failed", "{status}");
        assert_eq!(status["error_message"], reason, "{status}");
        let job_id = status["job_id"].as_str().expect("job_id");
        let audio = app
            .data_dir
            .path()
            .join(format!("blobs/jobs/{job_id}/audio.s16le"));
        assert!(!audio.exists(), "{reason}: audio was kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_ffprobe_fails_the_job_with_a_timeout_and_the_stage_takes_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hung = dir.path().join("ffprobe");
    std::fs::write(&hung, "#!/bin/sh\nexec sleep 600\n").expect("script");
    let mut permissions = std::fs::metadata(&hung).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&hung, permissions).expect("chmod");
    let hung = hung.display().to_string();
    let settings = [
        ("FFPROBE_PATH", hung.as_str()),
        ("PROBE_TIMEOUT", "2"),
        ("MAX_CONCURRENT_JOBS", "1"),
    ];
    let app = TestApp::spawn_parts(&["api", "decoder"], &settings).await;
    let jfk = fixture("jfk.flac");
    let first = app.submit_job(&jfk, "").await;
    let second = app.submit_job(&jfk, "").await;
    for job_id in [first, second] {
        let ended = app.wait_until_ended(&job_id).await;
        assert_eq!(ended["status"], "failed", "{ended}");
        let reason = ended["error_message"].as_str().unwrap_or_default();
        assert!(
            reason.contains("ffprobe did not finish within 2 s"),
            "{reason}"
        );
    }
}
