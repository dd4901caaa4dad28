//! Following a job without polling: `GET /events/{job_id}` (Server-Sent Events) and the
//! synchronous endpoints of the original service, `POST /process-audio` and
//! `POST /process-video`, which take the upload and answer with the result once the job ends.

use futures::StreamExt;
use poem::http::StatusCode;
use poem::web::sse::{Event, SSE};
use poem::web::{Data, Multipart, Path, Query};
use poem::{IntoResponse, Request, Response, handler};
use proto_msgs::JobEvent;
use serde_json::json;
use tracing::{info, warn};
use uuid::Uuid;

use crate::upload::{ProcessParams, submit};
use crate::{ApiError, ApiState, ResultFormat, json_response, load_record, result_response};

/// How often an idle event stream sends a comment, so that proxies keep it open.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// An event as JSON: the same named fields as on NATS.
fn event_json(event: &JobEvent) -> String {
    serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned())
}

fn store_unavailable(err: impl std::fmt::Display) -> ApiError {
    warn!(error = %err, "event stream unavailable");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "event stream unavailable")
}

/// `GET /events/{job_id}`: the job's events as Server-Sent Events, history first, then live,
/// until `completed` or `failed`. `id:` is the event's stream sequence; a client reconnecting
/// with `Last-Event-ID` gets only what came after it.
#[handler]
pub(crate) async fn job_events(
    request: &Request,
    Data(state): Data<&ApiState>,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    let record = load_record(state, &raw_id).await?;
    let after = match request.headers().get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "Last-Event-ID: expected the id of an event of this stream",
                    )
                })?,
        ),
        None => None,
    };
    // A job that has ended has all its events stored: a client that already has the last one
    // gets 204, which tells an EventSource to stop reconnecting.
    if record.status.is_final() {
        let last = state
            .pipeline
            .last_event_sequence(record.job_id)
            .await
            .map_err(store_unavailable)?;
        if last.is_none_or(|last| after.is_some_and(|after| after >= last)) {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    let events = state
        .pipeline
        .follow_job_events(record.job_id, after)
        .await
        .map_err(store_unavailable)?;
    let job_id = record.job_id;
    // Ends right after the final event (without waiting for another), or at the first error:
    // the client reconnects with Last-Event-ID and loses nothing.
    let stream = futures::stream::unfold(
        (Box::pin(events), false),
        move |(mut events, ended)| async move {
            if ended {
                return None;
            }
            match events.next().await? {
                Ok(stored) => {
                    let event = Event::message(event_json(&stored.event))
                        .event_type(stored.event.kind.as_str())
                        .id(stored.sequence.to_string());
                    Some((event, (events, stored.event.kind.is_final())))
                }
                Err(err) => {
                    warn!(job_id = %job_id, error = %err, "event stream interrupted");
                    None
                }
            }
        },
    );
    Ok(SSE::new(stream).keep_alive(KEEP_ALIVE).into_response())
}

/// `POST /process-audio` and `POST /process-video`: the upload of `/process`, then the answer of
/// `/result` once the job ends (200 with the result, 500 if it failed), or 504 with the job id
/// after SYNC_TIMEOUT so that the client can poll `/result`.
#[handler]
pub(crate) async fn process_and_wait(
    Data(state): Data<&ApiState>,
    Query(params): Query<ProcessParams>,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let job = submit(state, params, &mut multipart).await?;
    let job_id = job.job_id;
    let ended =
        tokio::time::timeout(state.settings.sync_timeout, wait_for_end(state, job_id)).await;
    match ended {
        Ok(Ok(())) => {
            let record = load_record(state, &job_id.to_string()).await?;
            result_response(state, &record, ResultFormat::Json).await
        }
        // The job exists and goes on: the client must learn its id even now.
        Ok(Err(_)) => Ok(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "job_id": job_id,
                "status": "processing",
                "detail": format!("cannot follow the job now; poll /result/{job_id}"),
            }),
        )),
        Err(_) => {
            info!(job_id = %job_id, "synchronous request timed out; the job goes on");
            Ok(json_response(
                StatusCode::GATEWAY_TIMEOUT,
                json!({
                    "job_id": job_id,
                    "status": "processing",
                    "detail": format!(
                        "the job did not end within SYNC_TIMEOUT ({} s); poll /result/{job_id}",
                        state.settings.sync_timeout.as_secs_f64()
                    ),
                }),
            ))
        }
    }
}

/// Returns once the job has published `completed` or `failed`.
async fn wait_for_end(state: &ApiState, job_id: Uuid) -> Result<(), ApiError> {
    let mut events = std::pin::pin!(
        state
            .pipeline
            .follow_job_events(job_id, None)
            .await
            .map_err(store_unavailable)?
    );
    while let Some(stored) = events.next().await {
        if stored.map_err(store_unavailable)?.event.kind.is_final() {
            return Ok(());
        }
    }
    Err(store_unavailable("the event stream ended"))
}
