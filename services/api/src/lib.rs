//! The HTTP API (poem), compatible with the service jetscribe replaces:
//! `POST /process` (streamed upload → 202 with a job id), `GET /status/{id}`, `GET /result/{id}`
//! (200/202/500/404), `GET /jobs/processing`, `GET /health`. It owns request parsing, validation
//! and the JSON shapes of responses; the work happens in the pipeline stages.

mod live;
mod subtitles;
mod upload;

use std::time::Duration;

use jetscribe_blobstore::BlobStore;
use jetscribe_nats::Pipeline;
use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::middleware::Tracing;
use poem::web::{Data, Path, Query};
use poem::{EndpointExt, IntoResponse, Response, Route, Server, get, handler, post};
use proto_msgs::{JobResult, JobStatus};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use uuid::Uuid;

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest upload accepted, in bytes (MAX_FILE_SIZE).
    pub max_file_size: u64,
    /// Accept webhook URLs of loopback, private and link-local hosts (WEBHOOK_ALLOW_PRIVATE).
    pub webhook_allow_private: bool,
    /// How long the synchronous endpoints wait for a job (SYNC_TIMEOUT).
    pub sync_timeout: std::time::Duration,
}

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub pipeline: Pipeline,
    pub blobs: BlobStore,
    pub settings: ApiSettings,
}

/// The routes of the API.
pub fn app(state: ApiState) -> impl poem::Endpoint {
    Route::new()
        .at("/process", post(upload::process))
        .at("/process-audio", post(live::process_and_wait))
        .at("/process-video", post(live::process_and_wait))
        .at("/events/:job_id", get(live::job_events))
        .at("/status/:job_id", get(job_status))
        .at("/result/:job_id", get(job_result))
        .at("/jobs/processing", get(active_jobs))
        .at("/health", get(health_check))
        .data(state)
        .with(Tracing)
}

/// Serves the API on `bind_addr` until `shutdown` is cancelled; requests in flight get 5 s.
pub async fn serve(
    bind_addr: &str,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    info!(bind_addr, "HTTP API listening");
    Server::new(TcpListener::bind(bind_addr.to_owned()))
        .run_with_graceful_shutdown(
            app(state),
            async move { shutdown.cancelled().await },
            Some(Duration::from_secs(5)),
        )
        .await
}

/// Removes the files of jobs older than `max_age` (JOB_CLEANUP_DAYS), once at start and then
/// every hour, until `shutdown`.
pub async fn run_blob_cleanup(blobs: BlobStore, max_age: Duration, shutdown: CancellationToken) {
    let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every_hour.tick() => {}
        }
        match blobs.delete_older_than("jobs", max_age).await {
            Ok(0) => {}
            Ok(removed) => info!(removed, "expired job files removed"),
            Err(err) => error!(error = %err, "job file cleanup failed"),
        }
    }
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

/// A refused request, answered as the original service did: `{"detail": "..."}`, where the
/// detail names the field at fault and why.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {detail}")]
pub(crate) struct ApiError {
    status: StatusCode,
    detail: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        json_response(self.status, json!({ "detail": self.detail }))
    }
}

fn rfc3339(at: Option<OffsetDateTime>) -> Option<String> {
    at.and_then(|at| at.format(&Rfc3339).ok())
}

fn parse_job_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("job_id {raw:?} is not a valid UUID"),
        )
    })
}

async fn load_record(state: &ApiState, raw_id: &str) -> Result<proto_msgs::JobRecord, ApiError> {
    let job_id = parse_job_id(raw_id)?;
    match state.pipeline.jobs().get(job_id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(ApiError::new(StatusCode::NOT_FOUND, "Job not found")),
        Err(err) => {
            error!(error = %err, "job store unavailable");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "job store unavailable",
            ))
        }
    }
}

#[handler]
async fn job_status(
    Data(state): Data<&ApiState>,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let record = load_record(state, &job_id).await?;
    Ok(json_response(
        StatusCode::OK,
        json!({
            "job_id": record.job_id,
            "status": record.status.as_str(),
            "progress": record.progress,
            "step": record.step,
            "eta_seconds": record.eta_s,
            "filename": record.filename,
            "size_bytes": record.size_bytes,
            "duration_s": record.duration_s,
            "language": record.language,
            "created_at": rfc3339(Some(record.created_at)),
            "updated_at": rfc3339(Some(record.updated_at)),
            "completed_at": rfc3339(record.completed_at),
            "error_message": record.error_message,
            "stages": stage_runs(&record),
            // The delivery as recorded: {id, state, attempts, last_status_code, last_error,
            // delivered_at, next_attempt_at, history}.
            "webhook": record.webhook,
        }),
    ))
}

/// Per stage: attempts, start and end, seconds taken, last error, resume point.
fn stage_runs(record: &proto_msgs::JobRecord) -> Value {
    let runs: serde_json::Map<String, Value> = record
        .stages
        .iter()
        .map(|(stage, run)| {
            let seconds = match (run.started_at, run.finished_at) {
                (Some(start), Some(end)) => Some((end - start).as_seconds_f64()),
                _ => None,
            };
            (
                stage.clone(),
                json!({
                    "attempts": run.attempts,
                    "started_at": rfc3339(run.started_at),
                    "finished_at": rfc3339(run.finished_at),
                    "seconds": seconds,
                    "last_error": run.last_error,
                    "resumed_from_s": run.resumed_from_s,
                }),
            )
        })
        .collect();
    Value::Object(runs)
}

