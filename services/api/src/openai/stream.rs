//! `stream=true`: the transcript as Server-Sent Events in OpenAI's shape while the job runs:
//! `transcript.text.delta` each time the transcriber has finished a batch (its text read from
//! the transcriber's checkpoint), then `transcript.text.done` with the whole text; a job that
//! fails or is cancelled ends the stream with an `{"error": …}` event, which OpenAI's clients
//! raise. A split-channel job's text comes at the end, its channels being transcribed one after
//! another.

use futures::{Stream, StreamExt};
use jetscribe_nats::StoredEvent;
use poem::web::sse::{Event, SSE};
use poem::{IntoResponse, Response};
use proto_msgs::{EventKind, JobBlobs, JobEvent, JobStatus, Segment, Stage, TranscriptSoFar};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use uuid::Uuid;

use crate::{ApiError, ApiState, load_result};

/// How often an idle stream sends a comment, so that proxies keep it open.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// The answer to a `stream=true` request for `job_id`: events as the job goes.
pub(super) async fn streamed(state: &ApiState, job_id: Uuid) -> Result<Response, ApiError> {
    let stream_slot = state.limits.event_streams.take()?;
    let events = (state.followers.follow(&state.pipeline, job_id, None).await)
        .map_err(|err| ApiError::unavailable("event stream", &err))?;
    let events = events.take_until(state.shutdown.clone().cancelled_owned());
    let (sender, receiver) = mpsc::channel(8);
    tokio::spawn(relay(state.clone(), job_id, events, sender, stream_slot));
    let answer = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = receiver.recv().await?;
        Some((Event::message(event), receiver))
    });
    Ok(SSE::new(answer).keep_alive(KEEP_ALIVE).into_response())
}

/// Turns the job's events into the answer's, until the job ends, the client goes away (the
/// receiver is dropped) or the server shuts down. The event stream slot is held until then.
async fn relay(
    state: ApiState,
    job_id: Uuid,
    events: impl Stream<Item = StoredEvent> + Send + 'static,
    sender: mpsc::Sender<String>,
    _stream_slot: OwnedSemaphorePermit,
) {
    let mut events = std::pin::pin!(events);
    let mut sent = SentText::default();
    while let Some(StoredEvent { event, .. }) = events.next().await {
        let answers = match event.kind.is_final() {
            true => last_answers(&state, job_id, &sent).await,
            false if grows_the_transcript(&event) => {
                let so_far = transcript_so_far(&state, job_id).await;
                sent.delta(&so_far.segments)
                    .map(delta)
                    .into_iter()
                    .collect()
            }
            false => continue,
        };
        for answer in answers {
            if sender.send(answer).await.is_err() {
                return;
            }
        }
        if event.kind.is_final() {
            return;
        }
    }
    // The server is shutting down, or the event feed failed: the client hears it.
    let why = "the event stream ended before the job; its id is in X-Job-Id: poll /result";
    let _ = sender.send(error(why, "server_error")).await;
}

/// An event after which the transcriber's checkpoint may hold more text.
fn grows_the_transcript(event: &JobEvent) -> bool {
    event.stage == Some(Stage::Transcribe)
        && matches!(event.kind, EventKind::Progress | EventKind::StageCompleted)
}

/// The segments the transcriber has stored so far (none, if it has stored nothing readable).
async fn transcript_so_far(state: &ApiState, job_id: Uuid) -> TranscriptSoFar {
    let path = JobBlobs::transcribe_checkpoint_path(job_id);
    // Missing (no batch finished, or a split job) or unreadable: no text yet.
    (state.blobs.get_json::<TranscriptSoFar>(&path).await).unwrap_or_default()
}

