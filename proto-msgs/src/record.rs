//! The job record: value of key `<job_id>` in the `jetscribe_jobs` bucket. Written only by
//! compare-and-set on the entry's revision (see `jetscribe_nats::JobStore`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::routing::ModelName;
use crate::stage::{JobStep, Stage};

/// Life-cycle of a job, as `/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    /// Cancelled by its client (`DELETE /jobs/{id}`).
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Pending,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The name on the wire (`/status`'s `status`).
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the job has ended: completed, failed or cancelled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// What happened to a job in one stage: for `/status` and for diagnosing retries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageRun {
    /// Tries of this stage so far (1 = first try). A message handed back unhandled (its process
    /// shutting down, or the message not due yet) is not a try.
    pub attempts: u32,
    /// Tries that failed with an error or a panic.
    #[serde(default)]
    pub failures: u32,
    /// Tries whose process died handling the message without the job moving on (killed, out of
    /// memory, crashed). Two count as one failed try: a poison message that takes its process
    /// down every time ends like one that fails every time, while processes killed at random
    /// (a deployment, a node lost) rarely fail a job.
    #[serde(default)]
    pub crashes: u32,
    /// Tries stopped by a service the stage needs being down (the object store unreachable,
    /// read-only or full): made again for as long as it lasts, never counted as failed.
    #[serde(default)]
    pub outages: u32,
    /// Set while a try runs: the job's progress when it began. Found set when the next try
    /// begins, the process of the last one died with it.
    #[serde(default)]
    pub running_from_progress: Option<u8>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Media second this attempt resumed from (a checkpoint of an earlier attempt), if any.
    #[serde(default)]
    pub resumed_from_s: Option<f64>,
    /// The process of the latest try, `<host>/<pid>` (a pod's name in Kubernetes).
    #[serde(default)]
    pub worker: Option<String>,
}

impl StageRun {
    /// A try of the stage begins, the job at `progress`. A try found still running ended with
    /// its process: a crash, unless the job progressed meanwhile (a long job whose process was
    /// killed half-way, and resumes from its checkpoint, is not failing). Returns whether the
    /// last try was counted as a crash.
    pub fn begin_try(&mut self, stage: Stage, progress: u8, now: OffsetDateTime) -> bool {
        let died = self
            .running_from_progress
            .is_some_and(|from| progress <= from);
        if died {
            self.crashes += 1;
            self.last_error = Some(format!(
                "the {stage} process stopped while handling the job"
            ));
        }
        self.attempts += 1;
        self.running_from_progress = Some(progress);
        self.started_at.get_or_insert(now);
        died
    }

    /// Failed tries so far, a crash counting half.
    pub fn failed_tries(&self) -> u32 {
        self.failures + self.crashes / 2
    }

    /// The running try ends with the message handed back unhandled: it was not a try.
    pub fn hand_back(&mut self) {
        self.attempts = self.attempts.saturating_sub(1);
        self.running_from_progress = None;
    }

    /// The running try ends with an answer (done, failed, retried later).
    pub fn end_try(&mut self) {
        self.running_from_progress = None;
    }
}

/// The job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: Uuid,
    pub status: JobStatus,
    /// Overall progress 0..=100; never decreases.
    pub progress: u8,
    /// What the job is doing now.
    pub step: JobStep,
    pub filename: String,
    /// Bytes uploaded.
    pub size_bytes: u64,
    pub language: Option<String>,
    pub webhook_url: Option<String>,
    /// The client asked for the time of every word.
    #[serde(default)]
    pub word_timestamps: bool,
    /// The Whisper model (pool) that transcribes the job; `None` on records from before models
    /// were routed: the deployment's default.
    #[serde(default)]
    pub model: Option<ModelName>,
    /// How the client wants the speech decoded (prompt, task, ...).
    #[serde(default, skip_serializing_if = "DecodingRequest::is_default")]
    pub decoding: DecodingRequest,
    /// Whether the channels of the audio are mixed into one or transcribed one by one.
    #[serde(default, skip_serializing_if = "Channels::is_mix")]
    pub channels: Channels,
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
    /// Per stage: attempts and timings.
    #[serde(default)]
    pub stages: BTreeMap<Stage, StageRun>,
    /// The webhook's delivery, once the notifier has tried it.
    #[serde(default)]
    pub webhook: Option<WebhookDelivery>,
    /// The name of the API key that submitted the job (none when the API has no keys).
    #[serde(default)]
    pub owner: Option<String>,
    /// Times the janitor found the job lost (unfinished, no stage message stored) and queued it
    /// again.
    #[serde(default)]
    pub requeues: u32,
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

/// What Whisper is asked to do with the speech.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Write down what is said, in the language it is said in.
    #[default]
    Transcribe,
    /// Write it down in English, whatever the language spoken.
    Translate,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Transcribe => "transcribe",
            Task::Translate => "translate",
        }
    }
}

/// How a client wants its job decoded; what it leaves unset follows the deployment's settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecodingRequest {
    /// Text taken as said just before the speech: names, spellings, style (Whisper's initial
    /// prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Words to favour, put in the prompt of every window (as faster-whisper does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotwords: Option<String>,
    #[serde(default)]
    pub task: Task,
    /// The first temperature tried (the fallback goes on with the hotter ones configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Beam width at temperature 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beam_size: Option<u8>,
}

impl DecodingRequest {
    /// Nothing asked: the deployment's settings.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// What is done with the channels of a stereo (or multi-channel) recording.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// Mixed down to one channel, transcribed once.
    #[default]
    Mix,
    /// Each channel transcribed on its own, the segments merged in time order with their
    /// channel: the two sides of a call recording become two speakers.
    Split,
}

