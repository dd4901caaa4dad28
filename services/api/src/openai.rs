//! OpenAI's audio API on the job pipeline, for the clients that speak it (the `openai` SDKs,
//! Open WebUI, …): `POST /v1/audio/transcriptions` and `POST /v1/audio/translations` take the
//! upload of `/process` (same limits and keys; `model=whisper-1` is the default model) and answer
//! once the job ends, in the `response_format` asked for, with the job's id in `X-Job-Id`;
//! `GET /v1/models` lists the served models. Every refusal under `/v1/` is reshaped into
//! OpenAI's `{"error": {message, type, param, code}}` ([`openai_errors`]).

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use proto_msgs::{JobOptions, JobResult, JobStatus, Segment, Task};
use serde::Serialize;
use uuid::Uuid;

mod stream;

use crate::live::{JobWait, wait_for_job};
use crate::upload::{FormSpec, SubmittedJob, parse_flag};
use crate::{ApiError, ApiState, Caller, json_response, load_record, load_result, subtitles};

/// The model name OpenAI's clients send by default: the deployment's default model here.
const DEFAULT_MODEL_ALIAS: &str = "whisper-1";

/// The form fields of the audio routes that shape the answer rather than the job.
const ROUTE_FIELDS: &[&str] = &[
    "response_format",
    "timestamp_granularities[]",
    "timestamp_granularities",
    "stream",
];

/// The form of `POST /v1/audio/transcriptions`.
pub(crate) const TRANSCRIPTIONS: FormSpec = FormSpec {
    route_fields: ROUTE_FIELDS,
    apply: apply_route_field,
    default_model_alias: Some(DEFAULT_MODEL_ALIAS),
    task: None,
};

/// The form of `POST /v1/audio/translations`: speech in any language to English.
pub(crate) const TRANSLATIONS: FormSpec = FormSpec {
    task: Some(Task::Translate),
    ..TRANSCRIPTIONS
};

/// `response_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum ResponseFormat {
    #[default]
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl ResponseFormat {
    fn parse(value: &str) -> Result<Self, &'static str> {
        match value {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            "srt" => Ok(Self::Srt),
            "vtt" => Ok(Self::Vtt),
            "verbose_json" => Ok(Self::VerboseJson),
            _ => Err("expected json, text, srt, verbose_json or vtt"),
        }
    }
}

/// `timestamp_granularities[]`: which times a `verbose_json` answer carries.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Granularities {
    segments: bool,
    words: bool,
}

impl Default for Granularities {
    /// OpenAI's default: segments.
    fn default() -> Self {
        Self {
            segments: true,
            words: false,
        }
    }
}

/// What the client asked of the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct AnswerRequest {
    format: ResponseFormat,
    /// Given by the client; none: OpenAI's default.
    granularities: Option<Granularities>,
    stream: bool,
}

impl AnswerRequest {
    /// From the route's fields as the form gave them.
    fn from_fields(fields: &[(String, String)]) -> Result<Self, ApiError> {
        let mut answer = Self::default();
        for (name, value) in fields {
            answer.read(name, value)?;
        }
        Ok(answer)
    }

    /// Reads one of [`ROUTE_FIELDS`]: the one place they are parsed. A granularity adds to
    /// those given before it.
    fn read(&mut self, name: &str, value: &str) -> Result<(), ApiError> {
        let invalid = |why: &str| {
            let detail = format!("{name}: {why}, got {value:?}");
            ApiError::new(StatusCode::BAD_REQUEST, detail)
        };
        match name {
            "response_format" => self.format = ResponseFormat::parse(value).map_err(invalid)?,
            "stream" => self.stream = parse_flag(value).map_err(invalid)?,
            "timestamp_granularities[]" | "timestamp_granularities" => {
                let given = self.granularities.get_or_insert(Granularities {
                    segments: false,
                    words: false,
                });
                match value {
                    "segment" => given.segments = true,
                    "word" => given.words = true,
                    _ => return Err(invalid("expected segment or word")),
                }
            }
            _ => return Err(invalid("not a field of this route")),
        }
        Ok(())
    }

    fn granularities(&self) -> Granularities {
        self.granularities.unwrap_or_default()
    }
}

/// Checks one of [`ROUTE_FIELDS`] as it arrives; word granularity times the job's words.
fn apply_route_field(name: &str, value: &str, options: &mut JobOptions) -> Result<(), ApiError> {
    let mut answer = AnswerRequest::default();
    answer.read(name, value)?;
    if answer.granularities().words {
        options.word_timestamps = true;
    }
    Ok(())
}

