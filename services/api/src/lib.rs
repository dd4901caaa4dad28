//! The HTTP API (poem), compatible with the service jetscribe replaces: `POST /process` (streamed
//! upload → 202 with a job id, `upload.rs`), `GET /status/{id}`, `GET /result/{id}`
//! (200/202/500/404; subtitles in `subtitles.rs`), `GET /jobs` and `GET /jobs/processing`
//! (`jobs.rs`), `GET /models` (the transcriber's model pools, `models.rs`), `GET /metrics`
//! (Prometheus, `metrics.rs`), `GET /health`; `live.rs`: `/events/{id}` (SSE) and the synchronous
//! `/process-audio`, `/process-video`; `openai.rs`: OpenAI's audio API (`/v1/audio/transcriptions`,
//! `/v1/audio/translations`, `/v1/models`); `openapi.rs`: every route as one poem-openapi service,
//! hence `/openapi.json` and Swagger UI at `/docs`; `web.rs`: the web page at `/`. It owns request parsing, validation and the response
//! bodies (`views.rs`), and what one client may take: keys (`auth.rs`), rates, slots and free space
//! (`limits.rs`), connections (`connections.rs`) and multipart bounds (`part_headers.rs`); the work
//! happens in the pipeline stages.

mod auth;
mod connections;
mod followers;
mod janitor;
mod jobs;
mod limits;
mod live;
mod metrics;
mod models;
mod openai;
mod openapi;
mod part_headers;
mod pattern;
mod subtitles;
mod upload;
mod views;
mod web;

use std::net::SocketAddr;
use std::time::Duration;

use connections::LimitedAcceptor;
use jetscribe_blobstore::BlobStore;
use jetscribe_nats::{ErrorChain, Pipeline};
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::middleware::Tracing;
use poem::{EndpointExt, IntoResponse, Request, Response, Route, Server, get};
use proto_msgs::{EndedJobBody, JobRecord, JobResult, JobStatus};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use uuid::Uuid;

pub use auth::{ApiKeys, Caller, KeysError};
pub use connections::ConnectionLimits;
pub use janitor::{JanitorSettings, run_janitor};
pub use limits::RateLimit;
use limits::{RateLimiter, Slots};
pub use metrics::metrics_server;
use views::{ErrorBody, Health, JobStatusView, RunningJob};

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest upload accepted, in bytes (MAX_FILE_SIZE).
    pub max_file_size: u64,
    /// Accept webhook URLs of loopback, private and link-local hosts (WEBHOOK_ALLOW_PRIVATE).
    pub webhook_allow_private: bool,
    /// How long the synchronous endpoints wait for a job (SYNC_TIMEOUT).
    pub sync_timeout: Duration,
    /// The API keys (API_KEYS, API_KEYS_FILE, ADMIN_KEYS); none: the API is open.
    pub keys: ApiKeys,
    /// Submissions per key (or per address, without keys) and period (RATE_LIMIT).
    pub rate_limit: Option<RateLimit>,
    /// Uploads received at once (MAX_CONCURRENT_UPLOADS).
    pub max_concurrent_uploads: usize,
    /// Event streams and synchronous waits open at once (MAX_EVENT_STREAMS).
    pub max_event_streams: usize,
    /// Uploads are refused while the local store's disk has less free (MIN_FREE_SPACE).
    pub min_free_space: u64,
    /// Connection count and timeouts.
    pub connections: ConnectionLimits,
    /// How long requests in flight get to finish once the server shuts down (SHUTDOWN_GRACE).
    pub shutdown_grace: Duration,
}

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub pipeline: Pipeline,
    pub blobs: BlobStore,
    pub settings: ApiSettings,
    limits: Limits,
    followers: followers::JobFollowers,
    /// The transcriber's model pools, as last read.
    models: std::sync::Arc<models::ServedModels>,
    /// Cancelled when the server begins to shut down: event streams end (their clients
    /// reconnect elsewhere with Last-Event-ID) and synchronous waits answer with the job's id.
    shutdown: CancellationToken,
}

