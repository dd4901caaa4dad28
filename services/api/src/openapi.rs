//! The routes of the API as one poem-openapi service ([`Routes`]): each operation calls its
//! module's handler, and declares what it can answer ([`Documented`]), so the OpenAPI 3
//! document (`GET /openapi.json`, Swagger UI at `/docs`) is generated from the routes that
//! serve. Uploads stay raw, streamed routes: [`Upload`] hands the body to `upload.rs` and
//! describes its form by hand; bodies stay serde's, described by `schemas.rs`.

mod schemas;

use std::marker::PhantomData;

use poem::web::Data;
use poem::{IntoResponse, Request, RequestBody, Response};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::registry::{
    MetaMediaType, MetaRequest, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, OpenApi};
use poem_openapi::{OpenApiService, Tags};
use serde_json::{Value, json};

use crate::upload::{FormSpec, SubmittedJob};
use crate::{ApiError, ApiState, Caller, jobs, live, metrics, models, openai, upload, web};

#[derive(Tags)]
enum Tag {
    /// Submitting media and following its job.
    Jobs,
    /// OpenAI's audio API, on the same jobs.
    OpenAi,
    /// The service itself.
    Service,
}

/// Every documented route; `lib.rs` adds the pages that are not API (`/`, `/docs`).
pub(crate) struct Routes;

#[OpenApi]
impl Routes {
    /// Submit a media file: 202 at once with the job id (the upload is streamed to storage).
    #[oai(path = "/process", method = "post", tag = "Tag::Jobs")]
    async fn process(
        &self,
        /// A repeat with the same key (per API key, kept 24 h) returns the job it created.
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        job: Upload<ProcessForm>,
    ) -> Answered<Submitted> {
        answer(Ok(upload::process(job.job)))
    }

    /// Submit, and answer with the result once the job ends (or 504 after SYNC_TIMEOUT).
    #[oai(path = "/process-audio", method = "post", tag = "Tag::Jobs")]
    async fn process_audio(
        &self,
        state: Data<&ApiState>,
        caller: Data<&Caller>,
        job: Upload<ProcessForm>,
    ) -> Answered<Waited> {
        answer(live::process_and_wait(&state, &caller, job.job).await)
    }

    /// The same as `/process-audio` (the original service had both).
    #[oai(path = "/process-video", method = "post", tag = "Tag::Jobs")]
    async fn process_video(
        &self,
        state: Data<&ApiState>,
        caller: Data<&Caller>,
        job: Upload<ProcessForm>,
    ) -> Answered<Waited> {
        answer(live::process_and_wait(&state, &caller, job.job).await)
    }

    /// The job's events as Server-Sent Events (history, then live, until it ends); send
    /// `Last-Event-ID` to resume.
    #[oai(path = "/events/:job_id", method = "get", tag = "Tag::Jobs")]
    async fn events(
        &self,
        request: &Request,
        state: Data<&ApiState>,
        caller: Data<&Caller>,
        job_id: Path<String>,
        /// The `id:` of the last event received: the stream goes on after it.
        #[oai(name = "Last-Event-ID")]
        _last_event_id: Header<Option<String>>,
    ) -> Answered<Events> {
        answer(live::job_events(request, &state, &caller, &job_id).await)
    }

    /// Where a job stands: status, progress, step, each stage's run, the webhook.
    #[oai(path = "/status/:job_id", method = "get", tag = "Tag::Jobs")]
    async fn status(
        &self,
        state: Data<&ApiState>,
        caller: Data<&Caller>,
        job_id: Path<String>,
    ) -> Answered<Status> {
        answer(crate::job_status(&state, &caller, &job_id).await)
    }

    /// The result: 200 when completed, 202 while running, 500 failed, 410 cancelled.
    #[oai(path = "/result/:job_id", method = "get", tag = "Tag::Jobs")]
    async fn result(
        &self,
        state: Data<&ApiState>,
        caller: Data<&Caller>,
        job_id: Path<String>,
        /// `json` (default), `txt`, `srt` or `vtt`.
        format: Query<Option<String>>,
    ) -> Answered<ResultAnswers> {
        answer(crate::job_result(&state, &caller, &job_id, format.as_deref()).await)
    }

