//! The jetscribe wire contract: the message of each pipeline subject, the job record kept in the
//! `jetscribe_jobs` bucket, the job events, the names of subjects, streams, consumers and the
//! bucket, and the codec. No I/O: every other crate (and any other language) builds on this.
//!
//! Every value is MessagePack written as named maps (`rmp_serde::to_vec_named`), so a reader in
//! any language sees field names, and fields added later are ignored by older readers.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Work stream: one subject per stage, work-queue retention.
pub const PIPELINE_STREAM: &str = "JETSCRIBE_PIPELINE";
/// Prefix of the pipeline subjects (`jetscribe.pipeline.<stage>`).
pub const PIPELINE_SUBJECT_PREFIX: &str = "jetscribe.pipeline";
/// Events stream: `jetscribe.events.<job_id>`, limits retention, so late subscribers replay.
pub const EVENTS_STREAM: &str = "JETSCRIBE_EVENTS";
/// Prefix of the event subjects.
pub const EVENTS_SUBJECT_PREFIX: &str = "jetscribe.events";
/// KV bucket of job records, keyed by job id.
pub const JOBS_BUCKET: &str = "jetscribe_jobs";
/// Header that carries the deduplication id of a pipeline message (`<job_id>:<stage>`).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Subject on which the events of one job are published.
pub fn events_subject(job_id: Uuid) -> String {
    format!("{EVENTS_SUBJECT_PREFIX}.{job_id}")
}

/// The four stages of the pipeline, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Decode,
    Transcribe,
    Analyze,
    Notify,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::Decode,
        Stage::Transcribe,
        Stage::Analyze,
        Stage::Notify,
    ];

    /// Lower-case name: used in subjects, consumer names and the job record.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Transcribe => "transcribe",
            Stage::Analyze => "analyze",
            Stage::Notify => "notify",
        }
    }

    /// The subject this stage consumes.
    pub fn subject(self) -> String {
        format!("{PIPELINE_SUBJECT_PREFIX}.{}", self.name())
    }

    /// The durable consumer shared by every process of this stage.
    pub fn consumer_name(self) -> String {
        format!("jetscribe-{}", self.name())
    }

    /// What `/status` shows as `step` while this stage works on a job.
    pub fn step(self) -> &'static str {
        match self {
            Stage::Decode => "decoding",
            Stage::Transcribe => "transcribing",
            Stage::Analyze => "analyzing",
            Stage::Notify => "notifying",
        }
    }

    /// The share of overall progress (0..=100) this stage spans, so that progress seen by a
    /// client only ever grows across stages.
    pub fn progress_span(self) -> (u8, u8) {
        match self {
            Stage::Decode => (0, 15),
            Stage::Transcribe => (15, 90),
            Stage::Analyze => (90, 97),
            Stage::Notify => (97, 100),
        }
    }

    /// Maps a fraction of this stage's work (0.0..=1.0) to overall progress.
    pub fn overall_progress(self, fraction: f64) -> u8 {
        let (lo, hi) = self.progress_span();
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        lo + ((f64::from(hi - lo)) * fraction).floor() as u8
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A message of the pipeline: the payload of one stage's subject.
pub trait PipelineMessage: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stage that consumes this message.
    const STAGE: Stage;
    fn job_id(&self) -> Uuid;

    /// `Nats-Msg-Id` of the message: JetStream stores one message per id within its duplicate
    /// window, so a publish retried after a crash is not doubled. One per job and stage.
    fn message_id(&self) -> String {
        format!("{}:{}", self.job_id(), Self::STAGE.name())
    }
}

/// `jetscribe.pipeline.decode`: an uploaded file is waiting to be decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeRequest {
    pub job_id: Uuid,
    /// Object store path of the uploaded file.
    pub input_blob: String,
    /// The file name the client gave, for messages.
    pub filename: String,
}

/// `jetscribe.pipeline.transcribe`: decoded audio is waiting to be transcribed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscribeRequest {
    pub job_id: Uuid,
    /// Object store path of the audio: 16 kHz mono signed 16-bit little-endian PCM.
    pub audio_blob: String,
    pub duration_s: f64,
    /// Language requested by the client (ISO 639-1), if any.
    pub language: Option<String>,
    /// Time every word, not only segments.
    #[serde(default)]
    pub word_timestamps: bool,
}