/// `?format=` of `/result`.
#[derive(Debug, Default, serde::Deserialize)]
struct ResultQuery {
    format: Option<String>,
}

/// The file formats `/result` can answer with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ResultFormat {
    Json,
    Text,
    Srt,
    Vtt,
}

impl ResultFormat {
    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        match raw.map(str::to_ascii_lowercase).as_deref() {
            None | Some("json") => Ok(ResultFormat::Json),
            Some("txt" | "text") => Ok(ResultFormat::Text),
            Some("srt") => Ok(ResultFormat::Srt),
            Some("vtt" | "webvtt") => Ok(ResultFormat::Vtt),
            Some(other) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("format: expected json, txt, srt or vtt, got {other:?}"),
            )),
        }
    }
}

#[handler]
async fn job_result(
    Data(state): Data<&ApiState>,
    Path(job_id): Path<String>,
    Query(query): Query<ResultQuery>,
) -> Result<Response, ApiError> {
    let format = ResultFormat::parse(query.format.as_deref())?;
    let record = load_record(state, &job_id).await?;
    result_response(state, &record, format).await
}

/// `/result`'s answer for `record`: 202 while it runs, 500 if it failed, the result otherwise.
pub(crate) async fn result_response(
    state: &ApiState,
    record: &proto_msgs::JobRecord,
    format: ResultFormat,
) -> Result<Response, ApiError> {
    let result = match record.status {
        JobStatus::Pending | JobStatus::Processing => {
            return Ok(json_response(
                StatusCode::ACCEPTED,
                json!({
                    "job_id": record.job_id,
                    "status": record.status.as_str(),
                    "progress": record.progress,
                    "step": record.step,
                    "message": "Job is still being processed",
                }),
            ));
        }
        JobStatus::Failed => {
            return Ok(json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({
                    "job_id": record.job_id,
                    "status": "failed",
                    "error_message": record.error_message,
                }),
            ));
        }
        JobStatus::Completed => {
            let result_blob = record.blobs.result.as_deref().ok_or_else(|| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "result missing")
            })?;
            state
                .blobs
                .get_json::<JobResult>(result_blob)
                .await
                .map_err(|err| {
                    error!(error = %err, "result unreadable");
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "result unavailable")
                })?
        }
    };
    let file = |content_type: &str, extension: &str, body: String| {
        Response::builder()
            .status(StatusCode::OK)
            .content_type(content_type)
            .header(
                "Content-Disposition",
                format!("inline; filename=\"{}.{extension}\"", record.job_id),
            )
            .body(body)
    };
    Ok(match format {
        ResultFormat::Json => json_response(
            StatusCode::OK,
            json!({
                "job_id": record.job_id,
                "status": "completed",
                "completed_at": rfc3339(record.completed_at),
                "result": result,
            }),
        ),
        ResultFormat::Text => file(
            "text/plain; charset=utf-8",
            "txt",
            format!("{}\n", result.transcript),
        ),
        ResultFormat::Srt => file(
            "application/x-subrip; charset=utf-8",
            "srt",
            subtitles::srt(&result.segments),
        ),
        ResultFormat::Vtt => file(
            "text/vtt; charset=utf-8",
            "vtt",
            subtitles::vtt(&result.segments),
        ),
    })
}

#[handler]
async fn active_jobs(Data(state): Data<&ApiState>) -> Result<Response, ApiError> {
    let records = state.pipeline.jobs().list().await.map_err(|err| {
        error!(error = %err, "job store unavailable");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "job store unavailable")
    })?;
    let mut active: Vec<_> = records
        .into_iter()
        .filter(|record| !record.status.is_final())
        .collect();
    active.sort_by_key(|record| record.created_at);
    let jobs: Vec<Value> = active
        .iter()
        .map(|record| {
            json!({
                "job_id": record.job_id,
                "status": record.status.as_str(),
                "progress": record.progress,
                "step": record.step,
                "filename": record.filename,
                "created_at": rfc3339(Some(record.created_at)),
            })
        })
        .collect();
    let stages = match state.pipeline.queues().await {
        Ok(queues) => serde_json::to_value(queues).unwrap_or(Value::Null),
        Err(err) => {
            error!(error = %err, "queue statistics unavailable");
            Value::Null
        }
    };
    Ok(json_response(
        StatusCode::OK,
        json!({ "count": jobs.len(), "jobs": jobs, "stages": stages }),
    ))
}

#[handler]
async fn health_check(Data(state): Data<&ApiState>) -> impl IntoResponse {
    let describe = |result: Result<(), String>| match result {
        Ok(()) => json!("ok"),
        Err(reason) => json!(reason),
    };
    let nats = state
        .pipeline
        .check_connection()
        .map_err(|err| err.to_string());
    let jetstream = match &nats {
        Ok(()) => state
            .pipeline
            .check_jetstream()
            .await
            .map_err(|err| err.to_string()),
        Err(_) => Err("not checked: no NATS connection".to_owned()),
    };
    let store = state.blobs.check().await.map_err(|err| err.to_string());
    let healthy = nats.is_ok() && jetstream.is_ok() && store.is_ok();
    json_response(
        if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        json!({
            "status": if healthy { "healthy" } else { "unhealthy" },
            "nats": describe(nats),
            "jetstream": describe(jetstream),
            "object_store": describe(store),
        }),
    )
}