/// `POST /v1/audio/transcriptions` and `POST /v1/audio/translations`: the job's result once it
/// ends, in the format asked for (after SYNC_TIMEOUT, 504 naming the job to poll), or with
/// `stream=true` its text as it is transcribed.
pub(crate) async fn create(state: &ApiState, caller: &Caller, job: SubmittedJob) -> Response {
    let job_id = job.job_id;
    let response = match AnswerRequest::from_fields(&job.route_fields) {
        Ok(answer) if answer.stream => stream::streamed(state, job_id).await,
        Ok(answer) => waited(state, caller, job_id, answer).await,
        Err(refused) => Err(refused),
    };
    let mut response =
        response.unwrap_or_else(|refused| poem::error::ResponseError::as_response(&refused));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&job_id.to_string()) {
        headers.insert("x-job-id", value);
    }
    // The job exists whatever the answer: OpenAI's clients retry a 5xx by uploading the file
    // again, as another job, unless told not to.
    headers.insert("x-should-retry", HeaderValue::from_static("false"));
    response
}

/// The answer once the job ends, or why the wait stopped.
async fn waited(
    state: &ApiState,
    caller: &Caller,
    job_id: Uuid,
    answer: AnswerRequest,
) -> Result<Response, ApiError> {
    match wait_for_job(state, job_id).await {
        JobWait::Ended => ended_job(state, caller, job_id, answer).await,
        JobWait::StillRunning { status, detail } => Err(ApiError::new(status, detail)),
    }
}

/// The answer for a job that has ended.
async fn ended_job(
    state: &ApiState,
    caller: &Caller,
    job_id: Uuid,
    answer: AnswerRequest,
) -> Result<Response, ApiError> {
    let record = load_record(state, caller, job_id).await?;
    match record.status {
        JobStatus::Completed => {}
        JobStatus::Failed => {
            let why = record.error_message.as_deref().unwrap_or("unknown error");
            let detail = format!("the transcription failed: {why}");
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, detail));
        }
        JobStatus::Cancelled => {
            return Err(ApiError::new(StatusCode::GONE, "the job was cancelled"));
        }
        JobStatus::Pending | JobStatus::Processing => {
            let detail = format!("the job has not ended; poll /result/{job_id}");
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, detail));
        }
    }
    let result = load_result(state, &record).await?;
    let (content_type, body) = render(&result, answer);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .content_type(content_type)
        .body(body))
}

/// OpenAI's `usage` of the audio models: the seconds of audio, rounded up.
#[derive(Debug, Serialize)]
struct Usage {
    r#type: &'static str,
    seconds: u64,
}

impl Usage {
    fn of(duration_s: f64) -> Self {
        Self {
            r#type: "duration",
            seconds: duration_s.max(0.0).ceil() as u64,
        }
    }
}

#[derive(Debug, Serialize)]
struct TextAnswer<'a> {
    text: &'a str,
    usage: Usage,
}

/// `verbose_json`, as OpenAI's `TranscriptionVerbose`.
#[derive(Debug, Serialize)]
struct VerboseAnswer<'a> {
    task: &'static str,
    /// Whisper's English name of the language spoken, lower case (`english`).
    language: &'a str,
    duration: f64,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    segments: Option<Vec<VerboseSegment<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    words: Option<Vec<VerboseWord<'a>>>,
    usage: Usage,
}

#[derive(Debug, Serialize)]
struct VerboseSegment<'a> {
    id: usize,
    /// Where the segment starts, in 10 ms frames of the media (the window's start in OpenAI's
    /// sequential decoding; jetscribe's windows are packed from the speech).
    seek: u64,
    start: f64,
    end: f64,
    text: &'a str,
    /// The ids of the segment's text tokens.
    tokens: &'a [u32],
    temperature: f64,
    avg_logprob: f64,
    compression_ratio: f64,
    no_speech_prob: f64,
}

#[derive(Debug, Serialize)]
struct VerboseWord<'a> {
    word: &'a str,
    start: f64,
    end: f64,
}

/// The answer's content type and body.
fn render(result: &JobResult, answer: AnswerRequest) -> (&'static str, String) {
    match answer.format {
        ResponseFormat::Json => json(&TextAnswer {
            text: &result.transcript,
            usage: Usage::of(result.duration_s),
        }),
        ResponseFormat::Text => (
            "text/plain; charset=utf-8",
            format!("{}\n", result.transcript),
        ),
        ResponseFormat::Srt => (
            "text/plain; charset=utf-8",
            subtitles::srt(&result.segments),
        ),
        ResponseFormat::Vtt => (
            "text/plain; charset=utf-8",
            subtitles::vtt(&result.segments),
        ),
        ResponseFormat::VerboseJson => json(&verbose(result, answer.granularities())),
    }
}

