//! The schemas of the JSON bodies, for the document only: the bodies themselves are serialized
//! by serde from `views.rs`, `proto_msgs` and `openai.rs`. These types name the same fields;
//! `tests/tests/openapi.rs` checks real answers against them, so the two cannot drift apart.

use std::collections::BTreeMap;

use poem_openapi::{Enum, Object, Union};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// A refused request: what was wrong, starting with the field at fault.
#[derive(Object)]
#[oai(rename = "Error")]
pub struct Error {
    pub detail: String,
}

/// Where a job stands.
#[derive(Enum)]
#[oai(rename_all = "lowercase")]
pub enum JobStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

/// What a job is doing now.
#[derive(Enum)]
#[oai(rename_all = "lowercase")]
pub enum JobStep {
    Queued,
    Decoding,
    Transcribing,
    Analyzing,
    Notifying,
    Completed,
    Failed,
    Cancelled,
}

/// `POST /process`: the job accepted (202), or the one submitted earlier with the same
/// `Idempotency-Key` (200).
#[derive(Object)]
pub struct AcceptedJob {
    pub job_id: Uuid,
    pub status: JobStatus,
    pub created_at: OffsetDateTime,
    pub filename: String,
    pub size_bytes: u64,
    pub message: String,
}

/// A job in a list.
#[derive(Object)]
pub struct JobSummary {
    pub job_id: Uuid,
    pub status: JobStatus,
    /// 0 to 100.
    pub progress: u8,
    pub step: JobStep,
    pub filename: String,
    pub created_at: OffsetDateTime,
}

/// A page of the caller's jobs, newest first.
#[derive(Object)]
pub struct JobPage {
    pub jobs: Vec<JobSummary>,
    /// Absent on the last page; else `cursor` of the next.
    pub next_cursor: Option<String>,
}

/// The jobs that have not ended, and each stage's queue (`null` when it cannot be read).
#[derive(Object)]
pub struct ActiveJobs {
    pub count: u64,
    pub jobs: Vec<JobSummary>,
    #[oai(nullable)]
    pub stages: Option<Vec<Value>>,
}

/// One stage's run of a job.
#[derive(Object)]
pub struct StageRun {
    pub attempts: u32,
    pub failures: u32,
    pub outages: u32,
    #[oai(nullable)]
    pub started_at: Option<OffsetDateTime>,
    #[oai(nullable)]
    pub finished_at: Option<OffsetDateTime>,
    #[oai(nullable)]
    pub seconds: Option<f64>,
    #[oai(nullable)]
    pub last_error: Option<String>,
    #[oai(nullable)]
    pub resumed_from_s: Option<f64>,
    /// `<host>/<pid>` of the latest try.
    #[oai(nullable)]
    pub worker: Option<String>,
}

/// `GET /status/{job_id}`: a job and each stage's run.
#[derive(Object)]
pub struct JobState {
    pub job_id: Uuid,
    pub status: JobStatus,
    pub progress: u8,
    pub step: JobStep,
    pub filename: String,
    pub created_at: OffsetDateTime,
    /// Seconds left, estimated.
    #[oai(nullable)]
    pub eta_seconds: Option<f64>,
    pub size_bytes: u64,
    /// The media's duration, once decoded.
    #[oai(nullable)]
    pub duration_s: Option<f64>,
    #[oai(nullable)]
    pub language: Option<String>,
    #[oai(nullable)]
    pub model: Option<String>,
    /// `mix` or `split`.
    pub channels: String,
    pub updated_at: OffsetDateTime,
    #[oai(nullable)]
    pub completed_at: Option<OffsetDateTime>,
    #[oai(nullable)]
    pub error_message: Option<String>,
    /// The name of the API key that submitted the job.
    #[oai(nullable)]
    pub owner: Option<String>,
    /// By stage: decode, transcribe, analyze, notify.
    pub stages: BTreeMap<String, StageRun>,
    /// The webhook delivery: {id, state, attempts, last_status_code, last_error, delivered_at,
    /// next_attempt_at, history}.
    #[oai(nullable)]
    pub webhook: Option<Value>,
}

/// `GET /jobs/{job_id}`: `/status`'s fields and, for an admin, the job's dead letter.
#[derive(Object)]
pub struct JobDetail {
    #[oai(flatten)]
    pub state: JobState,
    /// For an admin: the message the pipeline gave up on (`null` if none).
    #[oai(nullable)]
    pub dead_letter: Option<Value>,
}

/// `/result` while the job runs.
#[derive(Object)]
pub struct RunningJob {
    pub job_id: Uuid,
    pub status: JobStatus,
    pub progress: u8,
    pub step: JobStep,
    pub message: String,
}

/// The synchronous routes' answer when they stop waiting: the job goes on.
#[derive(Object)]
pub struct StillRunning {
    pub job_id: Uuid,
    pub status: JobStatus,
    pub detail: String,
}

/// A word and its times, in seconds of the media.
#[derive(Object)]
pub struct Word {
    pub start: f64,
    pub end: f64,
    pub word: String,
    pub probability: f64,
}

