//! `POST /process`: the upload is streamed to the object store as it arrives (never held whole in
//! memory), counted against MAX_FILE_SIZE, and only then is the job created and queued. Whatever
//! stops a submission before its job is queued (a refusal, a broken or abandoned connection)
//! leaves no file behind ([`UploadCleanup`]).

use futures::StreamExt;
use jetscribe_blobstore::BlobStore;
use jetscribe_nats::ErrorChain;
use poem::http::StatusCode;
use poem::web::{Field, Multipart, Query};
use poem::{FromRequest, Request, RequestBody, Response};
use proto_msgs::{
    Channels, EventKind, JobBlobs, JobOptions, JobRecord, JobStatus, ModelName, Submission, Task,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::io::ReaderStream;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::part_headers::{BodyGuard, MAX_PART_HEADER, guard_part_headers};
use crate::views::AcceptedJob;
use crate::{
    ApiError, ApiState, Caller, DISCARD_LIMIT, DISCARD_TIME, discard_body, json_response, limits,
    load_record,
};

/// Read size of the upload stream: the unit of memory one upload holds before the store's parts.
const READ_CHUNK: usize = 256 * 1024;

/// Options accepted in the query string (the original service) or as form fields.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ProcessParams {
    language: Option<String>,
    webhook_url: Option<String>,
    word_timestamps: Option<String>,
    model: Option<String>,
    prompt: Option<String>,
    hotwords: Option<String>,
    task: Option<String>,
    translate: Option<String>,
    temperature: Option<String>,
    beam_size: Option<String>,
    channels: Option<String>,
}

/// `POST /process`'s answer: 202 with the job queued, 200 for a replayed `Idempotency-Key`.
pub(crate) fn process(job: SubmittedJob) -> Response {
    let (status, message) = match job.replayed {
        false => (
            StatusCode::ACCEPTED,
            "File uploaded; processing has started",
        ),
        true => (
            StatusCode::OK,
            "Submitted earlier with this Idempotency-Key",
        ),
    };
    let accepted = AcceptedJob {
        job_id: job.job_id,
        status: job.status,
        created_at: job.created_at,
        filename: job.filename,
        size_bytes: job.size_bytes,
        message,
    };
    json_response(status, &accepted)
}

/// A job accepted and queued. As an extractor, the request's upload is stored and its job
/// queued ([`submit`]) before the handler runs: the submission routes share it. With an
/// `Idempotency-Key` seen before, it is the job submitted then (`replayed`), and the body is
/// not stored again.
pub(crate) struct SubmittedJob {
    pub job_id: Uuid,
    pub status: JobStatus,
    pub created_at: OffsetDateTime,
    pub filename: String,
    pub size_bytes: u64,
    pub replayed: bool,
    /// The form fields of the route's [`FormSpec::route_fields`], as sent (none when replayed).
    pub route_fields: Vec<(String, String)>,
}

/// How a route's form differs from `/process`'s: fields that shape its answer rather than the
/// job, an alias of the default model, a task of its own; the default is `/process`'s.
#[derive(Clone, Copy)]
pub(crate) struct FormSpec {
    /// Fields the route reads itself; each goes through `apply` as it arrives (before the file
    /// is stored, when it comes first), which checks it and sets what it implies for the job.
    pub route_fields: &'static [&'static str],
    pub apply: fn(name: &str, value: &str, options: &mut JobOptions) -> Result<(), ApiError>,
    /// A model name that stands for the default model (OpenAI's `whisper-1`).
    pub default_model_alias: Option<&'static str>,
    /// The task of every job of the route, whatever the form says.
    pub task: Option<Task>,
}

impl Default for FormSpec {
    fn default() -> Self {
        Self {
            route_fields: &[],
            apply: |_, _, _| Ok(()),
            default_model_alias: None,
            task: None,
        }
    }
}