    /// The caller's jobs, newest first, a page at a time.
    #[oai(path = "/jobs", method = "get", tag = "Tag::Jobs")]
    async fn jobs(
        &self,
        state: Data<&ApiState>,
        caller: Data<&Caller>,
        /// Only jobs in this status.
        status: Query<Option<String>>,
        /// Jobs per page, 1 to 100 (default 20).
        limit: Query<Option<String>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Answered<JobList> {
        let query = jobs::JobsQuery {
            status: status.0,
            limit: limit.0,
            cursor: cursor.0,
        };
        answer(jobs::list_jobs(&state, &caller, query).await)
    }

    /// The caller's jobs that have not ended, and each stage's queue.
    #[oai(path = "/jobs/processing", method = "get", tag = "Tag::Jobs")]
    async fn processing(&self, state: Data<&ApiState>, caller: Data<&Caller>) -> Answered<Active> {
        answer(jobs::active_jobs(&state, &caller).await)
    }

    /// A job as `/status` shows it and, for an admin key, its dead letter.
    #[oai(path = "/jobs/:job_id", method = "get", tag = "Tag::Jobs")]
    async fn job(
        &self,
        state: Data<&ApiState>,
        caller: Data<&Caller>,
        job_id: Path<String>,
    ) -> Answered<Detail> {
        answer(jobs::job_detail(&state, &caller, &job_id).await)
    }

    /// Cancel a job: its stages stop, its files are removed.
    #[oai(path = "/jobs/:job_id", method = "delete", tag = "Tag::Jobs")]
    async fn cancel(
        &self,
        state: Data<&ApiState>,
        caller: Data<&Caller>,
        job_id: Path<String>,
    ) -> Answered<Cancel> {
        answer(jobs::cancel_job(&state, &caller, &job_id).await)
    }

    /// The Whisper models served, the default first, each with its queue.
    #[oai(path = "/models", method = "get", tag = "Tag::Service")]
    async fn models(&self, state: Data<&ApiState>) -> Answered<ModelPools> {
        answer(models::list_models(&state).await)
    }

    /// Prometheus metrics.
    #[oai(path = "/metrics", method = "get", tag = "Tag::Service")]
    async fn metrics(&self, state: Data<&ApiState>) -> Answered<Metrics> {
        answer(Ok(metrics::metrics_response(&state.pipeline).await))
    }

    /// NATS, JetStream and the object store: 200 when all answer. Needs no key.
    #[oai(path = "/health", method = "get", tag = "Tag::Service")]
    async fn health(&self, state: Data<&ApiState>) -> Answered<HealthAnswers> {
        answer(Ok(crate::health_check(&state).await))
    }

    /// OpenAI's transcription: the answer comes when the job ends (`stream=true`: as it runs).
    #[oai(
        path = "/v1/audio/transcriptions",
        method = "post",
        tag = "Tag::OpenAi"
    )]
    async fn transcriptions(
        &self,
        state: Data<&ApiState>,
        caller: Data<&Caller>,
        job: Upload<TranscriptionForm>,
    ) -> Answered<OpenAiAudio> {
        answer(Ok(openai::create(&state, &caller, job.job).await))
    }

    /// OpenAI's translation: speech in any language to English text.
    #[oai(path = "/v1/audio/translations", method = "post", tag = "Tag::OpenAi")]
    async fn translations(
        &self,
        state: Data<&ApiState>,
        caller: Data<&Caller>,
        job: Upload<TranslationForm>,
    ) -> Answered<OpenAiAudio> {
        answer(Ok(openai::create(&state, &caller, job.job).await))
    }

    /// OpenAI's list of models: `whisper-1` (the default) and each model served.
    #[oai(path = "/v1/models", method = "get", tag = "Tag::OpenAi")]
    async fn openai_models(&self, state: Data<&ApiState>) -> Answered<OpenAiModels> {
        answer(openai::list_models(&state).await)
    }

    /// One model, as OpenAI describes it.
    #[oai(path = "/v1/models/:model", method = "get", tag = "Tag::OpenAi")]
    async fn openai_model(
        &self,
        state: Data<&ApiState>,
        model: Path<String>,
    ) -> Answered<OpenAiModel> {
        answer(openai::retrieve_model(&state, &model).await)
    }
}

/// The web page (`web.rs`): served by the service, which answers every path under `/`, but
/// not part of its document.
pub(crate) struct WebPages;