/// A segment of the transcript.
#[derive(Object)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// With `word_timestamps=true`.
    pub words: Option<Vec<Word>>,
    pub avg_logprob: Option<f64>,
    pub compression_ratio: Option<f64>,
    pub no_speech_prob: Option<f64>,
    pub temperature: Option<f64>,
    /// With `channels=split`: the channel (0 left, 1 right …).
    pub channel: Option<u16>,
    /// Whisper's ids of the segment's text tokens.
    pub tokens: Option<Vec<u32>>,
}

/// The language spoken: what Whisper detected (or was told), checked against the text.
#[derive(Object)]
pub struct LanguageDetection {
    pub language: String,
    pub probability: f64,
    /// `whisper` (detected), `user` (the job's `language`), `model` (an English-only model) or
    /// `text` (read from the transcript's text, when Whisper was unsure).
    pub source: String,
    #[oai(nullable)]
    pub text_check: Option<Value>,
}

/// A key word or phrase.
#[derive(Object)]
pub struct Topic {
    pub text: String,
    pub score: f64,
}

/// A completed job's transcript and analysis.
#[derive(Object)]
pub struct JobResult {
    pub transcript: String,
    pub segments: Vec<Segment>,
    pub language_detection: LanguageDetection,
    pub topics: Vec<Topic>,
    /// Words, words per minute, speech and silence.
    #[oai(nullable)]
    pub stats: Option<Value>,
    pub duration_s: f64,
    pub model: String,
    /// `transcribe` or `translate`.
    pub task: String,
}

/// A job that has ended (the webhook's body too): `result` when completed, `error_message` when
/// failed.
#[derive(Object)]
pub struct EndedJob {
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
    pub job_id: Uuid,
    #[oai(nullable)]
    pub completed_at: Option<OffsetDateTime>,
    pub result: Option<JobResult>,
    #[oai(nullable)]
    pub error_message: Option<String>,
}

/// One model's transcriber pool.
#[derive(Object)]
pub struct ModelPool {
    pub name: String,
    pub default: bool,
    pub queued: u64,
    pub in_progress: u64,
    pub idle_workers: u64,
}

/// The models served.
#[derive(Object)]
pub struct Models {
    pub default: String,
    pub models: Vec<ModelPool>,
}

/// Each dependency: `ok`, or what is wrong.
#[derive(Object)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: String,
    pub nats: String,
    pub jetstream: String,
    pub object_store: String,
}

/// OpenAI's `usage` of the audio models.
#[derive(Object)]
#[oai(rename = "TranscriptionUsage")]
pub struct Usage {
    /// `duration`.
    pub r#type: String,
    pub seconds: u64,
}

/// OpenAI's `Transcription` (`response_format=json`).
#[derive(Object)]
pub struct Transcription {
    pub text: String,
    pub usage: Usage,
}

/// OpenAI's `TranscriptionSegment`.
#[derive(Object)]
pub struct TranscriptionSegment {
    pub id: u64,
    pub seek: u64,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f64,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
}

/// OpenAI's `TranscriptionWord`.
#[derive(Object)]
pub struct TranscriptionWord {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

/// OpenAI's `TranscriptionVerbose` (`response_format=verbose_json`).
#[derive(Object)]
pub struct TranscriptionVerbose {
    /// `transcribe` or `translate`.
    pub task: String,
    /// Whisper's English name of the language, lower case (`english`).
    pub language: String,
    pub duration: f64,
    pub text: String,
    pub segments: Option<Vec<TranscriptionSegment>>,
    /// With `timestamp_granularities[]=word`.
    pub words: Option<Vec<TranscriptionWord>>,
    pub usage: Usage,
}

/// `response_format=json` or `verbose_json`.
#[derive(Union)]
pub enum TranscriptionBody {
    Transcription(Transcription),
    Verbose(TranscriptionVerbose),
}

/// OpenAI's model object.
#[derive(Object)]
pub struct Model {
    pub id: String,
    /// `model`.
    pub object: String,
    pub created: u64,
    pub owned_by: String,
}

/// OpenAI's list of models.
#[derive(Object)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    pub data: Vec<Model>,
}

/// What went wrong, in OpenAI's words.
#[derive(Object)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error` or `server_error`.
    pub r#type: String,
    /// The form field at fault.
    #[oai(nullable)]
    pub param: Option<String>,
    #[oai(nullable)]
    pub code: Option<String>,
}

/// OpenAI's error body.
#[derive(Object)]
pub struct OpenAiError {
    pub error: OpenAiErrorDetail,
}

/// A 500 of `/result` and the synchronous routes: the job failed, or its result is missing.
#[derive(Union)]
pub enum Failed {
    Ended(Box<EndedJob>),
    Error(Error),
}

/// A 503 of the synchronous routes: the job goes on (`StillRunning`), or it was never submitted.
#[derive(Union)]
pub enum Unavailable {
    StillRunning(StillRunning),
    Error(Error),
}