impl SubmittedJob {
    fn replayed(record: &JobRecord) -> Self {
        Self {
            job_id: record.job_id,
            status: record.status,
            created_at: record.created_at,
            filename: record.filename.clone(),
            size_bytes: record.size_bytes,
            replayed: true,
            route_fields: Vec::new(),
        }
    }
}

impl SubmittedJob {
    /// Stores the request's upload and queues its job, on the form of `spec`.
    pub(crate) async fn receive(
        request: &Request,
        body: &mut RequestBody,
        spec: FormSpec,
    ) -> poem::Result<Self> {
        let state = request
            .data::<ApiState>()
            .expect("the routes carry the API state");
        let caller = request
            .extensions()
            .get::<Caller>()
            .expect("authentication runs before every route");
        let Query(params) = Query::<ProcessParams>::from_request(request, body).await?;
        let replay_key = match idempotency_key(caller, request, &spec) {
            Ok(key) => key,
            Err(refused) => return refuse(body, refused).await,
        };
        if let Some(key) = &replay_key {
            match earlier_job(state, caller, key).await {
                Ok(Some(job)) => return drain_then(body, Ok(job)).await,
                Ok(None) => {}
                Err(refused) => return refuse(body, refused).await,
            }
        }
        let _upload_slot = match admit(state, caller, request) {
            Ok(slot) => slot,
            Err(refused) => return refuse(body, refused).await,
        };
        let mut form = UploadForm::from_request(request, body).await?;
        let job = submit(state, caller, params, &spec, &mut form).await?;
        if let Some(key) = replay_key {
            remember(state, &key, job.job_id).await;
        }
        Ok(job)
    }
}

/// Refused before a byte is stored: the body is drained so that the client sees why.
async fn refuse(body: &mut RequestBody, refused: ApiError) -> poem::Result<SubmittedJob> {
    drain_then(body, Err(refused)).await
}

async fn drain_then(
    body: &mut RequestBody,
    answer: Result<SubmittedJob, ApiError>,
) -> poem::Result<SubmittedJob> {
    if let Ok(body) = body.take() {
        discard_body(body).await;
    }
    answer.map_err(Into::into)
}

/// The longest `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The caller's `Idempotency-Key`, as the bucket keeps it: per API key (another key's same
/// value is another submission), hashed (any characters, fixed length).
fn idempotency_key(
    caller: &Caller,
    request: &Request,
    spec: &FormSpec,
) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    // A replay does not read the body, where such a route's answer is described.
    if !spec.route_fields.is_empty() {
        let detail = "Idempotency-Key: not accepted on this route (it answers with the job's \
                      result; submit to /process to replay a submission)";
        return Err(ApiError::new(StatusCode::BAD_REQUEST, detail));
    }
    let key = (value.to_str().ok().map(str::trim))
        .filter(|key| !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            let detail = format!("Idempotency-Key: expected 1 to {MAX_IDEMPOTENCY_KEY} characters");
            ApiError::new(StatusCode::BAD_REQUEST, detail)
        })?;
    let owner = caller.owner().unwrap_or_default();
    let digest = Sha256::digest(format!("{owner}\n{key}").as_bytes());
    Ok(Some(
        digest.iter().map(|byte| format!("{byte:02x}")).collect(),
    ))
}

/// The job submitted earlier under `key`, if the caller may still see it.
async fn earlier_job(
    state: &ApiState,
    caller: &Caller,
    key: &str,
) -> Result<Option<SubmittedJob>, ApiError> {
    let keys = state.pipeline.idempotency_keys();
    let job_id = keys.job_for(key).await;
    let Some(job_id) = job_id.map_err(|err| ApiError::unavailable("job store", &err))? else {
        return Ok(None);
    };
    match load_record(state, caller, job_id).await {
        Ok(record) => Ok(Some(SubmittedJob::replayed(&record))),
        Err(err) if err.status == StatusCode::NOT_FOUND => Ok(None),
        Err(err) => Err(err),
    }
}

