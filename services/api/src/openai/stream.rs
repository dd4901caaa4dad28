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
use proto_msgs::{Channels, EventKind, JobBlobs, JobEvent, Stage, TranscriptSoFar};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use uuid::Uuid;

use super::{OpenAiError, OpenAiErrorDetail};
use crate::live::KEEP_ALIVE;
use crate::{ApiError, ApiState, json_text, load_result};

/// The answer to a `stream=true` request for `job_id`: events as the job goes.
pub(super) async fn streamed(state: &ApiState, job_id: Uuid) -> Result<Response, ApiError> {
    let stream_slot = state.limits.event_streams.take()?;
    let record = (state.pipeline.jobs().get(job_id).await)
        .map_err(|err| ApiError::unavailable("job store", &err))?;
    // A split job's channels are transcribed one after the other: its text comes at the end.
    let reads_checkpoint = record.is_some_and(|record| record.channels == Channels::Mix);
    let events = (state.followers.follow(&state.pipeline, job_id, None).await)
        .map_err(|err| ApiError::unavailable("event stream", &err))?;
    let events = events.take_until(state.shutdown.clone().cancelled_owned());
    let (sender, receiver) = mpsc::channel(8);
    let relay = Relay {
        state: state.clone(),
        job_id,
        reads_checkpoint,
        sender,
        _stream_slot: stream_slot,
    };
    tokio::spawn(relay.run(events));
    let answer = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = receiver.recv().await?;
        Some((Event::message(event), receiver))
    });
    Ok(SSE::new(answer).keep_alive(KEEP_ALIVE).into_response())
}

/// Turns one job's events into the answer's, holding an event stream slot until the job ends,
/// the client goes away or the server shuts down.
struct Relay {
    state: ApiState,
    job_id: Uuid,
    reads_checkpoint: bool,
    sender: mpsc::Sender<String>,
    _stream_slot: OwnedSemaphorePermit,
}

impl Relay {
    async fn run(self, events: impl Stream<Item = StoredEvent> + Send + 'static) {
        let mut events = std::pin::pin!(events);
        let mut sent = SentText::default();
        loop {
            // A client that went away is noticed at once, not at the next text to send.
            let next = tokio::select! {
                next = events.next() => next,
                () = self.sender.closed() => return,
            };
            let Some(StoredEvent { event, .. }) = next else {
                // The server is shutting down, or the event feed failed: the client hears it.
                let why =
                    "the event stream ended before the job; its id is in X-Job-Id: poll /result";
                self.send(error_event(why)).await;
                return;
            };
            if event.kind.is_final() {
                for answer in self.last_answers(&event, &sent).await {
                    self.send(answer).await;
                }
                return;
            }
            if self.reads_checkpoint && grows_the_transcript(&event) {
                let joined = self.transcript_so_far().await.joined_text();
                if let Some(delta) = sent.take_new(&joined) {
                    self.send(delta_event(&delta)).await;
                }
            }
        }
    }

    /// Sends one event; gives up when the client is gone or stops reading past shutdown.
    async fn send(&self, answer: String) {
        tokio::select! {
            _ = self.sender.send(answer) => {},
            () = self.state.shutdown.cancelled() => {},
        }
    }

    /// The segments the transcriber has stored so far (none, if it has stored nothing
    /// readable: no batch finished yet).
    async fn transcript_so_far(&self) -> TranscriptSoFar {
        let path = JobBlobs::transcribe_checkpoint_path(self.job_id);
        (self.state.blobs.get_json::<TranscriptSoFar>(&path).await).unwrap_or_default()
    }

    /// The events that end the answer: the text not sent yet and `done`, or the failure.
    async fn last_answers(&self, event: &JobEvent, sent: &SentText) -> Vec<String> {
        match event.kind {
            EventKind::Completed => {}
            EventKind::Cancelled => return vec![error_event("the job was cancelled")],
            _ => {
                let why = event.error_message.as_deref().unwrap_or("unknown error");
                return vec![error_event(&format!("the transcription failed: {why}"))];
            }
        }
        let result = match self.state.pipeline.jobs().get(self.job_id).await {
            Ok(Some(record)) => load_result(&self.state, &record).await,
            Ok(None) => Err(ApiError::new(
                poem::http::StatusCode::GONE,
                "the job is gone",
            )),
            Err(err) => Err(ApiError::unavailable("job store", &err)),
        };
        let result = match result {
            Ok(result) => result,
            Err(refused) => return vec![error_event(&refused.detail)],
        };
        let rest = sent.rest_of(&result.transcript).map(delta_event);
        let done = json_text(&DoneEvent {
            r#type: "transcript.text.done",
            text: &result.transcript,
        });
        rest.into_iter().chain([done]).collect()
    }
}

/// An event after which the transcriber's checkpoint may hold more text.
fn grows_the_transcript(event: &JobEvent) -> bool {
    event.stage == Some(Stage::Transcribe)
        && matches!(event.kind, EventKind::Progress | EventKind::StageCompleted)
}

/// The text sent so far.
#[derive(Debug, Default, PartialEq)]
struct SentText {
    text: String,
}

impl SentText {
    /// What the transcript so far (`joined`) adds to the text sent, now counted as sent; none
    /// while it does not extend it (a retry that lost its checkpoint starts again: its text
    /// is sent once it passes what was).
    fn take_new(&mut self, joined: &str) -> Option<String> {
        let new = self.rest_of(joined)?.to_owned();
        self.text = joined.to_owned();
        Some(new)
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

fn delta_event(text: &str) -> String {
    json_text(&DeltaEvent {
        r#type: "transcript.text.delta",
        delta: text,
    })
}

/// An error as OpenAI sends one in a stream, which its clients raise.
fn error_event(message: &str) -> String {
    json_text(&OpenAiError {
        error: OpenAiErrorDetail {
            message: message.to_owned(),
            r#type: "server_error",
            param: None,
            code: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_delta_is_what_the_transcript_so_far_adds_to_the_text_sent() {
        let mut sent = SentText::default();
        let steps = [
            ("", None),
            ("Ask not", Some("Ask not")),
            ("Ask not", None),
            ("Ask not what your country", Some(" what your country")),
            // A retry that lost its checkpoint starts again: nothing until it passes the text
            // sent, then only what it adds.
            ("Ask not", None),
            ("Ask not what your country can do", Some(" can do")),
            // Text that does not extend what was sent is not sent: `done` has the whole text.
            ("Ask, not what", None),
        ];
        for (joined, expected) in steps {
            assert_eq!(sent.take_new(joined).as_deref(), expected, "{joined:?}");
        }
        assert_eq!(sent.text, "Ask not what your country can do");
    }

    #[test]
    fn the_last_delta_is_what_the_final_text_adds_to_the_text_sent() {
        let sent = SentText {
            text: "Ask not what".into(),
        };
        let cases = [
            ("Ask not what your country", Some(" your country")),
            ("Ask not what", None),
            ("Ask, not what", None),
        ];
        for (transcript, rest) in cases {
            assert_eq!(sent.rest_of(transcript), rest, "{transcript}");
        }
        assert_eq!(SentText::default().rest_of("All of it"), Some("All of it"));
    }
}
