//! `POST /process`: the upload is streamed to the object store as it arrives (never held whole in
//! memory), counted against MAX_FILE_SIZE, and only then is the job created and queued.

use futures::StreamExt;
use poem::http::StatusCode;
use poem::web::{Data, Multipart, Query};
use poem::{Response, handler};
use proto_msgs::{DecodeRequest, EventKind, JobBlobs, JobOptions, JobRecord};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::io::ReaderStream;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::{ApiError, ApiState, json_response};

/// Read size of the upload stream: the unit of memory one upload holds before the store's parts.
const READ_CHUNK: usize = 256 * 1024;

/// Options accepted in the query string (the original service) or as form fields.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ProcessParams {
    language: Option<String>,
    webhook_url: Option<String>,
    word_timestamps: Option<String>,
}

fn validate_language(raw: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw.map(|value| value.trim().to_lowercase()) else {
        return Ok(None);
    };
    if raw.is_empty() || raw == "auto" {
        return Ok(None);
    }
    if (2..=3).contains(&raw.len()) && raw.chars().all(|c| c.is_ascii_lowercase()) {
        Ok(Some(raw))
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("language: expected an ISO 639-1 code such as \"en\", got {raw:?}"),
        ))
    }
}

fn validate_word_timestamps(raw: Option<String>) -> Result<Option<bool>, ApiError> {
    let Some(raw) = raw.map(|value| value.trim().to_lowercase()) else {
        return Ok(None);
    };
    match raw.as_str() {
        "" => Ok(None),
        "true" | "1" | "yes" | "on" => Ok(Some(true)),
        "false" | "0" | "no" | "off" => Ok(Some(false)),
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("word_timestamps: expected true or false, got {raw:?}"),
        )),
    }
}

/// The webhook URL's syntax, scheme and addresses (see `jetscribe_notifier::destination`).
async fn validate_webhook_url(
    raw: Option<String>,
    allow_private: bool,
) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw.map(|value| value.trim().to_owned()) else {
        return Ok(None);
    };
    if raw.is_empty() {
        return Ok(None);
    }
    match jetscribe_notifier::destination::check(&raw, allow_private).await {
        Ok(_) => Ok(Some(raw)),
        Err(refused) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("webhook_url: {refused}, got {raw:?}"),
        )),
    }
}

#[handler]
pub(crate) async fn process(
    Data(state): Data<&ApiState>,
    Query(params): Query<ProcessParams>,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let job = submit(state, params, &mut multipart).await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        json!({
            "job_id": job.job_id,
            "status": "pending",
            "created_at": job.created_at.format(&Rfc3339).ok(),
            "filename": job.filename,
            "size_bytes": job.size_bytes,
            "message": "File uploaded; processing has started",
        }),
    ))
}

/// A job accepted and queued.
pub(crate) struct SubmittedJob {
    pub job_id: Uuid,
    pub created_at: OffsetDateTime,
    pub filename: String,
    pub size_bytes: u64,
}

/// Stores the upload and queues its job; on refusal, drains what is left of the body first.
pub(crate) async fn submit(
    state: &ApiState,
    params: ProcessParams,
    multipart: &mut Multipart,
) -> Result<SubmittedJob, ApiError> {
    let answer = accept_upload(state, params, multipart).await;
    if answer.is_err() {
        discard_rest(multipart).await;
    }
    answer
}

/// How much of a refused request's body is read and thrown away before answering. HTTP/1.1
/// clients that write the whole body before reading the answer (most libraries; curl reads early
/// answers) would otherwise see a broken pipe instead of the 4xx. Past this, the connection is
/// closed: a refused multi-GB upload is not read to its end.
const DISCARD_LIMIT: u64 = 64 * 1024 * 1024;
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(2);