/// Remembers the job `key` created. The job exists either way: a failure is only logged.
async fn remember(state: &ApiState, key: &str, job_id: Uuid) {
    match state
        .pipeline
        .idempotency_keys()
        .remember(key, job_id)
        .await
    {
        Ok(named) if named == job_id => {}
        Ok(named) => {
            warn!(job_id = %job_id, first = %named, "two submissions raced on one Idempotency-Key")
        }
        Err(err) => {
            error!(job_id = %job_id, error = %ErrorChain(&err), "cannot store the Idempotency-Key")
        }
    }
}

/// What a submission must pass before its upload is read: free disk space, a free upload slot
/// (held until the upload is stored) and the client's submission rate.
fn admit(
    state: &ApiState,
    caller: &Caller,
    request: &Request,
) -> Result<OwnedSemaphorePermit, ApiError> {
    limits::check_free_space(state.blobs.free_space(), state.settings.min_free_space)?;
    let slot = state.limits.uploads.take()?;
    // Without keys, each address has its own allowance (an IPv6 client, its /64).
    let client = caller.owner().unwrap_or_else(|| {
        let address = request.remote_addr().as_socket_addr().map(|addr| addr.ip());
        address.map_or_else(|| "anonymous".to_owned(), limits::client_network)
    });
    state.limits.submissions.check(&client)?;
    Ok(slot)
}

/// The multipart form of a submission, read through a cap on part headers.
struct UploadForm {
    fields: Multipart,
    guard: BodyGuard,
}

impl UploadForm {
    async fn from_request(request: &Request, body: &mut RequestBody) -> Result<Self, ApiError> {
        let not_multipart = || {
            let detail = "expected a multipart/form-data body with a field named \"file\"";
            ApiError::new(StatusCode::BAD_REQUEST, detail)
        };
        let boundary = request
            .content_type()
            .and_then(|content_type| multer::parse_boundary(content_type).ok());
        let raw = body.take().map_err(|_| not_multipart())?;
        let Some(boundary) = boundary else {
            discard_body(raw).await;
            return Err(not_multipart());
        };
        let guard = BodyGuard::default();
        let guarded = guard_part_headers(
            raw.into_bytes_stream(),
            &boundary,
            MAX_PART_HEADER,
            guard.clone(),
        );
        let mut guarded = RequestBody::new(poem::Body::from_bytes_stream(guarded));
        let fields = Multipart::from_request(request, &mut guarded)
            .await
            .map_err(|_| not_multipart())?;
        Ok(Self { fields, guard })
    }

    async fn next_field(&mut self) -> Result<Option<Field>, ApiError> {
        self.fields.next_field().await.map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("malformed multipart body: {err}"),
            )
        })
    }

    /// `refused`, unless the body was cut off for a part header past the cap: then that.
    fn explain(&self, refused: ApiError) -> ApiError {
        if !self.guard.header_overflowed() {
            return refused;
        }
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("multipart: a part's headers are longer than {MAX_PART_HEADER} bytes"),
        )
    }

    /// Reads what is left of a refused form, within [`DISCARD_LIMIT`] and [`DISCARD_TIME`].
    async fn discard_rest(&mut self) {
        // Skipping to the next part reads the rest of this one: the body itself is capped.
        self.guard.drain_at_most(DISCARD_LIMIT);
        let discard = async {
            while let Ok(Some(field)) = self.fields.next_field().await {
                let mut chunks = ReaderStream::with_capacity(field.into_async_read(), READ_CHUNK);
                while let Some(Ok(_)) = chunks.next().await {}
            }
        };
        if tokio::time::timeout(DISCARD_TIME, discard).await.is_err() {
            // The rest is not read: the connection is closed.
            debug!("refused request body not read to its end");
        }
    }
}

/// Stores the upload and queues its job; on refusal, drains what is left of the body first.
async fn submit(
    state: &ApiState,
    caller: &Caller,
    params: ProcessParams,
    spec: &FormSpec,
    form: &mut UploadForm,
) -> Result<SubmittedJob, ApiError> {
    let answer = accept_upload(state, caller, params, spec, form).await;
    if answer.is_err() {
        form.discard_rest().await;
    }
    answer.map_err(|refused| form.explain(refused))
}