#[OpenApi]
impl WebPages {
    #[oai(path = "/", method = "get", hidden)]
    async fn web_page(&self) -> Answered<WebPage> {
        answer(Ok(web::page(web::HTML, web::INDEX)))
    }

    #[oai(path = "/web/app.js", method = "get", hidden)]
    async fn web_script(&self) -> Answered<WebPage> {
        answer(Ok(web::page(web::JAVASCRIPT, web::SCRIPT)))
    }

    #[oai(path = "/web/style.css", method = "get", hidden)]
    async fn web_style(&self) -> Answered<WebPage> {
        answer(Ok(web::page(web::CSS, web::STYLE)))
    }
}

/// Every route under `/`.
pub(crate) type Service = OpenApiService<(Routes, WebPages), ()>;

/// The service and its document: the document is the generated one with the API keys added as
/// security schemes (the keys are checked by `auth.rs`, around every route).
pub(crate) fn service() -> (Service, String) {
    let service = OpenApiService::new((Routes, WebPages), "jetscribe", env!("CARGO_PKG_VERSION"))
        .description(
            "Transcription of audio and video files of any size: submit, then follow the job \
             (`/status`, `/events`, a webhook) and fetch `/result`. OpenAI's audio API is served \
             on the same jobs under `/v1/`.",
        );
    let mut document: Value =
        serde_json::from_str(&service.spec()).expect("poem-openapi writes JSON");
    add_security(&mut document);
    add_query_options(&mut document);
    let document = serde_json::to_string_pretty(&document).expect("a JSON value");
    (service, document)
}

/// `Authorization: Bearer <key>` or `X-API-Key: <key>` on every route but `/health`.
fn add_security(document: &mut Value) {
    document["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "A key of API_KEYS (when the server has keys)."},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                   "description": "The same keys, in a header of their own."},
    });
    document["security"] = json!([{"bearer": []}, {"apiKey": []}]);
    document["paths"]["/health"]["get"]["security"] = json!([]);
}

/// `/process`'s options in the query string, as the original service read them (an extractor
/// of the body cannot declare parameters): the same names as the form's fields, whose value
/// wins when both are sent. The OpenAI routes read them too (`?channels=split`, say, which
/// OpenAI's form has no field for).
fn add_query_options(document: &mut Value) {
    let uploads = ["/process", "/process-audio", "/process-video"];
    let openai = ["/v1/audio/transcriptions", "/v1/audio/translations"];
    for path in uploads.into_iter().chain(openai) {
        let operation = &mut document["paths"][path]["post"];
        let mut parameters = match operation["parameters"].take() {
            Value::Array(parameters) => parameters,
            _ => Vec::new(),
        };
        parameters.extend(JOB_FIELDS.iter().map(|(name, description)| {
            json!({"name": name, "in": "query", "required": false,
                   "description": format!("{description} (the form field wins)"),
                   "schema": {"type": "string"}})
        }));
        operation["parameters"] = Value::Array(parameters);
    }
}

/// Swagger UI on `document`, all of it in one page (no request leaves the server).
pub(crate) fn docs_page(service: &Service, document: &str) -> String {
    service
        .swagger_ui_html()
        .replacen(&service.spec(), document, 1)
}

/// A route's answer: the response its handler built, with the responses it can give declared
/// by `D` for the document.
pub(crate) struct Answer<D> {
    response: Response,
    documented: PhantomData<fn() -> D>,
}

/// An operation's outcome: a refusal stays an error, for the log and the middleware.
pub(crate) type Answered<D> = poem::Result<Answer<D>>;

fn answer<D>(outcome: Result<Response, ApiError>) -> Answered<D> {
    let response = outcome?;
    Ok(Answer {
        response,
        documented: PhantomData,
    })
}

impl<D: Send> IntoResponse for Answer<D> {
    fn into_response(self) -> Response {
        self.response
    }
}

impl<D: Documented> ApiResponse for Answer<D> {
    fn meta() -> MetaResponses {
        let mut responses: Vec<MetaResponse> = D::RESPONSES.iter().map(Doc::meta).collect();
        responses.extend(D::AUTH.unauthorized().map(|doc| doc.meta()));
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        for doc in D::RESPONSES.iter().chain(D::AUTH.unauthorized()) {
            if let Body::Json { register, .. } = doc.body {
                register(registry);
            }
        }
    }
}

/// The responses a route can give.
pub(crate) trait Documented: Send {
    const RESPONSES: &'static [Doc];
    const AUTH: Auth = Auth::Key;
}

