//! The OpenAI-compatible routes as OpenAI's own client sees them: the `openai` Python package
//! (installed by `make pytools` into `vendor/python`) pointed at the service, with an API key as
//! its `Authorization: Bearer`, for every response format, word times, translation, the model
//! list, streaming and refusals.

use std::process::Command;

use jetscribe_tests::reference::pytools_python;
use jetscribe_tests::{JFK_REFERENCE, TestApp, fixture, word_error_rate};
use serde_json::Value;

const KEY: &str = "openai-client-key-0123456789";

/// Each call of the client, printed as one JSON object per call: what it returned, or the
/// error's class, status and body.
const CALLS: &str = r#"
import json, os, sys
import openai
base, key, jfk, french, speech = sys.argv[1:6]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=600)
results = {}

def run(name, call):
    try:
        value = call()
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json", exclude_none=True)
        results[name] = {"ok": value}
    except openai.APIStatusError as err:
        results[name] = {"error": type(err).__name__, "status": err.status_code, "body": err.body}

def transcribe(**options):
    with open(jfk, "rb") as f:
        return client.audio.transcriptions.create(model="whisper-1", file=f, **options)

run("json", lambda: transcribe())
run("text", lambda: transcribe(response_format="text"))
run("srt", lambda: transcribe(response_format="srt"))
run("vtt", lambda: transcribe(response_format="vtt"))
run("verbose", lambda: transcribe(response_format="verbose_json", language="en",
                                  timestamp_granularities=["word", "segment"]))

def raw():
    with open(jfk, "rb") as f:
        response = client.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=f, prompt="Kennedy's inaugural address.")
    headers = {name: response.headers.get(name) for name in ("x-job-id", "x-should-retry")}
    return {"headers": headers, "text": response.parse().text}
run("raw", raw)

def stream():
    with open(speech, "rb") as f:
        events = client.audio.transcriptions.create(model="whisper-1", file=f, stream=True)
        return [event.model_dump(mode="json", exclude_none=True) for event in events]
run("stream", stream)

def replayed():
    with open(jfk, "rb") as f:
        return client.audio.transcriptions.create(model="whisper-1", file=f,
                                                  extra_headers={"Idempotency-Key": "once"})
run("idempotency key", replayed)

def translate():
    with open(french, "rb") as f:
        return client.audio.translations.create(model="whisper-1", file=f,
                                                response_format="verbose_json")
run("translation", translate)
run("models", lambda: client.models.list())
run("model", lambda: client.models.retrieve("whisper-1"))
def unknown_model():
    with open(jfk, "rb") as f:
        return client.audio.transcriptions.create(model="no-such-model", file=f)
run("unknown model", unknown_model)
run("bad format", lambda: transcribe(response_format="diarized_json"))
wrong = openai.OpenAI(base_url=base + "/v1", api_key="not-the-key", max_retries=0)
run("wrong key", lambda: wrong.models.list())
print(json.dumps(results))
"#;

/// Runs [`CALLS`] against the app; returns each call's outcome by name.
fn run_client(app: &TestApp) -> Value {
    let python = pytools_python();
    let output = Command::new(python)
        .args(["-c", CALLS, &app.base_url, KEY])
        .arg(fixture("jfk.flac"))
        .arg(fixture("french.wav"))
        .arg(fixture("voxpopuli.ogg"))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "the client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client's JSON")
}

fn returned<'a>(calls: &'a Value, name: &str) -> &'a Value {
    let call = &calls[name];
    assert!(!call["ok"].is_null(), "{name}: {call}");
    &call["ok"]
}