/// `jetscribe.pipeline.analyze`: a transcript is waiting to be analyzed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyzeRequest {
    pub job_id: Uuid,
    /// Object store path of the [`Transcript`] (JSON).
    pub transcript_blob: String,
}

/// `jetscribe.pipeline.notify`: the job has ended (its record says how); complete it and deliver
/// its webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyRequest {
    pub job_id: Uuid,
    /// The webhook attempt this message is for: 1 for the first; each retry is a new message.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// A retry is not made before this time (the notifier hands the message back until then).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub not_before: Option<OffsetDateTime>,
}

fn first_attempt() -> u32 {
    1
}

impl NotifyRequest {
    /// The hand-over from the last working stage (or from a failure) to the notifier.
    pub fn first(job_id: Uuid) -> Self {
        Self {
            job_id,
            attempt: 1,
            not_before: None,
        }
    }
}

impl PipelineMessage for DecodeRequest {
    const STAGE: Stage = Stage::Decode;
    fn job_id(&self) -> Uuid {
        self.job_id
    }
}
impl PipelineMessage for TranscribeRequest {
    const STAGE: Stage = Stage::Transcribe;
    fn job_id(&self) -> Uuid {
        self.job_id
    }
}
impl PipelineMessage for AnalyzeRequest {
    const STAGE: Stage = Stage::Analyze;
    fn job_id(&self) -> Uuid {
        self.job_id
    }
}
impl PipelineMessage for NotifyRequest {
    const STAGE: Stage = Stage::Notify;
    fn job_id(&self) -> Uuid {
        self.job_id
    }
    fn message_id(&self) -> String {
        match self.attempt {
            0 | 1 => format!("{}:{}", self.job_id, Self::STAGE.name()),
            attempt => format!("{}:{}:{attempt}", self.job_id, Self::STAGE.name()),
        }
    }
}

/// Life-cycle of a job, as `/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Processing,
    Completed,
    Failed,
}

impl JobStatus {
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }
}

/// What happened to a job in one stage: for `/jobs/processing` and for diagnosing retries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageRun {
    /// Deliveries of this stage's message so far (1 = first try).
    pub attempts: u32,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Media second this attempt resumed from (a checkpoint of an earlier attempt), if any.
    #[serde(default)]
    pub resumed_from_s: Option<f64>,
}

/// The job record: value of key `<job_id>` in the `jetscribe_jobs` bucket. Updated only by
/// compare-and-set on the entry's revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: Uuid,
    pub status: JobStatus,
    /// Overall progress 0..=100; never decreases.
    pub progress: u8,
    /// What the job is doing now: `queued`, `decoding`, `transcribing`, `analyzing`,
    /// `notifying`, `completed`, `failed`.
    pub step: String,
    pub filename: String,
    /// Bytes uploaded.
    pub size_bytes: u64,
    pub language: Option<String>,
    pub webhook_url: Option<String>,
    /// The client asked for the time of every word.
    #[serde(default)]
    pub word_timestamps: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub completed_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub error_message: Option<String>,
    /// Media duration in seconds, once decoded.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Estimated seconds until the current stage ends, while it reports one.
    #[serde(default)]
    pub eta_s: Option<f64>,
    /// Where the job's data lives in the object store.
    pub blobs: JobBlobs,
    /// Per stage name: attempts and timings.
    #[serde(default)]
    pub stages: BTreeMap<String, StageRun>,
    /// The webhook's delivery, once the notifier has tried it.
    #[serde(default)]
    pub webhook: Option<WebhookDelivery>,
}

/// How a job's webhook delivery went: every attempt, and where it stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// `webhook-id` of the delivery: the same on every attempt, so receivers can drop repeats.
    pub id: String,
    pub state: WebhookState,
    pub attempts: u32,
    #[serde(default)]
    pub last_status_code: Option<u16>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub delivered_at: Option<OffsetDateTime>,
    /// When the next attempt is due, while one is scheduled.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Each attempt, oldest first.
    #[serde(default)]
    pub history: Vec<WebhookAttempt>,
}