/// Whether a route needs a key, and the shape of its 401.
pub(crate) enum Auth {
    Key,
    /// Refused in OpenAI's shape, as every refusal under `/v1/`.
    OpenAiKey,
    Public,
}

impl Auth {
    fn unauthorized(&self) -> Option<&'static Doc> {
        match self {
            Auth::Key => Some(&UNAUTHORIZED),
            Auth::OpenAiKey => Some(&OPENAI_UNAUTHORIZED),
            Auth::Public => None,
        }
    }
}

/// One response: its status, when it comes, and its body.
pub(crate) struct Doc {
    status: u16,
    description: &'static str,
    body: Body,
}

/// What a response carries.
#[derive(Clone, Copy)]
enum Body {
    /// JSON of a schema, or text of these media types (`?format=`, `response_format`).
    Json {
        schema: fn() -> MetaSchemaRef,
        register: fn(&mut Registry),
        or_text: &'static [&'static str],
    },
    Text(&'static [&'static str]),
    Empty,
}

const fn json<T: Type>() -> Body {
    json_or_text::<T>(&[])
}

const fn json_or_text<T: Type>(or_text: &'static [&'static str]) -> Body {
    Body::Json {
        schema: T::schema_ref,
        register: T::register,
        or_text,
    }
}

impl Doc {
    fn meta(&self) -> MetaResponse {
        let text = || MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")));
        let content = match self.body {
            Body::Json {
                schema, or_text, ..
            } => std::iter::once(media("application/json", schema()))
                .chain(or_text.iter().map(|ty| media(ty, text())))
                .collect(),
            Body::Text(types) => types.iter().map(|ty| media(ty, text())).collect(),
            Body::Empty => Vec::new(),
        };
        MetaResponse {
            description: self.description,
            status: Some(self.status),
            status_range: None,
            content,
            headers: Vec::new(),
        }
    }
}

fn media(content_type: &'static str, schema: MetaSchemaRef) -> MetaMediaType {
    MetaMediaType {
        content_type,
        schema,
    }
}

/// Declares a [`Documented`] type: `name: [(status, "when", body), …]`.
macro_rules! responses {
    ($(#[$doc:meta])* $name:ident $(($auth:expr))?: [$(($status:literal, $description:literal, $body:expr)),* $(,)?]) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl Documented for $name {
            const RESPONSES: &'static [Doc] = &[$(Doc { status: $status, description: $description, body: $body }),*];
            $(const AUTH: Auth = $auth;)?
        }
    };
}

const ERROR: Body = json::<schemas::Error>();
const OPENAI_ERROR: Body = json::<schemas::OpenAiError>();
const UNAUTHORIZED: Doc = Doc {
    status: 401,
    description: "No API key, or not a valid one (when the server has keys)",
    body: ERROR,
};
const OPENAI_UNAUTHORIZED: Doc = Doc {
    status: 401,
    description: "No API key, or not a valid one (`code`: `invalid_api_key`)",
    body: OPENAI_ERROR,
};

responses!(Submitted: [
    (202, "Accepted: the job is queued", json::<schemas::AcceptedJob>()),
    (200, "The job submitted earlier with this Idempotency-Key", json::<schemas::AcceptedJob>()),
    (400, "No file, a body that is not multipart or a malformed one, a bad Idempotency-Key", ERROR),
    (413, "The file is larger than MAX_FILE_SIZE", ERROR),
    (422, "An empty file, or a form field that is not valid (the detail names it)", ERROR),
    (429, "RATE_LIMIT: too many submissions (see Retry-After)", ERROR),
    (431, "A part's headers are too long", ERROR),
    (500, "The job could not be queued", ERROR),
    (503, "Too many uploads at once (MAX_CONCURRENT_UPLOADS), or a store is unavailable (see Retry-After)", ERROR),
    (507, "The store's disk is too full to take uploads", ERROR),
]);