/// The counters behind the settings' limits, shared by every request.
#[derive(Clone, Debug)]
struct Limits {
    submissions: RateLimiter,
    uploads: Slots,
    event_streams: Slots,
}

impl ApiState {
    pub fn new(pipeline: Pipeline, blobs: BlobStore, settings: ApiSettings) -> Self {
        let limits = Limits {
            submissions: RateLimiter::new(settings.rate_limit),
            uploads: Slots::new(
                "uploads",
                "MAX_CONCURRENT_UPLOADS",
                settings.max_concurrent_uploads,
            ),
            event_streams: Slots::new(
                "event streams",
                "MAX_EVENT_STREAMS",
                settings.max_event_streams,
            ),
        };
        Self {
            pipeline,
            blobs,
            settings,
            limits,
            followers: followers::JobFollowers::default(),
            models: Default::default(),
            shutdown: CancellationToken::new(),
        }
    }
}

/// The routes of the API: the documented ones (`openapi.rs`), its document and Swagger
/// UI, and the web page; behind the keys (`auth.rs`) and OpenAI's error shape under `/v1/`.
pub fn app(state: ApiState) -> impl poem::Endpoint {
    let keys = state.settings.keys.clone();
    let (routes, document) = openapi::service();
    let docs = openapi::docs_page(&routes, &document);
    Route::new()
        .nest("/", routes)
        .at(
            "/openapi.json",
            get(web::Page::new("application/json", document)),
        )
        .at("/docs", get(web::Page::new(web::HTML, docs)))
        .data(state)
        .around(json_refusals)
        .around(move |endpoint, request| auth::authenticate(endpoint, request, keys.clone()))
        .around(openai::openai_errors)
        .with(Tracing)
}

/// The API's listening socket, bound before it serves: with port 0 the system picks the port,
/// which [`ApiServer::local_addr`] tells.
pub struct ApiServer {
    acceptor: TcpAcceptor,
    local_addr: SocketAddr,
}