impl Channels {
    pub fn name(self) -> &'static str {
        match self {
            Channels::Mix => "mix",
            Channels::Split => "split",
        }
    }

    pub fn is_mix(&self) -> bool {
        *self == Channels::Mix
    }
}

/// What the client chose when submitting a job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOptions {
    /// ISO 639-1 code; detected when `None`.
    pub language: Option<String>,
    pub webhook_url: Option<String>,
    pub word_timestamps: bool,
    /// The Whisper model to transcribe with; the API sets the default when the client names
    /// none.
    pub model: Option<ModelName>,
    pub decoding: DecodingRequest,
    pub channels: Channels,
}

/// Object store paths of one job's data. All live under `jobs/<job_id>/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobBlobs {
    pub input: String,
    /// The decoded audio ([`crate::pcm`]); with channels=split, its first channel's.
    #[serde(default)]
    pub audio: Option<String>,
    /// With channels=split: the decoded audio of each channel, in the media's channel order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_audio: Vec<String>,
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
    /// The decoded audio of channel `channel` (from 0), with channels=split.
    pub fn channel_audio_path(job_id: Uuid, channel: u16) -> String {
        format!("jobs/{job_id}/audio.ch{channel}.s16le")
    }
    pub fn transcript_path(job_id: Uuid) -> String {
        format!("jobs/{job_id}/transcript.json")
    }
    /// The transcriber's progress so far (segments of finished batches, where to resume).
    pub fn transcribe_checkpoint_path(job_id: Uuid) -> String {
        format!("jobs/{job_id}/transcribe.checkpoint.json")
    }
    /// [`Self::transcribe_checkpoint_path`] of one channel, with channels=split.
    pub fn channel_checkpoint_path(job_id: Uuid, channel: u16) -> String {
        format!("jobs/{job_id}/transcribe.ch{channel}.checkpoint.json")
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
            model,
            decoding,
            channels,
        } = options;
        Self {
            job_id,
            status: JobStatus::Pending,
            progress: 0,
            step: JobStep::Queued,
            filename,
            size_bytes,
            language,
            webhook_url,
            word_timestamps,
            model,
            decoding,
            channels,
            created_at: now,
            updated_at: now,
            completed_at: None,
            error_message: None,
            duration_s: None,
            eta_s: None,
            blobs: JobBlobs {
                input: JobBlobs::input_path(job_id),
                audio: None,
                channel_audio: Vec::new(),
                transcript: None,
                result: None,
            },
            stages: BTreeMap::new(),
            webhook: None,
            owner: None,
            requeues: 0,
        }
    }

    /// Raises progress; a lower value is ignored so that progress never goes back (a retried
    /// stage reports from its start again).
    pub fn raise_progress(&mut self, progress: u8) {
        self.progress = self.progress.max(progress.min(100));
    }

    pub fn stage_run(&mut self, stage: Stage) -> &mut StageRun {
        self.stages.entry(stage).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_progress_never_goes_back() {
        let mut record = JobRecord::new_pending(
            Uuid::new_v4(),
            "a.wav".into(),
            1,
            JobOptions::default(),
            OffsetDateTime::UNIX_EPOCH,
        );
        for (raise_to, expected) in [(40, 40), (10, 40), (250, 100)] {
            record.raise_progress(raise_to);
            assert_eq!(record.progress, expected);
        }
    }

    #[test]
    fn a_try_that_died_counts_as_failed_unless_the_job_progressed() {
        let now = OffsetDateTime::UNIX_EPOCH;
        // (progress at the last try's start, progress now, counted as failed)
        let cases = [
            (None, 0, false),
            (Some(20), 20, true),
            (Some(20), 15, true),
            (Some(20), 44, false),
        ];
        for (running_from_progress, progress, failed) in cases {
            let mut run = StageRun {
                attempts: 1,
                running_from_progress,
                ..Default::default()
            };
            assert_eq!(run.begin_try(Stage::Transcribe, progress, now), failed);
            assert_eq!(run.crashes, u32::from(failed));
            assert_eq!(run.attempts, 2);
            assert_eq!(run.running_from_progress, Some(progress));
            assert_eq!(
                run.last_error.is_some(),
                failed,
                "{running_from_progress:?} -> {progress}"
            );
        }
    }

    #[test]
    fn a_handed_back_try_is_not_a_try() {
        let mut run = StageRun::default();
        run.begin_try(Stage::Decode, 0, OffsetDateTime::UNIX_EPOCH);
        run.hand_back();
        run.begin_try(Stage::Decode, 0, OffsetDateTime::UNIX_EPOCH);
        assert_eq!((run.attempts, run.failures, run.crashes), (1, 0, 0));
        run.end_try();
        assert_eq!(run.running_from_progress, None);
        let run = StageRun {
            failures: 1,
            crashes: 3,
            ..Default::default()
        };
        assert_eq!(run.failed_tries(), 2, "two crashes count as one failed try");
    }

    #[test]
    fn stage_runs_are_keyed_by_stage_name() {
        let mut record = JobRecord::new_pending(
            Uuid::nil(),
            "a.wav".into(),
            1,
            JobOptions::default(),
            OffsetDateTime::UNIX_EPOCH,
        );
        record.stage_run(Stage::Transcribe).attempts = 2;
        let json = serde_json::to_value(&record).expect("serializes");
        assert_eq!(json["stages"]["transcribe"]["attempts"], 2);
        assert_eq!(json["step"], "queued");
    }
}
