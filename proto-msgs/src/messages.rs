//! One message per pipeline subject. Each is built from the job record ([`Stage::input_for`]):
//! a stage records what it produced on the job (a blob, the duration) and the stage loop hands
//! the job to the next stage with a message made from that record. So a stage never names the
//! stage after it, and the order of the pipeline lives here alone.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::codec::{CodecError, encode};
use crate::record::{Channels, DecodingRequest, JobRecord, JobStatus};
use crate::routing::ModelName;
use crate::stage::Stage;

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

    /// The model pool the message goes to, for a stage routed by model ([`crate::Queue`]).
    fn model(&self) -> Option<&ModelName> {
        None
    }

    /// The message that starts this stage for the job `record` describes, from what the earlier
    /// stages recorded on it.
    fn from_record(record: &JobRecord) -> Result<Self, MissingInput>;

    /// Whether a job that failed in another stage still comes to this stage (the notifier
    /// reports failures to the job's webhook). Messages of failed jobs are otherwise dropped.
    fn wanted_after_failure(_record: &JobRecord) -> bool {
        false
    }
}

/// The job record lacks what a stage needs: the stage before it did not record its output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the job record has no {field}, which the {stage} stage needs")]
pub struct MissingInput {
    pub stage: Stage,
    pub field: &'static str,
}

/// A message encoded for its stage (and model pool), with its `Nats-Msg-Id`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedMessage {
    pub stage: Stage,
    /// The model pool, for a stage routed by model; `None`: the deployment's default there.
    pub model: Option<ModelName>,
    pub message_id: String,
    pub payload: Vec<u8>,
}

impl EncodedMessage {
    pub fn of<M: PipelineMessage>(message: &M) -> Result<Self, CodecError> {
        Ok(Self {
            stage: M::STAGE,
            model: message.model().cloned(),
            message_id: message.message_id(),
            payload: encode(message)?,
        })
    }
}

/// Why a stage's message could not be built from a job record.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Missing(#[from] MissingInput),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl Stage {
    /// The message that starts this stage for the job `record` describes, encoded.
    pub fn input_for(self, record: &JobRecord) -> Result<EncodedMessage, InputError> {
        fn build<M: PipelineMessage>(record: &JobRecord) -> Result<EncodedMessage, InputError> {
            Ok(EncodedMessage::of(&M::from_record(record)?)?)
        }
        match self {
            Stage::Decode => build::<DecodeRequest>(record),
            Stage::Transcribe => build::<TranscribeRequest>(record),
            Stage::Analyze => build::<AnalyzeRequest>(record),
            Stage::Notify => build::<NotifyRequest>(record),
        }
    }

    /// Whether this stage still handles a message of the job `record`: always while it runs;
    /// once completed, only the last stage (it completes jobs and delivers their webhooks);
    /// once failed, the stages that want failed jobs. Any other message (a late or redelivered
    /// one) is dropped: it would redo work and publish events after the job's end.
    pub fn wanted_for(self, record: &JobRecord) -> bool {
        match record.status {
            JobStatus::Pending | JobStatus::Processing => true,
            JobStatus::Completed => self.next().is_none(),
            JobStatus::Failed | JobStatus::Cancelled => self.wanted_after_failure(record),
        }
    }

    /// Whether a job that failed elsewhere still comes to this stage
    /// ([`PipelineMessage::wanted_after_failure`]).
    pub fn wanted_after_failure(self, record: &JobRecord) -> bool {
        match self {
            Stage::Decode => DecodeRequest::wanted_after_failure(record),
            Stage::Transcribe => TranscribeRequest::wanted_after_failure(record),
            Stage::Analyze => AnalyzeRequest::wanted_after_failure(record),
            Stage::Notify => NotifyRequest::wanted_after_failure(record),
        }
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
    /// Whether the channels are mixed down or each decoded to its own audio.
    #[serde(default, skip_serializing_if = "Channels::is_mix")]
    pub channels: Channels,
}

/// `jetscribe.pipeline.transcribe.<model>`: decoded audio is waiting to be transcribed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscribeRequest {
    pub job_id: Uuid,
    /// Object store path of the audio: [`crate::pcm`] samples (with channels=split, the first
    /// channel's).
    pub audio_blob: String,
    /// With channels=split: the audio of each channel, transcribed one by one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_blobs: Vec<String>,
    pub duration_s: f64,
    /// Language requested by the client (ISO 639-1), if any.
    pub language: Option<String>,
    /// Time every word, not only segments.
    #[serde(default)]
    pub word_timestamps: bool,
    /// The model pool the job was routed to (see [`crate::routing`]).
    #[serde(default)]
    pub model: Option<ModelName>,
    /// How the client wants the speech decoded.
    #[serde(default)]
    pub decoding: DecodingRequest,
}

/// `jetscribe.pipeline.analyze`: a transcript is waiting to be analyzed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyzeRequest {
    pub job_id: Uuid,
    /// Object store path of the [`crate::Transcript`] (JSON).
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

fn required<T: Clone>(
    stage: Stage,
    field: &'static str,
    value: &Option<T>,
) -> Result<T, MissingInput> {
    value.clone().ok_or(MissingInput { stage, field })
}

impl PipelineMessage for DecodeRequest {
    const STAGE: Stage = Stage::Decode;
    fn job_id(&self) -> Uuid {
        self.job_id
    }
    fn from_record(record: &JobRecord) -> Result<Self, MissingInput> {
        Ok(Self {
            job_id: record.job_id,
            input_blob: record.blobs.input.clone(),
            filename: record.filename.clone(),
            channels: record.channels,
        })
    }
}

