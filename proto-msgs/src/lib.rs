//! The jetscribe wire contract: the message of each pipeline subject, the job record kept in the
//! `jetscribe_jobs` bucket, the job events, the bodies a client receives from `/result` and its
//! webhook, the names of subjects, streams, consumers and the bucket, the PCM format between the
//! decoder and the transcriber, and the codec. No I/O: every other crate (and any other language)
//! builds on this.
//!
//! Every value is MessagePack written as named maps (`rmp_serde::to_vec_named`), so a reader in
//! any language sees field names, and fields added later are ignored by older readers.
//!
//! - [`stage`]: the stages in pipeline order, their subjects and progress spans;
//! - [`routing`]: where a stage's messages wait (the transcriber's pool per model);
//! - [`messages`]: one message per stage, built from the job record ([`Stage::input_for`]);
//! - [`record`]: the job record and what it holds;
//! - [`transcript`]: transcripts and results;
//! - [`events`]: job events;
//! - [`bodies`]: the JSON bodies shared by the API and the notifier;
//! - [`languages`]: the language codes a client may ask for;
//! - [`submissions`]: the index of submitted jobs, per key;
//! - [`dead_letters`]: messages the pipeline gave up on, with the reason;
//! - [`pcm`]: the audio format between decoder and transcriber;
//! - [`codec`]: MessagePack with named fields.

pub mod bodies;
pub mod codec;
pub mod dead_letters;
pub mod events;
pub mod languages;
pub mod messages;
pub mod pcm;
pub mod record;
pub mod routing;
pub mod stage;
pub mod submissions;
pub mod transcript;

pub use bodies::EndedJobBody;
pub use codec::{CodecError, decode, encode};
pub use dead_letters::{
    DEAD_LETTER_STREAM, DEAD_LETTER_SUBJECT_PREFIX, DeadLetter, dead_letter_subject,
};
pub use events::{EventKind, JobEvent};
pub use messages::{
    AnalyzeRequest, DecodeRequest, EncodedMessage, InputError, MissingInput, NotifyRequest,
    PipelineMessage, TranscribeRequest,
};
pub use record::{
    Channels, DecodingRequest, JobBlobs, JobOptions, JobRecord, JobStatus, StageRun, Task,
    WebhookAttempt, WebhookDelivery, WebhookState,
};
pub use routing::{InvalidModelName, ModelName, Queue};
pub use stage::{JobStep, Stage};
pub use submissions::{
    SUBMISSIONS_STREAM, SUBMISSIONS_SUBJECT_PREFIX, Submission, submissions_subject,
};
pub use transcript::{
    JobResult, LanguageDetection, LanguageSource, Segment, SegmentText, TextLanguageCheck, Topic,
    Transcript, TranscriptSoFar, TranscriptStats, Word,
};

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
/// KV bucket of idempotency keys (per API key) and the job each created, kept 24 h.
pub const IDEMPOTENCY_BUCKET: &str = "jetscribe_idempotency";
/// Prefix of the core NATS subjects (not stored) on which the stages running a job are told it
/// was cancelled: `jetscribe.cancel.<job_id>`.
pub const CANCEL_SUBJECT_PREFIX: &str = "jetscribe.cancel";
/// Header that carries the deduplication id of a message (`<job_id>:<stage>`).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Subject on which the stages are told that a job was cancelled.
pub fn cancel_subject(job_id: Uuid) -> String {
    format!("{CANCEL_SUBJECT_PREFIX}.{job_id}")
}

/// Subject on which the events of one job are published.
pub fn events_subject(job_id: Uuid) -> String {
    format!("{EVENTS_SUBJECT_PREFIX}.{job_id}")
}