async fn accept_upload(
    state: &ApiState,
    caller: &Caller,
    params: ProcessParams,
    spec: &FormSpec,
    form: &mut UploadForm,
) -> Result<SubmittedJob, ApiError> {
    let allow_private = state.settings.webhook_allow_private;
    // Query options are checked before any byte is stored.
    let mut options = options_from_query(params, allow_private).await?;
    if let Some(model) = &options.model {
        state.models.check(&state.pipeline, model).await?;
    }
    let job_id = Uuid::now_v7();
    let cleanup = UploadCleanup::new(state.blobs.clone(), job_id);
    let input_blob = JobBlobs::input_path(job_id);
    let form = read_form(state, form, spec, &input_blob, &mut options).await?;
    let (filename, size) = (form.filename, form.size);
    let model = options
        .model
        .get_or_insert_with(|| state.pipeline.settings().default_model.clone());
    state.models.check(&state.pipeline, model).await?;
    let mut record =
        JobRecord::new_pending(job_id, filename, size, options, OffsetDateTime::now_utc());
    record.owner = caller.owner();
    // Queued in a task of its own: a client that goes away now cannot stop it half way, nor
    // have the files of a queued job removed.
    let queued = tokio::spawn(queue(state.clone(), record.clone(), cleanup));
    queued.await.map_err(|err| {
        error!(job_id = %job_id, error = %err, "queueing the job panicked");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the job could not be queued",
        )
    })??;
    info!(job_id = %job_id, filename = %record.filename, size, "job submitted");
    let metrics = jetscribe_metrics::metrics();
    metrics.jobs_submitted.inc();
    metrics.uploaded_bytes.inc_by(size);
    Ok(SubmittedJob {
        job_id,
        status: JobStatus::Pending,
        created_at: record.created_at,
        filename: record.filename,
        size_bytes: size,
        replayed: false,
        route_fields: form.route_fields,
    })
}

/// What a form held besides the job's options.
struct FormContents {
    filename: String,
    size: u64,
    route_fields: Vec<(String, String)>,
}

/// Reads the form: the file, stored as `input_blob`, the options, set on `options` (a form
/// field wins over the same option in the query string), and the route's own fields.
async fn read_form(
    state: &ApiState,
    form: &mut UploadForm,
    spec: &FormSpec,
    input_blob: &str,
    options: &mut JobOptions,
) -> Result<FormContents, ApiError> {
    let allow_private = state.settings.webhook_allow_private;
    let mut upload: Option<(String, u64)> = None;
    let mut route_fields = Vec::new();
    while let Some(field) = form.next_field().await? {
        match field.name().unwrap_or_default() {
            name if spec.route_fields.contains(&name) => {
                if route_fields.len() == MAX_ROUTE_FIELDS {
                    let detail = format!("{name}: more than {MAX_ROUTE_FIELDS} answer fields");
                    return Err(ApiError::new(StatusCode::BAD_REQUEST, detail));
                }
                let name = name.to_owned();
                let value = small_field_text(&name, field).await?;
                (spec.apply)(&name, value.trim(), options)?;
                route_fields.push((name, value.trim().to_owned()));
            }
            "file" if upload.is_some() => {
                let detail = "file: send exactly one file per request";
                return Err(ApiError::new(StatusCode::BAD_REQUEST, detail));
            }
            "file" => {
                let filename = upload_name(&field)?;
                let size = store_upload(state, input_blob, field).await?;
                upload = Some((filename, size));
            }
            name @ ("language" | "webhook_url" | "word_timestamps" | "model" | "prompt"
            | "hotwords" | "task" | "translate" | "temperature" | "beam_size"
            | "channels") => {
                let name = name.to_owned();
                let value = small_field_text(&name, field).await?;
                if name == "model" && Some(value.trim()) == spec.default_model_alias {
                    continue;
                }
                apply_option(options, &name, Some(value), allow_private).await?;
                // A model named before the file is checked before the file is stored.
                if let Some(model) = options.model.as_ref().filter(|_| name == "model") {
                    state.models.check(&state.pipeline, model).await?;
                }
            }
            // Unknown fields are read and ignored, as the original service did.
            name => {
                let name = name.chars().take(64).collect::<String>();
                skip_field(&name, field).await?;
            }
        }
    }
    let (filename, size) = upload.ok_or_else(|| {
        let detail = "file: a multipart field named \"file\" is required";
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    })?;
    if size == 0 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "file: the file is empty",
        ));
    }
    if let Some(task) = spec.task {
        options.decoding.task = task;
    }
    Ok(FormContents {
        filename,
        size,
        route_fields,
    })
}