impl WebhookDelivery {
    /// A delivery not yet tried, with the job's `webhook-id`.
    pub fn new(job_id: Uuid) -> Self {
        Self {
            id: format!("msg_{}", job_id.simple()),
            ..Default::default()
        }
    }
}

/// Where a webhook delivery stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    /// Not tried yet, or a retry is scheduled.
    #[default]
    Pending,
    Delivered,
    /// Out of retries, or refused by the receiver (a 4xx other than 408 and 429).
    Failed,
}

/// One POST of a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookAttempt {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The receiver's HTTP status, when it answered.
    #[serde(default)]
    pub status_code: Option<u16>,
    /// Why the attempt failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// What the client chose when submitting a job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOptions {
    /// ISO 639-1 code; detected when `None`.
    pub language: Option<String>,
    pub webhook_url: Option<String>,
    pub word_timestamps: bool,
}

/// Object store paths of one job's data. All live under `jobs/<job_id>/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobBlobs {
    pub input: String,
    #[serde(default)]
    pub audio: Option<String>,
    #[serde(default)]
    pub transcript: Option<String>,
    #[serde(default)]
    pub result: Option<String>,
}

impl JobBlobs {
    pub fn prefix(job_id: Uuid) -> String {
        format!("jobs/{job_id}")
    }
    pub fn input_path(job_id: Uuid) -> String {
        format!("jobs/{job_id}/input")
    }
    pub fn audio_path(job_id: Uuid) -> String {
        format!("jobs/{job_id}/audio.s16le")
    }
    pub fn transcript_path(job_id: Uuid) -> String {
        format!("jobs/{job_id}/transcript.json")
    }
    /// The transcriber's progress so far (segments of finished batches, where to resume).
    pub fn transcribe_checkpoint_path(job_id: Uuid) -> String {
        format!("jobs/{job_id}/transcribe.checkpoint.json")
    }
    pub fn result_path(job_id: Uuid) -> String {
        format!("jobs/{job_id}/result.json")
    }
}

impl JobRecord {
    /// A freshly submitted job, waiting for the decoder.
    pub fn new_pending(
        job_id: Uuid,
        filename: String,
        size_bytes: u64,
        options: JobOptions,
        now: OffsetDateTime,
    ) -> Self {
        let JobOptions {
            language,
            webhook_url,
            word_timestamps,
        } = options;
        Self {
            job_id,
            status: JobStatus::Pending,
            progress: 0,
            step: "queued".to_owned(),
            filename,
            size_bytes,
            language,
            webhook_url,
            word_timestamps,
            created_at: now,
            updated_at: now,
            completed_at: None,
            error_message: None,
            duration_s: None,
            eta_s: None,
            blobs: JobBlobs {
                input: JobBlobs::input_path(job_id),
                audio: None,
                transcript: None,
                result: None,
            },
            stages: BTreeMap::new(),
            webhook: None,
        }
    }

    /// Raises progress; a lower value is ignored so that progress never goes back (a retried
    /// stage reports from its start again).
    pub fn raise_progress(&mut self, progress: u8) {
        self.progress = self.progress.max(progress.min(100));
    }

    pub fn stage_run(&mut self, stage: Stage) -> &mut StageRun {
        self.stages.entry(stage.name().to_owned()).or_default()
    }
}

/// A transcript as the transcriber stores it (JSON blob).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub text: String,
    pub segments: Vec<Segment>,
    /// What Whisper detected or was told.
    pub language: LanguageDetection,
    pub duration_s: f64,
    /// Model folder name, e.g. `whisper-base`.
    pub model: String,
}

/// A stretch of the transcript with its times in seconds of the original media.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// Present when the job asked for word timestamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word>>,
}

/// One word of a segment, with its times in seconds of the original media.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub start: f64,
    pub end: f64,
    pub word: String,
    /// Whisper's mean probability of the word's tokens, 0..=1.
    pub probability: f64,
}

/// The language of a transcript and where that answer comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanguageDetection {
    /// ISO 639-1 code.
    pub language: String,
    pub probability: f64,
    /// `whisper` (detected by the model), `user` (requested), `model` (an English-only model),
    /// `text` (from the transcript text, when Whisper was unsure).
    pub source: String,
    /// What the transcript's text says (whatlang), once the analyzer has looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_check: Option<TextLanguageCheck>,
}