async fn discard_rest(multipart: &mut Multipart) {
    let discard = async {
        let mut discarded = 0u64;
        while let Ok(Some(field)) = multipart.next_field().await {
            let mut chunks = ReaderStream::with_capacity(field.into_async_read(), READ_CHUNK);
            while let Some(Ok(chunk)) = chunks.next().await {
                discarded += chunk.len() as u64;
                if discarded > DISCARD_LIMIT {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, discard).await;
}

async fn accept_upload(
    state: &ApiState,
    params: ProcessParams,
    multipart: &mut Multipart,
) -> Result<SubmittedJob, ApiError> {
    // Query options are checked before any byte is stored.
    let language = validate_language(params.language)?;
    let allow_private = state.settings.webhook_allow_private;
    let webhook_url = validate_webhook_url(params.webhook_url, allow_private).await?;
    let word_timestamps = validate_word_timestamps(params.word_timestamps)?;
    let job_id = Uuid::now_v7();
    let input_blob = JobBlobs::input_path(job_id);
    // Set once the file is in the store, so that a request refused afterwards removes it.
    let stored = std::sync::atomic::AtomicBool::new(false);

    let outcome = async {
        let mut options = JobOptions {
            language,
            webhook_url,
            word_timestamps: word_timestamps.unwrap_or(false),
        };
        let mut upload: Option<(String, u64)> = None;
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(err) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("malformed multipart body: {err}"),
                    ));
                }
            };
            match field.name() {
                Some("file") => {
                    if upload.is_some() {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "file: send exactly one file per request",
                        ));
                    }
                    let filename = field
                        .file_name()
                        .map(str::to_owned)
                        .unwrap_or_else(|| "upload".to_owned());
                    let size = store_upload(state, &input_blob, field).await?;
                    stored.store(true, std::sync::atomic::Ordering::Relaxed);
                    upload = Some((filename, size));
                }
                // A form field wins over the same option in the query string.
                Some("language") => {
                    let value = field.text().await.ok();
                    if let Some(language) = validate_language(value)? {
                        options.language = Some(language);
                    }
                }
                Some("webhook_url") => {
                    let value = field.text().await.ok();
                    if let Some(url) = validate_webhook_url(value, allow_private).await? {
                        options.webhook_url = Some(url);
                    }
                }
                Some("word_timestamps") => {
                    let value = field.text().await.ok();
                    if let Some(flag) = validate_word_timestamps(value)? {
                        options.word_timestamps = flag;
                    }
                }
                // Unknown fields are read and ignored, as the original service did.
                _ => {
                    let _ = field.bytes().await;
                }
            }
        }
        let (filename, size) = upload.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "file: a multipart field named \"file\" is required",
            )
        })?;
        Ok((filename, size, options))
    }
    .await;

    let (filename, size, options) = match outcome {
        Ok(accepted) => accepted,
        Err(response) => {
            // A stored file whose request was then refused must not stay behind.
            if stored.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = state.blobs.delete_prefix(&JobBlobs::prefix(job_id)).await;
            }
            return Err(response);
        }
    };

    let now = OffsetDateTime::now_utc();
    let record = JobRecord::new_pending(job_id, filename.clone(), size, options, now);
    let queued = async {
        state
            .pipeline
            .jobs()
            .create(&record)
            .await
            .map_err(|err| err.to_string())?;
        state
            .pipeline
            .events()
            .publish_for(&record, EventKind::Submitted, None)
            .await
            .map_err(|err| err.to_string())?;
        state
            .pipeline
            .publish(&DecodeRequest {
                job_id,
                input_blob,
                filename: filename.clone(),
            })
            .await
            .map_err(|err| err.to_string())
    }
    .await;
    if let Err(reason) = queued {
        error!(job_id = %job_id, reason = %reason, "cannot queue the job");
        let _ = state.blobs.delete_prefix(&JobBlobs::prefix(job_id)).await;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the job queue is unavailable; try again",
        ));
    }
    info!(job_id = %job_id, filename = %filename, size, "job submitted");
    Ok(SubmittedJob {
        job_id,
        created_at: now,
        filename,
        size_bytes: size,
    })
}

/// Streams one multipart field to `path`, refusing it as soon as it passes MAX_FILE_SIZE.
async fn store_upload(
    state: &ApiState,
    path: &str,
    field: poem::web::Field,
) -> Result<u64, ApiError> {
    let limit = state.settings.max_file_size;
    let mut writer = state.blobs.writer(path).await.map_err(|err| {
        error!(error = %err, "object store unavailable");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "object store unavailable")
    })?;
    let mut chunks = ReaderStream::with_capacity(field.into_async_read(), READ_CHUNK);
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                warn!(error = %err, "upload interrupted");
                writer.abort().await;
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("file: upload interrupted: {err}"),
                ));
            }
        };
        if writer.written() + chunk.len() as u64 > limit {
            writer.abort().await;
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("file: larger than MAX_FILE_SIZE ({limit} bytes)"),
            ));
        }
        if let Err(err) = writer.write(chunk).await {
            error!(error = %err, "object store write failed");
            writer.abort().await;
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "object store unavailable",
            ));
        }
    }
    writer.finish().await.map_err(|err| {
        error!(error = %err, "object store write failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "object store unavailable")
    })
}