/// The OpenAI error a call raised: its class, status and `error` object.
fn refused<'a>(calls: &'a Value, name: &str, class: &str, status: u16) -> &'a Value {
    let call = &calls[name];
    assert_eq!(call["error"], class, "{name}: {call}");
    assert_eq!(call["status"], status, "{name}: {call}");
    let error = &call["body"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{call}"
    );
    assert!(error["type"].is_string(), "{call}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openais_python_client_transcribes_translates_and_lists_models() {
    let keys = format!("client={KEY}");
    let env = [("API_KEYS", keys.as_str()), ("WHISPER_BATCH_SIZE", "1")];
    let app = TestApp::spawn(&env).await;
    let calls = run_client(&app);
    // What each call returned (shown with --nocapture).
    println!("{calls:#}");

    let text = returned(&calls, "json")["text"].as_str().expect("text");
    assert!(word_error_rate(JFK_REFERENCE, text) < 0.1, "{text}");
    let plain = returned(&calls, "text").as_str().expect("a string");
    assert!(word_error_rate(JFK_REFERENCE, plain) < 0.1, "{plain}");
    let srt = returned(&calls, "srt").as_str().expect("a string");
    assert!(srt.starts_with("1\n00:00:0"), "{srt}");
    assert!(srt.contains(" --> "), "{srt}");
    let vtt = returned(&calls, "vtt").as_str().expect("a string");
    assert!(vtt.starts_with("WEBVTT\n\n"), "{vtt}");

    let verbose = returned(&calls, "verbose");
    assert_eq!(verbose["task"], "transcribe", "{verbose}");
    assert_eq!(verbose["language"], "english", "{verbose}");
    assert!(
        verbose["duration"]
            .as_f64()
            .is_some_and(|d| (d - 11.0).abs() < 0.5)
    );
    let segments = verbose["segments"].as_array().expect("segments");
    assert!(!segments.is_empty(), "{verbose}");
    for segment in segments {
        assert!(
            segment["avg_logprob"].as_f64().is_some_and(|p| p < 0.0),
            "{segment}"
        );
        assert!(segment["no_speech_prob"].is_number(), "{segment}");
        assert!(segment["compression_ratio"].is_number(), "{segment}");
        let tokens = segment["tokens"].as_array().expect("tokens");
        assert!(
            !tokens.is_empty() && tokens.iter().all(Value::is_u64),
            "{segment}"
        );
    }
    let words = verbose["words"].as_array().expect("words");
    let spoken: Vec<&str> = words.iter().filter_map(|w| w["word"].as_str()).collect();
    assert!(
        word_error_rate(JFK_REFERENCE, &spoken.join(" ")) < 0.1,
        "{spoken:?}"
    );
    for pair in words.windows(2) {
        let (first, next) = (&pair[0], &pair[1]);
        assert!(first["start"].as_f64() <= first["end"].as_f64(), "{first}");
        assert!(
            first["start"].as_f64() <= next["start"].as_f64(),
            "{first} {next}"
        );
    }

    // The job behind the request, named in X-Job-Id, is a job like any other.
    let raw = returned(&calls, "raw");
    let job_id = raw["headers"]["x-job-id"].as_str().expect("X-Job-Id");
    // The job exists: a retry would upload the file again as another job.
    assert_eq!(raw["headers"]["x-should-retry"], "false", "{raw}");
    let mut app = app;
    app.set_api_key(Some(KEY));
    let (status, body) = app.get_json(&format!("/status/{job_id}")).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &Value::from("completed")),
        "{body}"
    );

    let translation = returned(&calls, "translation");
    assert_eq!(translation["language"], "english", "{translation}");
    // "Sous le consulat il devient conservateur des eaux et forêts …": whisper-base's English
    // is rough and, where its decoding falls back to sampling, differs from run to run ("under
    // the consulate, it becomes a conservator of the eyes …", "under the console, it becomes a
    // user of …"), but it is English.
    let english = translation["text"].as_str().expect("text").to_lowercase();
    let words: Vec<&str> = english
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect();
    let count = |list: &[&str]| words.iter().filter(|word| list.contains(word)).count();
    let english_words = [
        "the", "it", "of", "a", "and", "is", "to", "under", "becomes",
    ];
    let french_words = ["sous", "le", "il", "devient", "des", "et", "eaux", "forêts"];
    assert!(
        count(&english_words) >= 3 && count(&french_words) == 0,
        "{english}"
    );

    // 69 s in batches of one window: the text comes in several deltas as batches end, and
    // they add up to the final text.
    let events = returned(&calls, "stream").as_array().expect("events");
    let (done, deltas) = events.split_last().expect("events");
    assert_eq!(done["type"], "transcript.text.done", "{events:?}");
    assert!(deltas.len() >= 2, "{events:?}");
    let streamed: String = (deltas.iter())
        .map(|event| {
            assert_eq!(event["type"], "transcript.text.delta", "{event}");
            event["delta"].as_str().expect("delta")
        })
        .collect();
    assert_eq!(streamed, done["text"].as_str().expect("text"));
    refused(&calls, "idempotency key", "BadRequestError", 400);

    let models = returned(&calls, "models");
    let ids: Vec<&str> = (models["data"].as_array().expect("data").iter())
        .filter_map(|model| model["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"whisper-1") && ids.contains(&"base"),
        "{ids:?}"
    );
    assert_eq!(returned(&calls, "model")["id"], "whisper-1");

    let error = refused(&calls, "unknown model", "BadRequestError", 400);
    assert_eq!(error["param"], "model", "{error}");
    let error = refused(&calls, "bad format", "BadRequestError", 400);
    assert_eq!(error["param"], "response_format", "{error}");
    let error = refused(&calls, "wrong key", "AuthenticationError", 401);
    assert_eq!(error["code"], "invalid_api_key", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_forms_are_refused_in_openais_shape_and_a_failed_stream_says_why() {
    let app = TestApp::spawn(&[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("noise.mp3");
    std::fs::write(&garbage, b"ID3 not really an mp3 at all".repeat(1000)).expect("written");
    let openai_error = |body: &Value| body["error"]["message"].as_str().map(str::to_owned);

    // Answer fields are kept for the answer: a form may not send them without end.
    let many = vec![("timestamp_granularities[]", "word"); 17];
    let response = app
        .post_file("/v1/audio/transcriptions", &garbage, &many)
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["error"]["param"], "timestamp_granularities[]",
        "{body}"
    );
    assert!(
        openai_error(&body).is_some_and(|m| m.contains("more than 16")),
        "{body}"
    );

    let fields = [("response_format", "docx"), ("model", "whisper-1")];
    let response = app
        .post_file("/v1/audio/translations", &garbage, &fields)
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");

    // Neither refusal left a job behind.
    let (_, jobs) = app.get_json("/jobs").await;
    assert_eq!(jobs["jobs"], Value::Array(vec![]), "{jobs}");

    // A route that does not exist under /v1/ is refused the same way.
    let response = app
        .http
        .get(app.url("/v1/files"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert!(openai_error(&body).is_some(), "{body}");

    // A stream for media that cannot be decoded ends with an error event, naming the job.
    let response = app
        .post_file("/v1/audio/transcriptions", &garbage, &[("stream", "true")])
        .await;
    assert_eq!(response.status(), 200);
    let job_id = response.headers()["x-job-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let events = response.text().await.expect("the stream ends");
    let data: Vec<Value> = events
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).expect("json"))
        .collect();
    let last = data.last().expect("an event");
    assert!(
        openai_error(last).is_some_and(|m| m.contains("failed")),
        "{events}"
    );
    let (_, status) = app.get_json(&format!("/status/{job_id}")).await;
    assert_eq!(status["status"], "failed", "{status}");
}