/// The most fields a form may give of its route's own (they are kept for the answer).
const MAX_ROUTE_FIELDS: usize = 16;
/// The longest form field other than the file.
const MAX_OPTION_FIELD: usize = 64 * 1024;
/// The longest file name kept (bytes).
const MAX_FILENAME: usize = 255;
/// The longest prompt or hotwords (bytes): Whisper keeps at most 223 tokens of a prompt.
const MAX_PROMPT: usize = 2048;
/// The widest beam a job may ask for: each beam costs decoding time.
const MAX_BEAM_SIZE: u8 = 10;
/// The longest webhook URL (bytes).
const MAX_WEBHOOK_URL: usize = 2048;

/// The client's name for the upload (`upload` when it gives none).
fn upload_name(field: &Field) -> Result<String, ApiError> {
    let name = field.file_name().unwrap_or("upload");
    if name.len() > MAX_FILENAME {
        let detail = format!("file: the file name is longer than {MAX_FILENAME} bytes");
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail));
    }
    Ok(name.to_owned())
}

/// A form field other than the file, read whole only up to [`MAX_OPTION_FIELD`].
async fn small_field(name: &str, field: Field) -> Result<Vec<u8>, ApiError> {
    use tokio::io::AsyncReadExt as _;
    let mut value = Vec::new();
    let limit = MAX_OPTION_FIELD as u64 + 1;
    let read = field
        .into_async_read()
        .take(limit)
        .read_to_end(&mut value)
        .await;
    read.map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{name}: cannot be read: {err}"),
        )
    })?;
    if value.len() > MAX_OPTION_FIELD {
        let detail = format!("{name}: a form field longer than {MAX_OPTION_FIELD} bytes");
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail));
    }
    Ok(value)
}

/// Reads a field nobody uses and drops it as it comes, refusing it past [`MAX_OPTION_FIELD`].
async fn skip_field(name: &str, field: Field) -> Result<(), ApiError> {
    let mut chunks = ReaderStream::new(field.into_async_read());
    let mut length = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{name}: cannot be read: {err}"),
            )
        })?;
        length += chunk.len();
        if length > MAX_OPTION_FIELD {
            let detail = format!("{name}: a form field longer than {MAX_OPTION_FIELD} bytes");
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail));
        }
    }
    Ok(())
}

/// [`small_field`] as UTF-8 text.
async fn small_field_text(name: &str, field: Field) -> Result<String, ApiError> {
    String::from_utf8(small_field(name, field).await?).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{name}: not UTF-8 text"),
        )
    })
}

async fn options_from_query(
    params: ProcessParams,
    allow_private: bool,
) -> Result<JobOptions, ApiError> {
    let mut options = JobOptions::default();
    let given = [
        ("language", params.language),
        ("webhook_url", params.webhook_url),
        ("word_timestamps", params.word_timestamps),
        ("model", params.model),
        ("prompt", params.prompt),
        ("hotwords", params.hotwords),
        ("task", params.task),
        ("translate", params.translate),
        ("temperature", params.temperature),
        ("beam_size", params.beam_size),
        ("channels", params.channels),
    ];
    for (name, value) in given {
        apply_option(&mut options, name, value, allow_private).await?;
    }
    Ok(options)
}