fn verbose(result: &JobResult, granularities: Granularities) -> VerboseAnswer<'_> {
    let code = result.language_detection.language.as_str();
    let segments = granularities.segments.then(|| {
        let segments = result.segments.iter().enumerate();
        segments
            .map(|(id, segment)| verbose_segment(id, segment))
            .collect()
    });
    let words = granularities.words.then(|| {
        let words = result
            .segments
            .iter()
            .flat_map(|s| s.words.iter().flatten());
        words
            .map(|word| VerboseWord {
                word: word.word.trim(),
                start: word.start,
                end: word.end,
            })
            .collect()
    });
    VerboseAnswer {
        task: match result.task {
            Task::Transcribe => "transcribe",
            Task::Translate => "translate",
        },
        // A translation's language is that of its text, as OpenAI reports it.
        language: match result.task {
            Task::Transcribe => proto_msgs::languages::language_name(code).unwrap_or(code),
            Task::Translate => "english",
        },
        duration: result.duration_s,
        text: &result.transcript,
        segments,
        words,
        usage: Usage::of(result.duration_s),
    }
}

fn json(body: &impl Serialize) -> (&'static str, String) {
    ("application/json", crate::json_text(body))
}

fn verbose_segment(id: usize, segment: &Segment) -> VerboseSegment<'_> {
    VerboseSegment {
        id,
        seek: (segment.start.max(0.0) * 100.0).floor() as u64,
        start: segment.start,
        end: segment.end,
        text: &segment.text,
        tokens: &segment.tokens,
        temperature: segment.temperature.unwrap_or(0.0),
        avg_logprob: segment.avg_logprob.unwrap_or(0.0),
        compression_ratio: segment.compression_ratio.unwrap_or(0.0),
        no_speech_prob: segment.no_speech_prob.unwrap_or(0.0),
    }
}

/// An OpenAI model object.
#[derive(Debug, Serialize)]
struct Model {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

impl Model {
    fn named(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            object: "model",
            created: 0,
            owned_by: "jetscribe",
        }
    }
}

#[derive(Debug, Serialize)]
struct ModelList {
    object: &'static str,
    data: Vec<Model>,
}

/// The names a request may give as `model`: `whisper-1` (the default), then the served models.
async fn model_names(state: &ApiState) -> Result<Vec<String>, ApiError> {
    let served = state.models.served(&state.pipeline).await?;
    let mut names = vec![DEFAULT_MODEL_ALIAS.to_owned()];
    names.extend(served.iter().map(|model| model.as_str().to_owned()));
    Ok(names)
}