responses!(Waited: [
    (200, "The job completed: its result", json::<schemas::EndedJob>()),
    (500, "The job failed (`EndedJob`), or its result is missing", json::<schemas::Failed>()),
    (410, "The job was cancelled", json::<schemas::EndedJob>()),
    (504, "SYNC_TIMEOUT passed: the job goes on; poll /result", json::<schemas::StillRunning>()),
    (400, "No file, a body that is not multipart or a malformed one", ERROR),
    (413, "The file is larger than MAX_FILE_SIZE", ERROR),
    (422, "An empty file, or a form field that is not valid (the detail names it)", ERROR),
    (429, "RATE_LIMIT: too many submissions", ERROR),
    (431, "A part's headers are too long", ERROR),
    (503, "Too many uploads or waits at once, a store is unavailable, or the job cannot be followed (`StillRunning`: it goes on)", json::<schemas::Unavailable>()),
    (507, "The store's disk is too full to take uploads", ERROR),
]);

responses!(Events: [
    (200, "The events: `event:` is the kind, `data:` the event as JSON, `id:` its sequence", Body::Text(&["text/event-stream"])),
    (204, "The job has ended and Last-Event-ID is its last event", Body::Empty),
    (400, "job_id or Last-Event-ID is not valid", ERROR),
    (404, "No such job (or another key's)", ERROR),
    (503, "Too many event streams open (MAX_EVENT_STREAMS), or the store is unavailable", ERROR),
]);

responses!(Status: [
    (200, "The job", json::<schemas::JobState>()),
    (400, "job_id is not a UUID", ERROR),
    (404, "No such job (or another key's)", ERROR),
    (503, "The job store is unavailable", ERROR),
]);

responses!(ResultAnswers: [
    (200, "The job completed: its result, or the file of `format`",
     json_or_text::<schemas::EndedJob>(&["text/plain", "application/x-subrip", "text/vtt"])),
    (202, "The job is still running", json::<schemas::RunningJob>()),
    (500, "The job failed (`EndedJob`), or its result is missing", json::<schemas::Failed>()),
    (410, "The job was cancelled", json::<schemas::EndedJob>()),
    (400, "job_id or format is not valid", ERROR),
    (404, "No such job (or another key's)", ERROR),
    (503, "A store is unavailable", ERROR),
]);

responses!(JobList: [
    (200, "A page of jobs", json::<schemas::JobPage>()),
    (400, "status, limit or cursor is not valid", ERROR),
    (503, "The job store is unavailable", ERROR),
]);

responses!(Active: [
    (200, "The jobs running", json::<schemas::ActiveJobs>()),
    (503, "The job store is unavailable", ERROR),
]);

responses!(Detail: [
    (200, "The job", json::<schemas::JobDetail>()),
    (400, "job_id is not a UUID", ERROR),
    (404, "No such job (or another key's)", ERROR),
    (503, "The job store is unavailable", ERROR),
]);

responses!(Cancel: [
    (200, "Cancelled (or it was already)", json::<schemas::JobState>()),
    (400, "job_id is not a UUID", ERROR),
    (404, "No such job (or another key's)", ERROR),
    (409, "The job has already completed or failed", ERROR),
    (503, "The job store is unavailable", ERROR),
]);

responses!(ModelPools: [
    (200, "The models", json::<schemas::Models>()),
    (503, "The queues cannot be read", ERROR),
]);

responses!(Metrics: [
    (200, "OpenMetrics text", Body::Text(&["application/openmetrics-text"])),
]);

responses!(HealthAnswers (Auth::Public): [
    (200, "Every dependency answers", json::<schemas::Health>()),
    (503, "A dependency does not answer", json::<schemas::Health>()),
]);

responses!(OpenAiAudio (Auth::OpenAiKey): [
    (200, "The transcript in `response_format`; with `stream=true`, `transcript.text.delta` events then `transcript.text.done`",
     json_or_text::<schemas::TranscriptionBody>(&["text/plain", "text/event-stream"])),
    (400, "A form field is not valid (`param` names it)", OPENAI_ERROR),
    (410, "The job was cancelled", OPENAI_ERROR),
    (413, "The file is larger than MAX_FILE_SIZE", OPENAI_ERROR),
    (429, "RATE_LIMIT: too many requests", OPENAI_ERROR),
    (431, "A part's headers are too long", OPENAI_ERROR),
    (500, "The transcription failed", OPENAI_ERROR),
    (503, "Too many uploads or waits at once, or a store is unavailable", OPENAI_ERROR),
    (504, "SYNC_TIMEOUT passed: the job goes on (X-Job-Id names it; poll /result)", OPENAI_ERROR),
    (507, "The store's disk is too full", OPENAI_ERROR),
]);