/// Validates option `name` given as `raw` and sets it on `options`; an empty value leaves it
/// as it is.
async fn apply_option(
    options: &mut JobOptions,
    name: &str,
    raw: Option<String>,
    allow_private: bool,
) -> Result<(), ApiError> {
    let Some(value) = raw
        .map(|value| value.trim().to_owned())
        .filter(|v| !v.is_empty())
    else {
        return Ok(());
    };
    let invalid = |why: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{name}: {why}, got {value:?}"),
        )
    };
    match name {
        "language" => {
            options.language = parse_language(&value).map_err(|why| invalid(why.to_owned()))?;
        }
        "word_timestamps" => {
            options.word_timestamps = parse_flag(&value).map_err(|why| invalid(why.to_owned()))?;
        }
        "model" => {
            let model = ModelName::parse(&value).map_err(|why| invalid(why.to_string()))?;
            options.model = Some(model);
        }
        "prompt" | "hotwords" if value.len() > MAX_PROMPT => {
            let detail = format!("{name}: longer than {MAX_PROMPT} bytes");
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail));
        }
        "prompt" => options.decoding.prompt = Some(value),
        "hotwords" => options.decoding.hotwords = Some(value),
        "task" => {
            options.decoding.task = parse_task(&value).map_err(|why| invalid(why.to_owned()))?
        }
        // `task=translate` said as a flag; `false` leaves the task as `task` says.
        "translate" => {
            let translate = parse_flag(&value).map_err(|why| invalid(why.to_owned()))?;
            options.decoding.task = match translate {
                true => Task::Translate,
                false => options.decoding.task,
            };
        }
        "temperature" => {
            let temperature = parse_temperature(&value).map_err(|why| invalid(why.to_owned()))?;
            options.decoding.temperature = Some(temperature);
        }
        "beam_size" => {
            let beam_size = parse_beam_size(&value).map_err(|why| invalid(why.to_owned()))?;
            options.decoding.beam_size = Some(beam_size);
        }
        "channels" => {
            options.channels = parse_channels(&value).map_err(|why| invalid(why.to_owned()))?
        }
        "webhook_url" if value.len() > MAX_WEBHOOK_URL => {
            let detail = format!("webhook_url: longer than {MAX_WEBHOOK_URL} bytes");
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail));
        }
        "webhook_url" => {
            jetscribe_webhook_policy::check(&value, allow_private)
                .await
                .map_err(|refused| invalid(ErrorChain(&refused).to_string()))?;
            options.webhook_url = Some(value);
        }
        _ => {}
    }
    Ok(())
}

/// One of Whisper's language codes (or `auto`: detect it).
fn parse_language(value: &str) -> Result<Option<String>, &'static str> {
    let code = value.to_lowercase();
    if code == "auto" {
        Ok(None)
    } else if proto_msgs::languages::is_whisper_language(&code) {
        Ok(Some(code))
    } else {
        Err("expected one of Whisper's language codes such as \"en\" (README lists them)")
    }
}

/// `transcribe` or `translate` (to English).
fn parse_task(value: &str) -> Result<Task, &'static str> {
    match value.to_lowercase().as_str() {
        "transcribe" => Ok(Task::Transcribe),
        "translate" => Ok(Task::Translate),
        _ => Err("expected transcribe or translate"),
    }
}

/// `mix` (the channels mixed down) or `split` (each channel transcribed on its own).
fn parse_channels(value: &str) -> Result<Channels, &'static str> {
    match value.to_lowercase().as_str() {
        "mix" => Ok(Channels::Mix),
        "split" => Ok(Channels::Split),
        _ => Err("expected mix or split"),
    }
}