/// The events that end the answer: the text not sent yet and `done`, or the failure.
async fn last_answers(state: &ApiState, job_id: Uuid, sent: &SentText) -> Vec<String> {
    let record = match state.pipeline.jobs().get(job_id).await {
        Ok(Some(record)) => record,
        Ok(None) => return vec![error("the job is gone", "server_error")],
        Err(err) => {
            let refused = ApiError::unavailable("job store", &err);
            return vec![error(&refused.detail, "server_error")];
        }
    };
    match record.status {
        JobStatus::Completed => {}
        JobStatus::Cancelled => return vec![error("the job was cancelled", "server_error")],
        _ => {
            let why = record.error_message.as_deref().unwrap_or("unknown error");
            return vec![error(
                &format!("the transcription failed: {why}"),
                "server_error",
            )];
        }
    }
    let result = match load_result(state, &record).await {
        Ok(result) => result,
        Err(refused) => return vec![error(&refused.detail, "server_error")],
    };
    let rest = sent.rest_of(&result.transcript).map(delta);
    let done = to_json(&DoneEvent {
        r#type: "transcript.text.done",
        text: &result.transcript,
    });
    rest.into_iter().chain([done]).collect()
}

/// The text sent so far: the first `segments` segments of the checkpoint, joined by spaces as
/// the transcript joins them.
#[derive(Debug, Default, PartialEq)]
struct SentText {
    segments: usize,
    text: String,
}

impl SentText {
    /// The text of the segments past those sent (with the space before it), counted as sent.
    fn delta(&mut self, segments: &[Segment]) -> Option<String> {
        let new = segments
            .get(self.segments..)
            .filter(|new| !new.is_empty())?;
        let mut delta = String::new();
        for segment in new {
            if !(self.text.is_empty() && delta.is_empty()) {
                delta.push(' ');
            }
            delta.push_str(&segment.text);
        }
        self.segments = segments.len();
        self.text.push_str(&delta);
        Some(delta)
    }

    /// What `transcript` adds to the text sent; none when it does not begin with it (the
    /// final text differs from the batches': `done` carries it whole).
    fn rest_of<'a>(&self, transcript: &'a str) -> Option<&'a str> {
        transcript
            .strip_prefix(self.text.as_str())
            .filter(|rest| !rest.is_empty())
    }
}

#[derive(Serialize)]
struct DeltaEvent<'a> {
    r#type: &'static str,
    delta: &'a str,
}

#[derive(Serialize)]
struct DoneEvent<'a> {
    r#type: &'static str,
    text: &'a str,
}

fn delta(text: impl AsRef<str>) -> String {
    to_json(&DeltaEvent {
        r#type: "transcript.text.delta",
        delta: text.as_ref(),
    })
}

/// An error event as OpenAI sends one in a stream: `{"error": {message, type, param, code}}`.
fn error(message: &str, kind: &'static str) -> String {
    to_json(&serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": null}
    }))
}

fn to_json(event: &impl Serialize) -> String {
    serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(texts: &[&str]) -> Vec<Segment> {
        let segment = |text: &&str| Segment {
            text: text.to_string(),
            ..Segment::default()
        };
        texts.iter().map(segment).collect()
    }

    #[test]
    fn each_delta_is_the_text_of_the_segments_not_sent_yet() {
        let mut sent = SentText::default();
        let steps: [(&[&str], Option<&str>); 5] = [
            (&[], None),
            (&["Ask not"], Some("Ask not")),
            (&["Ask not"], None),
            (
                &["Ask not", "what your", "country"],
                Some(" what your country"),
            ),
            // A retry that lost its checkpoint starts again: nothing until it passes the text sent.
            (&["Ask not"], None),
        ];
        for (texts, expected) in steps {
            assert_eq!(
                sent.delta(&segments(texts)).as_deref(),
                expected,
                "{texts:?}"
            );
        }
        assert_eq!(sent.text, "Ask not what your country");
    }

    #[test]
    fn the_last_delta_is_what_the_final_text_adds_to_the_text_sent() {
        let sent = SentText {
            segments: 2,
            text: "Ask not what".into(),
        };
        let cases = [
            ("Ask not what your country", Some(" your country")),
            ("Ask not what", None),
            // The final text differs from the batches': `done` carries it whole.
            ("Ask, not what", None),
        ];
        for (transcript, rest) in cases {
            assert_eq!(sent.rest_of(transcript), rest, "{transcript}");
        }
        assert_eq!(SentText::default().rest_of("All of it"), Some("All of it"));
    }
}