impl ApiServer {
    pub async fn bind(addr: &str) -> std::io::Result<Self> {
        let acceptor = TcpListener::bind(addr.to_owned()).into_acceptor().await?;
        let local_addr = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().copied())
            .ok_or_else(|| std::io::Error::other("the listener has no socket address"))?;
        Ok(Self {
            acceptor,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves the API until `shutdown` is cancelled: then no connection is accepted, and the
    /// requests in flight (uploads) get SHUTDOWN_GRACE to finish.
    pub async fn run(
        self,
        mut state: ApiState,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        info!(addr = %self.local_addr, "HTTP API listening");
        let (limits, grace) = (state.settings.connections, state.settings.shutdown_grace);
        state.shutdown = shutdown.clone();
        Server::new_with_acceptor(LimitedAcceptor::new(self.acceptor, limits))
            .idle_timeout(limits.idle_timeout)
            .run_with_graceful_shutdown(
                app(state),
                async move { shutdown.cancelled().await },
                Some(grace),
            )
            .await
    }
}

/// How much of a refused request's body is read and thrown away before answering. HTTP/1.1
/// clients that write the whole body before reading the answer (most libraries; curl reads early
/// answers) would otherwise see a broken pipe instead of the 4xx. Past this, the connection is
/// closed: a refused multi-GB upload is not read to its end.
pub(crate) const DISCARD_LIMIT: u64 = 64 * 1024 * 1024;
pub(crate) const DISCARD_TIME: Duration = Duration::from_secs(2);

/// Reads and drops at most [`DISCARD_LIMIT`] of `body`, for at most [`DISCARD_TIME`].
pub(crate) async fn discard_body(body: poem::Body) {
    use futures::StreamExt as _;
    let discard = async {
        let mut chunks = body.into_bytes_stream();
        let mut discarded = 0u64;
        while let Some(Ok(chunk)) = chunks.next().await {
            discarded += chunk.len() as u64;
            if discarded > DISCARD_LIMIT {
                return;
            }
        }
    };
    if tokio::time::timeout(DISCARD_TIME, discard).await.is_err() {
        tracing::debug!("refused request body not read to its end");
    }
}

/// `body` as JSON text (`{}` if it cannot be: our bodies always can).
pub(crate) fn json_text(body: &impl Serialize) -> String {
    serde_json::to_string(body).unwrap_or_else(|err| {
        error!(error = %err, "body not serializable");
        "{}".to_owned()
    })
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(json) => Response::builder()
            .status(status)
            .content_type("application/json")
            .body(json),
        Err(err) => {
            error!(error = %err, "response body not serializable");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// When a client refused because a dependency (NATS, the object store) failed may try again.
pub(crate) const RETRY_AFTER_OUTAGE: Duration = Duration::from_secs(5);

/// A refused request, answered as the original service did: `{"detail": "..."}`, where the
/// detail names the field at fault and why.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {detail}")]
pub(crate) struct ApiError {
    status: StatusCode,
    detail: String,
    /// When the client may try again (503, 429, 507), sent as Retry-After.
    retry_after: Option<Duration>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Tells the client to try again after `wait` (whole seconds, at least 1).
    pub(crate) fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// 503 for a dependency that failed: logged here with its causes, named to the client,
    /// who may try again in a few seconds.
    pub(crate) fn unavailable(what: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        error!(error = %ErrorChain(err), "{what} unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{what} unavailable"),
        )
        .retry_after(RETRY_AFTER_OUTAGE)
    }
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        let mut response = json_response(
            self.status,
            &ErrorBody {
                detail: &self.detail,
            },
        );
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert("retry-after", seconds.max(1).into());
        }
        response
    }
}

/// Every refusal in `{"detail"}`, as the original service (FastAPI) answered them: poem's own
/// (an unknown route, a wrong method, a query or path parameter it cannot parse) are plain text
/// until they pass here.
async fn json_refusals<E: poem::Endpoint>(endpoint: E, request: Request) -> poem::Result<Response> {
    match endpoint.call(request).await {
        Ok(response) => Ok(response.into_response()),
        Err(err) if err.is::<ApiError>() => Err(err),
        Err(err) => {
            let detail = match err.to_string() {
                // poem-openapi names a path parameter it could not read by its position.
                text if text.starts_with("failed to parse path") => {
                    "path: a parameter is not valid UTF-8 once percent-decoded".to_owned()
                }
                text => text,
            };
            Err(ApiError::new(err.status(), detail).into())
        }
    }
}

pub(crate) fn parse_job_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("job_id {raw:?} is not a valid UUID"),
        )
    })
}

/// The record of a job the caller may see: another key's job is "not found", as an unknown one.
pub(crate) async fn load_record(
    state: &ApiState,
    caller: &Caller,
    job_id: Uuid,
) -> Result<JobRecord, ApiError> {
    match state.pipeline.jobs().get(job_id).await {
        Ok(Some(record)) if caller.may_see(record.owner.as_deref()) => Ok(record),
        Ok(_) => Err(ApiError::new(StatusCode::NOT_FOUND, "Job not found")),
        Err(err) => Err(ApiError::unavailable("job store", &err)),
    }
}

/// `GET /status/{id}`.
pub(crate) async fn job_status(
    state: &ApiState,
    caller: &Caller,
    job_id: &str,
) -> Result<Response, ApiError> {
    let record = load_record(state, caller, parse_job_id(job_id)?).await?;
    Ok(json_response(StatusCode::OK, &JobStatusView::from(&record)))
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

    /// Content type and file extension of the text formats.
    fn file_type(self) -> (&'static str, &'static str) {
        match self {
            ResultFormat::Json => ("application/json", "json"),
            ResultFormat::Text => ("text/plain; charset=utf-8", "txt"),
            ResultFormat::Srt => ("application/x-subrip; charset=utf-8", "srt"),
            ResultFormat::Vtt => ("text/vtt; charset=utf-8", "vtt"),
        }
    }
}