responses!(WebPage (Auth::Public): [
    (200, "The web page, its script or its style", Body::Text(&["text/html"])),
]);

responses!(OpenAiModels (Auth::OpenAiKey): [
    (200, "The models", json::<schemas::ModelList>()),
    (503, "The queues cannot be read", OPENAI_ERROR),
]);

responses!(OpenAiModel (Auth::OpenAiKey): [
    (200, "The model", json::<schemas::Model>()),
    (404, "Not served", OPENAI_ERROR),
    (503, "The queues cannot be read", OPENAI_ERROR),
]);

/// An upload route's body: the multipart form of `F`, streamed to storage and queued as a job
/// before the operation runs ([`SubmittedJob::receive`]).
pub(crate) struct Upload<F> {
    job: SubmittedJob,
    form: PhantomData<F>,
}

/// A route's form: how it is read, and its fields for the document.
pub(crate) trait UploadForm: Send {
    fn spec() -> FormSpec;
    /// The fields beside `file`: name and description.
    const FIELDS: &'static [(&'static str, &'static str)];
}

impl<'a, F: UploadForm> ApiExtractor<'a> for Upload<F> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some(
                "multipart/form-data, streamed: put the options before `file` (`/process`'s are \
                 also read from the query string)",
            ),
            content: vec![media("multipart/form-data", form_schema(F::FIELDS))],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _options: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let job = SubmittedJob::receive(request, body, F::spec()).await?;
        Ok(Self {
            job,
            form: PhantomData,
        })
    }
}

fn form_schema(fields: &'static [(&'static str, &'static str)]) -> MetaSchemaRef {
    let mut file = MetaSchema::new_with_format("string", "binary");
    file.description = Some("The media: any format ffmpeg reads");
    let mut schema = MetaSchema::new("object");
    schema.required = vec!["file"];
    schema.properties = vec![("file", MetaSchemaRef::Inline(Box::new(file)))];
    for (name, description) in fields {
        let mut field = MetaSchema::new("string");
        field.description = Some(description);
        schema
            .properties
            .push((name, MetaSchemaRef::Inline(Box::new(field))));
    }
    MetaSchemaRef::Inline(Box::new(schema))
}

/// The options of `/process` (also accepted in the query string, as by the original service).
const JOB_FIELDS: &[(&str, &str)] = &[
    ("language", "ISO 639-1 code; detected when absent"),
    (
        "model",
        "A served model (GET /models); the default when absent",
    ),
    (
        "word_timestamps",
        "true: each segment's words with their times",
    ),
    ("webhook_url", "Where to POST the result (signed)"),
    ("prompt", "Initial prompt of the decoder"),
    ("hotwords", "Words to favour"),
    ("task", "transcribe (default) or translate (to English)"),
    ("translate", "true: task=translate"),
    ("temperature", "The first decoding temperature, 0 to 1"),
    ("beam_size", "1 to 10"),
    (
        "channels",
        "mix (default) or split: each channel on its own",
    ),
];

pub(crate) struct ProcessForm;

impl UploadForm for ProcessForm {
    fn spec() -> FormSpec {
        FormSpec::default()
    }
    const FIELDS: &'static [(&'static str, &'static str)] = JOB_FIELDS;
}

/// OpenAI's fields; any of `/process`'s is accepted too.
const OPENAI_FIELDS: &[(&str, &str)] = &[
    ("model", "whisper-1 (the default model) or a served model"),
    ("language", "ISO 639-1 code"),
    ("prompt", "Initial prompt of the decoder"),
    (
        "response_format",
        "json (default), text, srt, vtt or verbose_json",
    ),
    ("temperature", "The first decoding temperature, 0 to 1"),
    (
        "timestamp_granularities[]",
        "segment and/or word (with verbose_json)",
    ),
    ("stream", "true: server-sent events as the job runs"),
];

pub(crate) struct TranscriptionForm;

impl UploadForm for TranscriptionForm {
    fn spec() -> FormSpec {
        openai::TRANSCRIPTIONS
    }
    const FIELDS: &'static [(&'static str, &'static str)] = OPENAI_FIELDS;
}

pub(crate) struct TranslationForm;

impl UploadForm for TranslationForm {
    fn spec() -> FormSpec {
        openai::TRANSLATIONS
    }
    const FIELDS: &'static [(&'static str, &'static str)] = OPENAI_FIELDS;
}
