//! The whole service, black-box: the real binary, a real nats-server, real ffmpeg and the real
//! Whisper base model, driven through HTTP as a user would.

use std::time::Duration;

use futures::StreamExt;
use jetscribe_tests::app::jetscribe_binary;
use jetscribe_tests::{
    JFK_REFERENCE, TestApp, TraceCollector, WebhookReceiver, assert_refused, fixture,
    word_error_rate,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use proto_msgs::{EventKind, JobEvent, Stage};

/// Checks SRT-style cue blocks (WebVTT without its header has the same shape, with `.` before
/// the milliseconds and no index lines): times in order, at most 2 lines of 42 characters and
/// 7 s per cue, and all the words of `transcript`.
fn assert_subtitles(cues: &str, decimal: &str, transcript: &str) {
    let seconds = |stamp: &str| -> f64 {
        let (clock, millis) = stamp.split_once(decimal).expect("milliseconds");
        let parts: Vec<f64> = clock
            .split(':')
            .map(|p| p.parse().expect("number"))
            .collect();
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2] + millis.parse::<f64>().expect("ms") / 1000.0
    };
    let mut words = Vec::new();
    let mut previous_end = 0.0;
    let blocks: Vec<&str> = cues
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .collect();
    assert!(!blocks.is_empty(), "no cues in {cues:?}");
    for (index, block) in blocks.iter().enumerate() {
        let mut lines = block.lines();
        if decimal == "," {
            assert_eq!(
                lines.next(),
                Some((index + 1).to_string().as_str()),
                "{block}"
            );
        }
        let timing = lines.next().expect("timing line");
        let (start, end) = timing.split_once(" --> ").expect("arrow");
        let (start, end) = (seconds(start), seconds(end));
        assert!(
            start >= previous_end - 1e-3 && end >= start && end - start <= 7.0 + 1e-3,
            "{block}"
        );
        previous_end = end;
        let text: Vec<&str> = lines.collect();
        assert!((1..=2).contains(&text.len()), "{block}");
        assert!(
            text.iter().all(|line| line.chars().count() <= 42),
            "{block}"
        );
        words.extend(text.iter().flat_map(|line| line.split_whitespace()));
    }
    assert_eq!(
        words.join(" "),
        transcript.split_whitespace().collect::<Vec<_>>().join(" ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jfk_clip_is_transcribed_end_to_end_with_webhook_and_events() {
    let mut hook = WebhookReceiver::start().await;
    let app = TestApp::spawn(&[]).await;

    let response = app
        .submit(&fixture("jfk.flac"), &format!("?webhook_url={}", hook.url))
        .await;
    assert_eq!(response.status(), 202);
    let accepted: serde_json::Value = response.json().await.expect("json");
    assert_eq!(accepted["status"], "pending");
    assert!(accepted["created_at"].is_string());
    let job_id = accepted["job_id"].as_str().expect("job_id").to_owned();

    let (last, progress) = app.follow_status(&job_id).await;
    assert_eq!(last["status"], "completed", "{last}");
    assert!(
        progress.windows(2).all(|pair| pair[0] <= pair[1]),
        "progress went back: {progress:?}"
    );
    assert_eq!(progress.last(), Some(&100));

    let (code, result) = app.get_json(&format!("/result/{job_id}")).await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["status"], "completed");
    assert!(result["completed_at"].is_string());
    let transcript = result["result"]["transcript"].as_str().expect("transcript");
    let wer = word_error_rate(JFK_REFERENCE, transcript);
    assert!(wer <= 0.10, "WER {wer:.3} for {transcript:?}");
    let language = &result["result"]["language_detection"];
    assert_eq!(language["language"], "en", "{language}");
    assert_eq!(language["source"], "whisper", "{language}");
    assert_eq!(language["text_check"]["language"], "en", "{language}");
    assert!(
        language["text_check"]["confidence"].is_number(),
        "{language}"
    );
    let topics = result["result"]["topics"].as_array().expect("topics");
    assert!(topics.iter().any(|t| t["text"] == "country"), "{topics:?}");
    assert_eq!(topics[0]["score"], 1.0, "{topics:?}");
    let stats = &result["result"]["stats"];
    assert_eq!(stats["words"], 22, "{stats}");
    let speech_s = stats["speech_s"].as_f64().expect("speech_s");
    let silence_s = stats["silence_s"].as_f64().expect("silence_s");
    assert!((speech_s + silence_s - 11.0).abs() < 0.01, "{stats}");
    assert!(
        stats["words_per_minute"]
            .as_f64()
            .is_some_and(|wpm| wpm > 60.0),
        "{stats}"
    );
    let segments = result["result"]["segments"].as_array().expect("segments");
    assert!(!segments.is_empty());
    let mut previous_end = 0.0;
    for segment in segments {
        let (start, end) = (
            segment["start"].as_f64().expect("start"),
            segment["end"].as_f64().expect("end"),
        );
        assert!(
            start >= previous_end && end >= start && end <= 11.5,
            "{segments:?}"
        );
        previous_end = end;
    }

    // The same result as files.
    let text = app.get_text(&format!("/result/{job_id}?format=txt")).await;
    assert_eq!(text, format!("{transcript}\n"));
    let srt = app.get_text(&format!("/result/{job_id}?format=srt")).await;
    assert_subtitles(&srt, ",", transcript);
    // Cues end at clauses: the first no longer ends "…can do for", the next beginning "you,".
    for cue in srt.split("\n\n").filter(|cue| !cue.trim().is_empty()) {
        assert!(cue.trim_end().ends_with([',', '.']), "{srt}");
    }
    let vtt = app.get_text(&format!("/result/{job_id}?format=vtt")).await;
    let cues = vtt.strip_prefix("WEBVTT\n\n").expect("WebVTT header");
    assert_subtitles(cues, ".", transcript);
    app.get_refused(&format!("/result/{job_id}?format=docx"), 400, "format:")
        .await;

    let webhook = hook.next(Duration::from_secs(60)).await;
    assert_eq!(webhook["job_id"], job_id.as_str());
    assert_eq!(webhook["status"], "completed");
    assert!(webhook["completed_at"].is_string());
    assert_eq!(webhook["result"]["transcript"], transcript);

    // The job's history replays from JETSCRIBE_EVENTS, in order, ending with `completed`.
    let client = async_nats::connect(&app.nats_url).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(proto_msgs::EVENTS_STREAM)
        .await
        .expect("events stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: proto_msgs::events_subject(job_id.parse().expect("uuid")),
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut kinds = Vec::new();
    while kinds.last() != Some(&EventKind::Completed) {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("events keep coming until completed")
            .expect("stream open")
            .expect("message");
        let event: JobEvent = proto_msgs::decode(&message.payload).expect("event decodes");
        assert_eq!(event.job_id.to_string(), job_id);
        kinds.push(event.kind);
    }
    assert_eq!(kinds.first(), Some(&EventKind::Submitted), "{kinds:?}");
    for stage_event in [EventKind::StageStarted, EventKind::StageCompleted] {
        assert!(kinds.contains(&stage_event), "{kinds:?}");
    }
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Completed).count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_media_fails_with_a_clear_error() {
    let mut hook = WebhookReceiver::start().await;
    let app = TestApp::spawn(&[]).await;
    let not_media = app.data_dir.path().join("notes.mp3");
    std::fs::write(&not_media, "these are plain words, not sound\n".repeat(100)).expect("write");

    let job_id = app
        .submit_job(&not_media, &format!("?webhook_url={}", hook.url))
        .await;
    let (last, _) = app.follow_status(&job_id).await;
    assert_eq!(last["status"], "failed", "{last}");
    let error = last["error_message"].as_str().expect("error_message");
    assert!(error.contains("notes.mp3"), "{error}");

    let (code, result) = app.get_json(&format!("/result/{job_id}")).await;
    assert_eq!(code, 500);
    assert_eq!(result["status"], "failed");
    assert_eq!(result["error_message"], error);

    let webhook = hook.next(Duration::from_secs(60)).await;
    assert_eq!(webhook["status"], "failed");
    assert_eq!(webhook["error_message"], error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_job_ids_are_told_apart_and_bad_input_is_refused() {
    let mut app = TestApp::spawn(&[]).await;
    let unknown = uuid::Uuid::now_v7();
    assert_eq!(app.get_json(&format!("/status/{unknown}")).await.0, 404);
    assert_eq!(app.get_json(&format!("/result/{unknown}")).await.0, 404);
    app.get_refused("/status/not-a-uuid", 400, "job_id").await;

    // A bad webhook_url is refused before anything is stored, naming the field.
    let response = app
        .submit(&fixture("jfk.flac"), "?webhook_url=ftp://example.org/x")
        .await;
    assert_refused(response, 422, "webhook_url").await;
    let (code, processing) = app.get_json("/jobs/processing").await;
    assert_eq!(code, 200);
    assert_eq!(processing["count"], 0, "{processing}");
    assert_eq!(
        processing["stages"].as_array().map(Vec::len),
        Some(Stage::ALL.len()),
        "{processing}"
    );

    // A request without a file names the missing field.
    let response = app
        .http
        .post(app.url("/process"))
        .multipart(reqwest::multipart::Form::new().text("language", "en"))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("file")),
        "{body}"
    );

    // SIGTERM stops the whole service cleanly within 10 s.
    let status = app
        .terminate(Duration::from_secs(10))
        .expect("exits within 10 s");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_timestamps_time_every_word_inside_its_segment() {
    let app = TestApp::spawn(&[]).await;

    let response = app
        .submit(&fixture("jfk.flac"), "?word_timestamps=maybe")
        .await;
    assert_refused(response, 422, "word_timestamps").await;

    // Asked for as a form field, as the original service's clients send options.
    let fields = [("word_timestamps", "true")];
    let response = app
        .post_file("/process", &fixture("jfk.flac"), &fields)
        .await;
    assert_eq!(response.status(), 202);
    let accepted: serde_json::Value = response.json().await.expect("json");
    let job_id = accepted["job_id"].as_str().expect("job_id").to_owned();
    let (status, _) = app.follow_status(&job_id).await;
    assert_eq!(status["status"], "completed", "{status}");

    let (code, body) = app.get_json(&format!("/result/{job_id}")).await;
    assert_eq!(code, 200, "{body}");
    let segments = body["result"]["segments"].as_array().expect("segments");
    let mut spoken = Vec::new();
    let mut previous_end = 0.0;
    for segment in segments {
        let (start, end) = (segment["start"].as_f64(), segment["end"].as_f64());
        let (start, end) = (start.expect("start"), end.expect("end"));
        let words = segment["words"].as_array().expect("words in every segment");
        assert!(!words.is_empty(), "{segment}");
        for word in words {
            let (word_start, word_end) = (word["start"].as_f64(), word["end"].as_f64());
            let (word_start, word_end) = (word_start.expect("start"), word_end.expect("end"));
            assert!(
                word_start >= previous_end - 1e-3
                    && word_end >= word_start
                    && word_start >= start - 1e-3
                    && word_end <= end + 1e-3,
                "{word} in {segment}"
            );
            let probability = word["probability"].as_f64().expect("probability");
            assert!((0.0..=1.0).contains(&probability), "{word}");
            previous_end = word_end;
            spoken.push(word["word"].as_str().expect("word").to_owned());
        }
    }
    // The words are the transcript, and they are where the speech is: "Americans" is said in
    // the third second, the last "country" in the eleventh (faster-whisper: 1.56 s and 9.96 s).
    assert_eq!(
        spoken.join(" "),
        body["result"]["transcript"].as_str().expect("transcript")
    );
    let time_of = |wanted: &str, nth: usize| -> f64 {
        segments
            .iter()
            .flat_map(|s| s["words"].as_array().into_iter().flatten())
            .filter(|w| w["word"].as_str().is_some_and(|t| t.contains(wanted)))
            .nth(nth)
            .and_then(|w| w["start"].as_f64())
            .unwrap_or_else(|| panic!("no {wanted:?} #{nth} in {body}"))
    };
    assert!((1.0..2.5).contains(&time_of("Americans", 0)), "{body}");
    assert!((9.0..10.8).contains(&time_of("country", 1)), "{body}");

    // Without the option, segments carry no words.
    let plain = app.submit_job(&fixture("jfk.flac"), "").await;
    app.follow_status(&plain).await;
    let (_, body) = app.get_json(&format!("/result/{plain}")).await;
    assert!(
        body["result"]["segments"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s.get("words").is_none())),
        "{body}"
    );
}

#[test]
fn a_bad_setting_stops_start_up_naming_the_variable() {
    let output = std::process::Command::new(jetscribe_binary())
        .arg("up")
        .env("WEBHOOK_MAX_RETRIES", "many")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("WEBHOOK_MAX_RETRIES"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_is_one_trace_across_every_stage() {
    let mut collector = TraceCollector::start().await;
    let mut app =
        TestApp::spawn(&[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str())]).await;
    let job_id = app.submit_job(&fixture("jfk.flac"), "").await;
    let (last, _) = app.follow_status(&job_id).await;
    assert_eq!(last["status"], "completed", "{last}");
    // Exports are batched; shutting down flushes them.
    let status = app.terminate(Duration::from_secs(10)).expect("exits");
    assert!(status.success());

    let mut traces_of_job = std::collections::BTreeSet::new();
    let mut stages = std::collections::BTreeSet::new();
    for body in collector.drain() {
        let export = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        for span in export
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            let attribute = |key: &str| {
                span.attributes
                    .iter()
                    .find(|kv| kv.key == key)
                    .and_then(
                        |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(AnyValue::StringValue(text)) => Some(text.clone()),
                            _ => None,
                        },
                    )
            };
            if attribute("job_id").as_deref() == Some(job_id.as_str()) {
                traces_of_job.insert(span.trace_id.clone());
                if let Some(stage) = attribute("stage") {
                    stages.insert(stage);
                }
            }
        }
    }
    assert_eq!(
        traces_of_job.len(),
        1,
        "spans of the job are in {} traces",
        traces_of_job.len()
    );
    let expected: std::collections::BTreeSet<String> =
        Stage::ALL.map(|stage| stage.name().to_owned()).into();
    assert_eq!(stages, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_each_dependency_and_fails_when_nats_is_gone() {
    let mut app = TestApp::spawn(&[]).await;
    let (code, health) = app.get_json("/health").await;
    assert_eq!(code, 200, "{health}");
    for part in ["nats", "jetstream", "object_store"] {
        assert_eq!(health[part], "ok", "{health}");
    }
    app.stop_nats();
    let unhealthy = jetscribe_tests::wait_for(
        "/health to report NATS down",
        Duration::from_secs(30),
        || {
            let request = app.get_json("/health");
            async move {
                let (code, body) = request.await;
                (code == 503).then_some(body)
            }
        },
    )
    .await;
    assert_eq!(unhealthy["status"], "unhealthy");
    assert_ne!(unhealthy["nats"], "ok", "{unhealthy}");
    assert_eq!(unhealthy["object_store"], "ok", "{unhealthy}");
}