/// A sampling temperature: 0, or from 0.01 to 1 (below, sampling divides by almost nothing).
fn parse_temperature(value: &str) -> Result<f32, &'static str> {
    value
        .parse::<f32>()
        .ok()
        .filter(|t| *t == 0.0 || (0.01..=1.0).contains(t))
        .ok_or("expected 0 or a number from 0.01 to 1")
}

/// A beam width from 1 to [`MAX_BEAM_SIZE`].
fn parse_beam_size(value: &str) -> Result<u8, &'static str> {
    value
        .parse::<u8>()
        .ok()
        .filter(|b| (1..=MAX_BEAM_SIZE).contains(b))
        .ok_or("expected a whole number from 1 to 10")
}

pub(crate) fn parse_flag(value: &str) -> Result<bool, &'static str> {
    match value.to_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false"),
    }
}

/// Creates the job's record, publishes `submitted` and queues the job for the first stage;
/// then the job's files stay (`cleanup` is kept), otherwise they are removed.
async fn queue(state: ApiState, record: JobRecord, cleanup: UploadCleanup) -> Result<(), ApiError> {
    let pipeline = &state.pipeline;
    let submission = Submission {
        job_id: record.job_id,
        owner: record.owner.clone(),
        created_at: record.created_at,
    };
    let queued = async {
        pipeline.jobs().create(&record).await?;
        pipeline.index_submission(&submission).await?;
        pipeline
            .events()
            .publish_for(&record, EventKind::Submitted, None)
            .await?;
        pipeline.submit(&record).await
    }
    .await;
    match queued {
        Ok(()) => {
            cleanup.keep();
            Ok(())
        }
        Err(err) => {
            error!(job_id = %record.job_id, error = %ErrorChain(&err), "cannot queue the job");
            // The client hears that there is no job: none may run later (a queued message whose
            // ack was lost), nor fire its webhook. Without a record, a stage drops its message.
            if let Err(err) = pipeline.jobs().remove(record.job_id).await {
                let error = ErrorChain(&err);
                error!(job_id = %record.job_id, %error, "cannot remove the unqueued job's record");
            }
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the job queue is unavailable; try again",
            )
            .retry_after(crate::RETRY_AFTER_OUTAGE))
        }
    }
}

/// Streams one multipart field to `path`, refusing it as soon as it passes MAX_FILE_SIZE.
async fn store_upload(state: &ApiState, path: &str, field: Field) -> Result<u64, ApiError> {
    let limit = state.settings.max_file_size;
    let mut writer = state
        .blobs
        .writer(path)
        .await
        .map_err(|err| ApiError::unavailable("object store", &err))?;
    let mut disk = limits::DiskWatch::new(&state.blobs, state.settings.min_free_space);
    let mut chunks = ReaderStream::with_capacity(field.into_async_read(), READ_CHUNK);
    while let Some(chunk) = chunks.next().await {
        let refusal = match chunk {
            Err(err) => {
                warn!(error = %err, "upload interrupted");
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("file: upload interrupted: {err}"),
                )
            }
            Ok(chunk) if writer.written() + chunk.len() as u64 > limit => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("file: larger than MAX_FILE_SIZE ({limit} bytes)"),
            ),
            Ok(chunk) => match disk.check(writer.written()) {
                Err(refused) => refused,
                Ok(()) => match writer.write(chunk).await {
                    Ok(()) => continue,
                    Err(err) => ApiError::unavailable("object store", &err),
                },
            },
        };
        writer.abort().await;
        return Err(refusal);
    }
    writer
        .finish()
        .await
        .map_err(|err| ApiError::unavailable("object store", &err))
}

/// Removes a submission's files unless its job was queued: dropped on any early return, or
/// with the request's future when the connection goes away, it removes them in the background.
struct UploadCleanup {
    blobs: BlobStore,
    job_id: Uuid,
    kept: bool,
}

impl UploadCleanup {
    fn new(blobs: BlobStore, job_id: Uuid) -> Self {
        Self {
            blobs,
            job_id,
            kept: false,
        }
    }

