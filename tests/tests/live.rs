//! Following a job without polling: the Server-Sent Events stream (live, replayed, resumed with
//! Last-Event-ID) and the synchronous endpoints of the original service.

use futures::StreamExt;
use jetscribe_tests::{JFK_REFERENCE, JOB_TIMEOUT, TestApp, fixture, word_error_rate};

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    id: String,
    kind: String,
    data: serde_json::Value,
}

/// Reads `/events/{job_id}` (with `Last-Event-ID` when given) until the server ends it.
async fn read_events(app: &TestApp, job_id: &str, last_event_id: Option<&str>) -> Vec<SseEvent> {
    let mut request = app.http.get(app.url(&format!("/events/{job_id}")));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.expect("GET /events");
    if response.status() == 204 {
        // Nothing more will come (and an EventSource stops reconnecting).
        return Vec::new();
    }
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("stream chunk")));
        }
    };
    tokio::time::timeout(JOB_TIMEOUT, read)
        .await
        .expect("the stream ends after the job does");
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(|value| value.trim_start().to_owned())
            };
            // Keep-alive comments carry no data.
            let data = field("data:")?;
            Some(SseEvent {
                id: field("id:").expect("every event has an id"),
                kind: field("event:").expect("every event has a type"),
                data: serde_json::from_str(&data).expect("data is JSON"),
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_follows_a_job_live_then_replays_it_and_resumes_after_last_event_id() {
    let app = TestApp::spawn(&[]).await;
    let job_id = app.submit_job(&fixture("jfk.flac"), "").await;

    // Opened right after submission: history so far, then live, ending with `completed`.
    let live = read_events(&app, &job_id, None).await;
    let kinds: Vec<&str> = live.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"submitted"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"completed"), "{kinds:?}");
    assert!(kinds.contains(&"stage_started") && kinds.contains(&"stage_completed"));
    let mut previous = (0u64, 0u64);
    for event in &live {
        assert_eq!(event.data["job_id"], job_id.as_str());
        assert_eq!(event.data["kind"], event.kind.as_str());
        let id: u64 = event.id.parse().expect("ids are numbers");
        let progress = event.data["progress"].as_u64().expect("progress");
        assert!(id > previous.0 && progress >= previous.1, "{event:?}");
        previous = (id, progress);
    }
    assert_eq!(previous.1, 100);

    // After the end, the whole history is replayed, the same events with the same ids.
    let replayed = read_events(&app, &job_id, None).await;
    assert_eq!(replayed, live);

    // A client that had the first three resumes with the fourth.
    let resumed = read_events(&app, &job_id, Some(&live[2].id)).await;
    assert_eq!(resumed, live[3..]);
    // One that had them all is told there is nothing more: 204.
    let last_id = &live[live.len() - 1].id;
    let response = app
        .http
        .get(app.url(&format!("/events/{job_id}")))
        .header("Last-Event-ID", last_id.as_str())
        .send()
        .await
        .expect("GET /events");
    assert_eq!(response.status(), 204);

    let unknown = uuid::Uuid::now_v7();
    let (code, _) = app.get_json(&format!("/events/{unknown}")).await;
    assert_eq!(code, 404);
}

async fn post_sync(app: &TestApp, path: &str) -> reqwest::Response {
    app.post_file(path, &fixture("jfk.flac"), &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_audio_answers_with_the_transcript_once_the_job_is_done() {
    let app = TestApp::spawn(&[]).await;
    for path in ["/process-audio", "/process-video"] {
        let response = post_sync(&app, path).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["status"], "completed", "{body}");
        let transcript = body["result"]["transcript"].as_str().expect("transcript");
        assert!(
            word_error_rate(JFK_REFERENCE, transcript) <= 0.10,
            "{path}: {transcript}"
        );
        assert!(
            body["result"]["segments"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_request_that_outlasts_sync_timeout_gets_504_with_the_job_id() {
    let app = TestApp::spawn(&[("SYNC_TIMEOUT", "0.05")]).await;
    let response = post_sync(&app, "/process-audio").await;
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.expect("json");
    let job_id = body["job_id"].as_str().expect("job_id").to_owned();
    // The job goes on: the client polls for it.
    let result = jetscribe_tests::wait_for("the result", JOB_TIMEOUT, || async {
        let (code, body) = app.get_json(&format!("/result/{job_id}")).await;
        (code == 200).then_some(body)
    })
    .await;
    assert_eq!(result["status"], "completed", "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_following_one_job_share_one_consumer_and_each_sees_it_end() {
    // Without stages the job stays pending, and its streams open.
    let app = TestApp::spawn_parts(&["api"], &[]).await;
    let job_id = app.submit_job(&fixture("jfk.flac"), "").await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        let response = app
            .http
            .get(app.url(&format!("/events/{job_id}")))
            .send()
            .await
            .expect("GET /events");
        assert_eq!(response.status(), 200);
        streams.push(response);
    }
    let pipeline = app.pipeline().await;
    let mut events_stream = pipeline
        .jetstream()
        .get_stream(proto_msgs::EVENTS_STREAM)
        .await
        .expect("events stream");
    let consumers = events_stream
        .info()
        .await
        .expect("info")
        .state
        .consumer_count;
    assert_eq!(consumers, 1, "one consumer for five clients of one job");

    // The job's end reaches every client, and ends every stream.
    let uuid: uuid::Uuid = job_id.parse().expect("uuid");
    let record = pipeline.jobs().get(uuid).await.expect("read").expect("job");
    let ended = proto_msgs::EventKind::Failed;
    pipeline
        .events()
        .publish_for(&record, ended, None)
        .await
        .expect("published");
    for response in streams {
        let read = tokio::time::timeout(JOB_TIMEOUT, response.text());
        let text = read.await.expect("the stream ends").expect("body");
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("event:"))
            .map(str::trim)
            .collect();
        assert_eq!(kinds, ["submitted", "failed"], "{text}");
    }
}