/// `GET /result/{id}?format=`.
pub(crate) async fn job_result(
    state: &ApiState,
    caller: &Caller,
    job_id: &str,
    format: Option<&str>,
) -> Result<Response, ApiError> {
    let format = ResultFormat::parse(format)?;
    let record = load_record(state, caller, parse_job_id(job_id)?).await?;
    result_response(state, &record, format).await
}

/// `/result`'s answer for `record`: 202 while it runs, 500 if it failed, the result otherwise.
pub(crate) async fn result_response(
    state: &ApiState,
    record: &JobRecord,
    format: ResultFormat,
) -> Result<Response, ApiError> {
    match record.status {
        JobStatus::Pending | JobStatus::Processing => {
            return Ok(json_response(
                StatusCode::ACCEPTED,
                &RunningJob::from(record),
            ));
        }
        JobStatus::Failed => {
            let body = EndedJobBody::failed(record);
            return Ok(json_response(StatusCode::INTERNAL_SERVER_ERROR, &body));
        }
        JobStatus::Cancelled => {
            let body = EndedJobBody::cancelled(record);
            return Ok(json_response(StatusCode::GONE, &body));
        }
        JobStatus::Completed => {}
    }
    let result = load_result(state, record).await?;
    let body = match format {
        ResultFormat::Json => {
            let body = EndedJobBody::completed(record, result);
            return Ok(json_response(StatusCode::OK, &body));
        }
        ResultFormat::Text => format!("{}\n", result.transcript),
        ResultFormat::Srt => subtitles::srt(&result.segments),
        ResultFormat::Vtt => subtitles::vtt(&result.segments),
    };
    let (content_type, extension) = format.file_type();
    Ok(Response::builder()
        .status(StatusCode::OK)
        .content_type(content_type)
        .header(
            "Content-Disposition",
            format!("inline; filename=\"{}.{extension}\"", record.job_id),
        )
        .body(body))
}

/// The result of a completed job.
pub(crate) async fn load_result(
    state: &ApiState,
    record: &JobRecord,
) -> Result<JobResult, ApiError> {
    let result_blob = record
        .blobs
        .result
        .as_deref()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "result missing"))?;
    state
        .blobs
        .get_json(result_blob)
        .await
        .map_err(|err| ApiError::unavailable("result", &err))
}

/// `GET /health`: 200 when NATS, JetStream and the object store answer, 503 otherwise.
pub(crate) async fn health_check(state: &ApiState) -> Response {
    let nats = (state.pipeline.check_connection()).map_err(|err| unhealthy("NATS", &err));
    let jetstream = match &nats {
        Ok(()) => {
            (state.pipeline.check_jetstream().await).map_err(|err| unhealthy("JetStream", &err))
        }
        Err(_) => Err("not checked: no NATS connection"),
    };
    let store = (state.blobs.check().await).map_err(|err| unhealthy("object store", &err));
    let healthy = nats.is_ok() && jetstream.is_ok() && store.is_ok();
    let describe = |result: Result<(), &'static str>| result.err().unwrap_or("ok");
    let body = Health {
        status: if healthy { "healthy" } else { "unhealthy" },
        nats: describe(nats),
        jetstream: describe(jetstream),
        object_store: describe(store),
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

/// A failed dependency of `/health`: its causes (addresses, paths) go to the log; the answer
/// says only that it is unavailable.
fn unhealthy(what: &str, err: &(dyn std::error::Error + 'static)) -> &'static str {
    tracing::warn!(error = %ErrorChain(err), "health check: {what} unavailable");
    "unavailable"
}