    /// The job is queued: its files stay.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for UploadCleanup {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (blobs, prefix) = (self.blobs.clone(), JobBlobs::prefix(self.job_id));
        runtime.spawn(async move {
            if let Err(err) = blobs.delete_prefix(&prefix).await {
                warn!(prefix, error = %ErrorChain(&err), "cannot remove a refused upload");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNKNOWN_LANGUAGE: &str =
        "expected one of Whisper's language codes such as \"en\" (README lists them)";

    #[test]
    fn options_are_parsed_or_refused_with_the_reason() {
        let languages = [
            ("en", Ok(Some("en".to_owned()))),
            ("DE", Ok(Some("de".to_owned()))),
            ("haw", Ok(Some("haw".to_owned()))),
            ("auto", Ok(None)),
            ("english", Err(UNKNOWN_LANGUAGE)),
            ("xx", Err(UNKNOWN_LANGUAGE)),
        ];
        for (raw, expected) in languages {
            assert_eq!(parse_language(raw), expected, "{raw}");
        }
        let flags = [
            ("true", Ok(true)),
            ("ON", Ok(true)),
            ("0", Ok(false)),
            ("maybe", Err("expected true or false")),
        ];
        for (raw, expected) in flags {
            assert_eq!(parse_flag(raw), expected, "{raw}");
        }
    }

    #[test]
    fn decoding_options_are_parsed_or_refused_with_the_reason() {
        assert_eq!(parse_task("Translate"), Ok(Task::Translate));
        assert_eq!(parse_task("transcribe"), Ok(Task::Transcribe));
        assert!(parse_task("summarize").is_err());
        let temperatures = [("0", Some(0.0)), ("0.4", Some(0.4)), ("1", Some(1.0))];
        for (raw, expected) in temperatures {
            assert_eq!(parse_temperature(raw).ok(), expected, "{raw}");
        }
        for raw in ["-0.1", "1.5", "NaN", "inf", "warm", "1e-39", "0.001"] {
            assert!(parse_temperature(raw).is_err(), "{raw}");
        }
        assert_eq!(parse_beam_size("1"), Ok(1));
        assert_eq!(parse_beam_size("10"), Ok(10));
        for raw in ["0", "11", "300", "-1", "5.5"] {
            assert!(parse_beam_size(raw).is_err(), "{raw}");
        }
        assert_eq!(parse_channels("Split"), Ok(Channels::Split));
        assert_eq!(parse_channels("mix"), Ok(Channels::Mix));
        for raw in ["stereo", "2", "left"] {
            assert!(parse_channels(raw).is_err(), "{raw}");
        }
    }

    #[tokio::test]
    async fn an_empty_option_changes_nothing_and_a_bad_one_names_its_field() {
        let mut options = JobOptions {
            language: Some("fr".into()),
            ..Default::default()
        };
        apply_option(&mut options, "language", Some("  ".into()), false)
            .await
            .expect("empty is fine");
        assert_eq!(options.language.as_deref(), Some("fr"));
        let refused = apply_option(&mut options, "webhook_url", Some("ftp://x".into()), false)
            .await
            .expect_err("refused");
        assert!(refused.detail.starts_with("webhook_url: "), "{refused}");
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[tokio::test]
    async fn translate_true_asks_for_the_translate_task() {
        let mut options = JobOptions::default();
        // `false` does not undo `task=translate`.
        let steps = [
            ("false", Task::Transcribe),
            ("true", Task::Translate),
            ("false", Task::Translate),
        ];
        for (value, task) in steps {
            apply_option(&mut options, "translate", Some(value.into()), false)
                .await
                .expect("a flag");
            assert_eq!(options.decoding.task, task, "{value}");
        }
        let refused = apply_option(&mut options, "translate", Some("french".into()), false)
            .await
            .expect_err("not a flag");
        assert!(refused.detail.starts_with("translate: "), "{refused}");
    }
}
