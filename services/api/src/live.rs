//! Following a job without polling: `GET /events/{job_id}` (Server-Sent Events) and the
//! synchronous endpoints of the original service, `POST /process-audio` and
//! `POST /process-video`, which take the upload and answer with the result once the job ends.

use futures::{Stream, StreamExt};
use jetscribe_nats::{PipelineError, StoredEvent};
use poem::http::StatusCode;
use poem::web::sse::{Event, SSE};
use poem::{IntoResponse, Request, Response};
use proto_msgs::{JobEvent, JobStatus};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{info, warn};
use uuid::Uuid;

use crate::upload::SubmittedJob;
use crate::views::StillRunning;
use crate::{
    ApiError, ApiState, Caller, ResultFormat, json_response, load_record, parse_job_id,
    result_response,
};

/// How often an idle event stream sends a comment, so that proxies keep it open.
pub(crate) const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// An event as JSON: the same named fields as on NATS.
fn event_json(event: &JobEvent) -> String {
    crate::json_text(event)
}

fn store_unavailable(err: &PipelineError) -> ApiError {
    ApiError::unavailable("event stream", err)
}

/// `GET /events/{job_id}`: the job's events as Server-Sent Events, history first, then live,
/// until `completed` or `failed`. `id:` is the event's stream sequence; a client reconnecting
/// with `Last-Event-ID` gets only what came after it.
pub(crate) async fn job_events(
    request: &Request,
    state: &ApiState,
    caller: &Caller,
    raw_id: &str,
) -> Result<Response, ApiError> {
    let record = load_record(state, caller, parse_job_id(raw_id)?).await?;
    let after = last_event_id(request)?;
    let stream_slot = state.limits.event_streams.take()?;
    // A job that has ended has all its events stored: a client that already has the last one
    // gets 204, which tells an EventSource to stop reconnecting.
    if record.status.is_final() {
        let last = state
            .pipeline
            .last_event_sequence(record.job_id)
            .await
            .map_err(|err| store_unavailable(&err))?;
        if last.is_none_or(|last| after.is_some_and(|after| after >= last)) {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    let events = state
        .followers
        .follow(&state.pipeline, record.job_id, after)
        .await
        .map_err(|err| store_unavailable(&err))?;
    // Ends when the server shuts down: the client reconnects, to another instance, with
    // Last-Event-ID.
    let events = events.take_until(state.shutdown.clone().cancelled_owned());
    Ok(SSE::new(sse_events(events, stream_slot))
        .keep_alive(KEEP_ALIVE)
        .into_response())
}

/// The `Last-Event-ID` header: the stream sequence of the last event the client has.
fn last_event_id(request: &Request) -> Result<Option<u64>, ApiError> {
    let Some(value) = request.headers().get("last-event-id") else {
        return Ok(None);
    };
    let sequence = value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    sequence.map(Some).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "Last-Event-ID: expected the id of an event of this stream",
        )
    })
}

/// Stored events as Server-Sent Events. Ends right after the final event, or when the feed
/// ends early: the client reconnects with Last-Event-ID and loses nothing.
fn sse_events(
    events: impl Stream<Item = StoredEvent> + Send + 'static,
    stream_slot: OwnedSemaphorePermit,
) -> impl Stream<Item = Event> + Send + 'static {
    // The slot travels with the stream: it is given back when the stream ends or the client
    // goes away.
    events.map(move |stored| {
        let _holding = &stream_slot;
        Event::message(event_json(&stored.event))
            .event_type(stored.event.kind.as_str())
            .id(stored.sequence.to_string())
    })
}

/// `POST /process-audio` and `POST /process-video`: the upload of `/process`, then the answer of
/// `/result` once the job ends (200 with the result, 500 if it failed), or 504 with the job id
/// after SYNC_TIMEOUT so that the client can poll `/result`.
pub(crate) async fn process_and_wait(
    state: &ApiState,
    caller: &Caller,
    job: SubmittedJob,
) -> Result<Response, ApiError> {
    let job_id = job.job_id;
    match wait_for_job(state, job_id).await {
        JobWait::Ended => {
            let record = load_record(state, caller, job_id).await?;
            result_response(state, &record, ResultFormat::Json).await
        }
        JobWait::StillRunning { status, detail } => {
            let body = StillRunning {
                job_id,
                status: JobStatus::Processing,
                detail,
            };
            Ok(json_response(status, &body))
        }
    }
}

/// How a synchronous request's wait for its job ended.
pub(crate) enum JobWait {
    /// The job ended: completed, failed or cancelled.
    Ended,
    /// The wait was refused or cut short, and the job goes on: `detail` says why and where
    /// to poll, `status` is the answer's (503 or 504).
    StillRunning { status: StatusCode, detail: String },
}

/// Waits for the job to end, for at most SYNC_TIMEOUT, holding an event stream slot.
pub(crate) async fn wait_for_job(state: &ApiState, job_id: Uuid) -> JobWait {
    let timeout = state.settings.sync_timeout;
    let still_running = |status, detail| JobWait::StillRunning { status, detail };
    // Taken after the upload: the job exists, so a refusal still names it.
    let Ok(_stream_slot) = state.limits.event_streams.take() else {
        return still_running(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many event streams at once (MAX_EVENT_STREAMS); poll /result/{job_id}"),
        );
    };
    let waited = tokio::select! {
        waited = tokio::time::timeout(timeout, wait_for_end(state, job_id)) => waited,
        () = state.shutdown.cancelled() => {
            return still_running(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the server is shutting down; the job goes on: poll /result/{job_id}"),
            );
        }
    };
    match waited {
        Ok(Ok(())) => JobWait::Ended,
        // The job exists and goes on: the client must learn its id even now.
        Ok(Err(_)) => still_running(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot follow the job now; poll /result/{job_id}"),
        ),
        Err(_) => {
            info!(job_id = %job_id, "synchronous request timed out; the job goes on");
            still_running(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the job did not end within SYNC_TIMEOUT ({} s); poll /result/{job_id}",
                    timeout.as_secs_f64()
                ),
            )
        }
    }
}

/// Returns once the job has published `completed` or `failed`.
async fn wait_for_end(state: &ApiState, job_id: Uuid) -> Result<(), ApiError> {
    let events = state.followers.follow(&state.pipeline, job_id, None).await;
    let mut events = std::pin::pin!(events.map_err(|err| store_unavailable(&err))?);
    while let Some(stored) = events.next().await {
        if stored.event.kind.is_final() {
            return Ok(());
        }
    }
    warn!(job_id = %job_id, "the event stream ended before the job");
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "event stream unavailable",
    ))
}