impl PipelineMessage for TranscribeRequest {
    const STAGE: Stage = Stage::Transcribe;
    fn job_id(&self) -> Uuid {
        self.job_id
    }
    fn model(&self) -> Option<&ModelName> {
        self.model.as_ref()
    }
    fn from_record(record: &JobRecord) -> Result<Self, MissingInput> {
        Ok(Self {
            job_id: record.job_id,
            audio_blob: required(Self::STAGE, "blobs.audio", &record.blobs.audio)?,
            channel_blobs: record.blobs.channel_audio.clone(),
            duration_s: required(Self::STAGE, "duration_s", &record.duration_s)?,
            language: record.language.clone(),
            word_timestamps: record.word_timestamps,
            model: record.model.clone(),
            decoding: record.decoding.clone(),
        })
    }
}

impl PipelineMessage for AnalyzeRequest {
    const STAGE: Stage = Stage::Analyze;
    fn job_id(&self) -> Uuid {
        self.job_id
    }
    fn from_record(record: &JobRecord) -> Result<Self, MissingInput> {
        Ok(Self {
            job_id: record.job_id,
            transcript_blob: required(Self::STAGE, "blobs.transcript", &record.blobs.transcript)?,
        })
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
    fn from_record(record: &JobRecord) -> Result<Self, MissingInput> {
        Ok(Self::first(record.job_id))
    }
    /// A failed job's webhook reports the failure.
    fn wanted_after_failure(record: &JobRecord) -> bool {
        record.webhook_url.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::JobOptions;

    fn record(webhook: bool) -> JobRecord {
        let options = JobOptions {
            language: Some("de".into()),
            webhook_url: webhook.then(|| "https://example.org/hook".into()),
            word_timestamps: true,
            model: Some(ModelName::parse("tiny.en").expect("a valid name")),
            decoding: DecodingRequest {
                prompt: Some("Kowloon".into()),
                ..Default::default()
            },
            channels: Channels::Split,
        };
        JobRecord::new_pending(
            Uuid::nil(),
            "talk.mp4".into(),
            10,
            options,
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn each_stage_input_is_built_from_what_the_record_holds() {
        let mut job = record(false);
        let missing = |stage: Stage, job: &JobRecord| match stage.input_for(job) {
            Err(InputError::Missing(missing)) => Some(missing.field),
            Ok(_) => None,
            Err(err) => panic!("{err}"),
        };
        let cases: [(Stage, Option<&str>); 4] = [
            (Stage::Decode, None),
            (Stage::Transcribe, Some("blobs.audio")),
            (Stage::Analyze, Some("blobs.transcript")),
            (Stage::Notify, None),
        ];
        for (stage, field) in cases {
            assert_eq!(missing(stage, &job), field, "{stage}");
        }
        job.blobs.audio = Some("jobs/x/audio.s16le".into());
        assert_eq!(missing(Stage::Transcribe, &job), Some("duration_s"));
        job.duration_s = Some(11.0);
        let message = Stage::Transcribe.input_for(&job).expect("built");
        assert_eq!(message.message_id, format!("{}:transcribe", Uuid::nil()));
        let request: TranscribeRequest = crate::decode(&message.payload).expect("decodes");
        assert_eq!(request.language.as_deref(), Some("de"));
        assert!(request.word_timestamps);
        assert_eq!(request.model, job.model);
        assert_eq!(request.decoding.prompt.as_deref(), Some("Kowloon"));
        assert_eq!(request.channel_blobs, Vec::<String>::new());
        job.blobs.channel_audio = vec![
            "jobs/x/audio.ch0.s16le".into(),
            "jobs/x/audio.ch1.s16le".into(),
        ];
        let message = Stage::Transcribe.input_for(&job).expect("built");
        let request: TranscribeRequest = crate::decode(&message.payload).expect("decodes");
        assert_eq!(request.channel_blobs, job.blobs.channel_audio);
        let decode: DecodeRequest =
            crate::decode(&Stage::Decode.input_for(&job).expect("built").payload).expect("decodes");
        assert_eq!(decode.channels, Channels::Split);
        assert_eq!(message.model, job.model, "routed to the job's model pool");
        let analyze = Stage::Decode.input_for(&job).expect("built");
        assert_eq!(analyze.model, None, "one queue for the other stages");
    }

    #[test]
    fn once_a_job_has_ended_only_the_last_stage_and_the_webhook_see_its_messages() {
        use JobStatus::*;
        let cases = [
            (Stage::Decode, Pending, false, true),
            (Stage::Transcribe, Processing, false, true),
            (Stage::Decode, Completed, true, false),
            (Stage::Analyze, Completed, true, false),
            (Stage::Notify, Completed, false, true),
            (Stage::Transcribe, Failed, true, false),
            (Stage::Notify, Failed, true, true),
            (Stage::Notify, Failed, false, false),
        ];
        for (stage, status, webhook, wanted) in cases {
            let mut job = record(webhook);
            job.status = status;
            assert_eq!(
                stage.wanted_for(&job),
                wanted,
                "{stage} {status:?} {webhook}"
            );
        }
    }

    #[test]
    fn only_the_notifier_sees_failed_jobs_and_only_with_a_webhook() {
        for (stage, webhook, wanted) in [
            (Stage::Decode, true, false),
            (Stage::Analyze, true, false),
            (Stage::Notify, true, true),
            (Stage::Notify, false, false),
        ] {
            assert_eq!(
                stage.wanted_after_failure(&record(webhook)),
                wanted,
                "{stage} webhook={webhook}"
            );
        }
    }

    #[test]
    fn webhook_retries_have_their_own_message_ids() {
        let mut request = NotifyRequest::first(Uuid::nil());
        assert_eq!(request.message_id(), format!("{}:notify", Uuid::nil()));
        request.attempt = 3;
        assert_eq!(request.message_id(), format!("{}:notify:3", Uuid::nil()));
    }
}