/// The language of the transcript's text as whatlang sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextLanguageCheck {
    /// ISO 639-1 code (ISO 639-3 where 639-1 has none).
    pub language: String,
    /// whatlang's confidence, 0..=1.
    pub confidence: f64,
    /// whatlang's own judgement of whether the text was enough to tell.
    pub reliable: bool,
}

/// Figures about the speech in a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptStats {
    /// Words (characters, for languages written without spaces).
    pub words: u64,
    /// Words per minute of speech.
    pub words_per_minute: f64,
    /// Seconds covered by segments.
    pub speech_s: f64,
    /// The rest of the media's duration.
    pub silence_s: f64,
}

/// A keyword or key phrase of the transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topic {
    pub text: String,
    /// Relevance in (0, 1]: 1 for the best topic.
    pub score: f64,
}

/// The result of a completed job, as `/result` and the webhook carry it (JSON blob).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub transcript: String,
    pub segments: Vec<Segment>,
    pub language_detection: LanguageDetection,
    /// Key words and phrases, best first.
    pub topics: Vec<Topic>,
    #[serde(default)]
    pub stats: Option<TranscriptStats>,
    pub duration_s: f64,
    pub model: String,
}

/// What a job event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Submitted,
    StageStarted,
    Progress,
    StageCompleted,
    Completed,
    Failed,
}

impl EventKind {
    /// The name on the wire: `stage_started`, `completed`, …
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Submitted => "submitted",
            EventKind::StageStarted => "stage_started",
            EventKind::Progress => "progress",
            EventKind::StageCompleted => "stage_completed",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
        }
    }

    /// `completed` or `failed`: the last event of a job.
    pub fn is_final(self) -> bool {
        matches!(self, EventKind::Completed | EventKind::Failed)
    }
}

/// An event on `jetscribe.events.<job_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: Uuid,
    pub kind: EventKind,
    pub status: JobStatus,
    pub progress: u8,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The stage the event comes from, if any.
    #[serde(default)]
    pub stage: Option<Stage>,
    /// The failure reason on `failed`.
    #[serde(default)]
    pub error_message: Option<String>,
    /// On `progress` from a stage that can tell: estimated seconds until that stage ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    /// Media duration in seconds, once the decoder knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

/// Encoding or decoding a wire value failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: rmp_serde::encode::Error,
    },
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        source: rmp_serde::decode::Error,
    },
}

/// Encodes a value as MessagePack with named fields (the `to_vec_named` layout), in the
/// human-readable form: UUIDs as strings, not 16 raw bytes, so that any language reads them.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::new();
    let mut serializer = rmp_serde::Serializer::new(&mut bytes)
        .with_struct_map()
        .with_human_readable();
    value
        .serialize(&mut serializer)
        .map_err(|source| CodecError::Encode {
            what: std::any::type_name::<T>(),
            source,
        })?;
    Ok(bytes)
}

/// Decodes a MessagePack value written by [`encode`] (or by any named-map writer).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
    T::deserialize(&mut deserializer).map_err(|source| CodecError::Decode {
        what: std::any::type_name::<T>(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_progress_stays_inside_the_stage_span() {
        assert_eq!(Stage::Decode.overall_progress(0.0), 0);
        assert_eq!(Stage::Transcribe.overall_progress(1.0), 90);
        assert_eq!(Stage::Notify.overall_progress(1.0), 100);
        assert_eq!(Stage::Analyze.overall_progress(f64::NAN), 90);
        assert_eq!(Stage::Analyze.overall_progress(7.0), 97);
    }

    #[test]
    fn raise_progress_never_goes_back() {
        let mut record = JobRecord::new_pending(
            Uuid::new_v4(),
            "a.wav".into(),
            1,
            JobOptions::default(),
            OffsetDateTime::UNIX_EPOCH,
        );
        record.raise_progress(40);
        record.raise_progress(10);
        assert_eq!(record.progress, 40);
        record.raise_progress(250);
        assert_eq!(record.progress, 100);
    }
}