/// `GET /v1/models`, in OpenAI's list shape.
pub(crate) async fn list_models(state: &ApiState) -> Result<Response, ApiError> {
    let data = model_names(state).await?;
    let body = ModelList {
        object: "list",
        data: data.iter().map(|name| Model::named(name)).collect(),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /v1/models/{model}`.
pub(crate) async fn retrieve_model(state: &ApiState, name: &str) -> Result<Response, ApiError> {
    if !model_names(state)
        .await?
        .iter()
        .any(|served| served == name)
    {
        let detail = format!("model: {name:?} is not served (GET /v1/models lists them)");
        return Err(ApiError::new(StatusCode::NOT_FOUND, detail));
    }
    Ok(json_response(StatusCode::OK, &Model::named(name)))
}

/// OpenAI's error body.
#[derive(Debug, Serialize)]
struct OpenAiError {
    error: OpenAiErrorDetail,
}

#[derive(Debug, Serialize)]
struct OpenAiErrorDetail {
    message: String,
    r#type: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

/// The longest error body read to be reshaped: ours are a line; a longer one is replaced by
/// its status's reason.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Headers of a refusal that describe its old body, not the new one.
const BODY_HEADERS: [header::HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
];

/// Reshapes the refusals of the `/v1/` routes (the routes' own, and those of authentication,
/// limits and routing) into OpenAI's error shape, keeping their other headers (Retry-After,
/// WWW-Authenticate, X-Job-Id …); other paths pass untouched.
pub(crate) async fn openai_errors<E: Endpoint>(
    endpoint: E,
    request: Request,
) -> poem::Result<Response> {
    let openai = request.uri().path().starts_with("/v1/");
    let response = match endpoint.call(request).await {
        Ok(response) => response.into_response(),
        Err(err) if openai => err.into_response(),
        Err(err) => return Err(err),
    };
    if !openai || response.status().is_success() {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = (body.into_bytes_limit(MAX_ERROR_BODY).await).unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|body| body["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
    let (status, error) = openai_error(parts.status, detail);
    let mut reshaped = json_response(status, &error);
    for (name, value) in &parts.headers {
        if !BODY_HEADERS.contains(name) {
            reshaped.headers_mut().append(name, value.clone());
        }
    }
    Ok(reshaped)
}

/// OpenAI's status and body for a refusal: invalid parameters are 400 (ours 422), the field
/// named at the start of our detail is `param`.
fn openai_error(status: StatusCode, detail: String) -> (StatusCode, OpenAiError) {
    let status = match status {
        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
        other => other,
    };
    let message = match detail.is_empty() {
        true => status.canonical_reason().unwrap_or("error").to_owned(),
        false => detail,
    };
    let param = message
        .split_once(": ")
        .map(|(field, _)| field)
        .filter(|field| {
            let named = |c: char| c.is_ascii_alphanumeric() || "_[]".contains(c);
            !field.is_empty() && field.len() <= 40 && field.chars().all(named)
        })
        .map(str::to_owned);
    let code = match status {
        StatusCode::UNAUTHORIZED => Some("invalid_api_key"),
        StatusCode::TOO_MANY_REQUESTS => Some("rate_limit_exceeded"),
        StatusCode::NOT_FOUND if param.as_deref() == Some("model") => Some("model_not_found"),
        _ => None,
    };
    let r#type = match status {
        status if status.is_server_error() => "server_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        _ => "invalid_request_error",
    };
    let error = OpenAiErrorDetail {
        message,
        r#type,
        param,
        code,
    };
    (status, OpenAiError { error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_msgs::{LanguageDetection, LanguageSource, Word};

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn answer_fields_are_read_with_openais_defaults() {
        let segments_only = Granularities::default();
        let both = Granularities {
            segments: true,
            words: true,
        };
        let words_only = Granularities {
            segments: false,
            words: true,
        };
        let cases = [
            (vec![], ResponseFormat::Json, segments_only),
            (
                vec![("response_format", "srt")],
                ResponseFormat::Srt,
                segments_only,
            ),
            (
                vec![
                    ("response_format", "verbose_json"),
                    ("timestamp_granularities[]", "word"),
                ],
                ResponseFormat::VerboseJson,
                words_only,
            ),
            (
                vec![
                    ("timestamp_granularities[]", "word"),
                    ("timestamp_granularities[]", "segment"),
                ],
                ResponseFormat::Json,
                both,
            ),
            // The last format given wins.
            (
                vec![("response_format", "srt"), ("response_format", "text")],
                ResponseFormat::Text,
                segments_only,
            ),
        ];
        for (given, format, granularities) in cases {
            let answer = AnswerRequest::from_fields(&fields(&given)).expect("valid");
            assert_eq!(answer.format, format, "{given:?}");
            assert_eq!(answer.granularities(), granularities, "{given:?}");
        }
    }

    #[test]
    fn route_fields_are_checked_and_word_times_are_asked_of_the_job() {
        let cases = [
            ("response_format", "verbose_json", Ok(false)),
            ("response_format", "diarized_json", Err("response_format")),
            ("timestamp_granularities[]", "word", Ok(true)),
            ("timestamp_granularities[]", "segment", Ok(false)),
            (
                "timestamp_granularities[]",
                "char",
                Err("timestamp_granularities[]"),
            ),
            ("stream", "true", Ok(false)),
            ("stream", "maybe", Err("stream")),
            ("task", "translate", Err("task")),
        ];
        for (name, value, expected) in cases {
            let mut options = JobOptions::default();
            let applied = apply_route_field(name, value, &mut options);
            match expected {
                Ok(words) => {
                    assert!(applied.is_ok(), "{name}={value}");
                    assert_eq!(options.word_timestamps, words, "{name}={value}");
                }
                Err(field) => {
                    let refused = applied.expect_err(name);
                    assert!(
                        refused.detail.starts_with(&format!("{field}: ")),
                        "{refused}"
                    );
                }
            }
        }
    }

    fn result() -> JobResult {
        let word = |word: &str, start, end| Word {
            start,
            end,
            word: word.to_owned(),
            probability: 0.9,
        };
        JobResult {
            transcript: "Ask not. What you can do.".to_owned(),
            segments: vec![
                Segment {
                    start: 0.5,
                    end: 1.5,
                    text: "Ask not.".to_owned(),
                    words: Some(vec![word(" Ask", 0.5, 0.9), word(" not.", 0.9, 1.5)]),
                    avg_logprob: Some(-0.2),
                    compression_ratio: Some(1.1),
                    no_speech_prob: Some(0.01),
                    temperature: Some(0.0),
                    channel: None,
                    tokens: vec![1770, 406, 13],
                },
                Segment {
                    start: 2.0,
                    end: 3.25,
                    text: "What you can do.".to_owned(),
                    ..Segment::default()
                },
            ],
            language_detection: LanguageDetection {
                language: "en".to_owned(),
                probability: 0.99,
                source: LanguageSource::Whisper,
                text_check: None,
            },
            topics: vec![],
            stats: None,
            duration_s: 3.4,
            model: "whisper-tiny".to_owned(),
            task: Task::Transcribe,
        }
    }

    #[test]
    fn verbose_json_has_openais_fields_and_the_words_when_asked() {
        let answer = AnswerRequest {
            format: ResponseFormat::VerboseJson,
            granularities: Some(Granularities {
                segments: true,
                words: true,
            }),
            stream: false,
        };
        let (content_type, body) = render(&result(), answer);
        assert_eq!(content_type, "application/json");
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["task"], "transcribe");
        assert_eq!(body["language"], "english");
        assert_eq!(body["duration"], 3.4);
        assert_eq!(
            body["usage"],
            serde_json::json!({"type": "duration", "seconds": 4})
        );
        let first = &body["segments"][0];
        let keys = [
            "id",
            "seek",
            "start",
            "end",
            "text",
            "tokens",
            "temperature",
            "avg_logprob",
            "compression_ratio",
            "no_speech_prob",
        ];
        for key in keys {
            assert!(!first[key].is_null(), "{key} in {first}");
        }
        assert_eq!(first["seek"], 50);
        assert_eq!(first["tokens"], serde_json::json!([1770, 406, 13]));
        assert_eq!(body["segments"][1]["id"], 1);
        assert_eq!(
            body["words"],
            serde_json::json!([
                {"word": "Ask", "start": 0.5, "end": 0.9},
                {"word": "not.", "start": 0.9, "end": 1.5},
            ])
        );
    }

    #[test]
    fn text_formats_are_plain_text() {
        let cases = [
            (ResponseFormat::Text, "Ask not. What you can do.\n"),
            (
                ResponseFormat::Srt,
                "1\n00:00:00,500 --> 00:00:01,500\nAsk not.",
            ),
            (
                ResponseFormat::Vtt,
                "WEBVTT\n\n00:00:00.500 --> 00:00:01.500\nAsk not.",
            ),
        ];
        for (format, starts) in cases {
            let answer = AnswerRequest {
                format,
                ..AnswerRequest::default()
            };
            let (content_type, body) = render(&result(), answer);
            assert!(content_type.starts_with("text/plain"), "{format:?}");
            assert!(body.starts_with(starts), "{format:?}: {body:?}");
        }
    }

    #[test]
    fn refusals_take_openais_shape_with_the_field_at_fault() {
        let cases = [
            (
                422,
                "file: the file is empty",
                400,
                Some("file"),
                None,
                "invalid_request_error",
            ),
            (
                401,
                "API key not valid",
                401,
                None,
                Some("invalid_api_key"),
                "invalid_request_error",
            ),
            (
                404,
                "model: \"x\" is not served",
                404,
                Some("model"),
                Some("model_not_found"),
                "invalid_request_error",
            ),
            (
                429,
                "too many submissions: 10 per 60 s",
                429,
                None,
                Some("rate_limit_exceeded"),
                "rate_limit_error",
            ),
            (
                504,
                "the job did not end within SYNC_TIMEOUT (300 s); poll /result/x",
                504,
                None,
                None,
                "server_error",
            ),
        ];
        for (status, detail, expected, param, code, kind) in cases {
            let status = StatusCode::from_u16(status).expect("status");
            let (status, body) = openai_error(status, detail.to_owned());
            assert_eq!(status.as_u16(), expected, "{detail}");
            assert_eq!(body.error.message, detail);
            assert_eq!(body.error.param.as_deref(), param, "{detail}");
            assert_eq!(body.error.code, code, "{detail}");
            assert_eq!(body.error.r#type, kind, "{detail}");
        }
    }
}
