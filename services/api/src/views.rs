//! The JSON bodies of the API, as typed views of the job record (the bodies of ended jobs are
//! [`proto_msgs::EndedJobBody`], shared with the webhook). Field names and shapes are those of
//! the service jetscribe replaces.

use std::collections::BTreeMap;

use jetscribe_nats::StageQueue;
use proto_msgs::{
    Channels, DeadLetter, JobRecord, JobStatus, JobStep, ModelName, Stage, StageRun,
    WebhookDelivery,
};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// A refused request: `{"detail": "<field>: why"}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub detail: &'a str,
}

/// `POST /process`: 202, the job is accepted.
#[derive(Debug, Serialize)]
pub struct AcceptedJob {
    pub job_id: Uuid,
    pub status: JobStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub filename: String,
    pub size_bytes: u64,
    pub message: &'static str,
}

/// A page of `GET /jobs`: the jobs, newest first, and the cursor of the next page (absent on
/// the last).
#[derive(Debug, Serialize)]
pub struct JobPage<'a> {
    pub jobs: Vec<JobSummary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What names a job and where it stands: a row of `/jobs` and `/jobs/processing`, and the head
/// of `/status`.
#[derive(Debug, Serialize)]
pub struct JobSummary<'a> {
    pub job_id: Uuid,
    pub status: JobStatus,
    pub progress: u8,
    pub step: JobStep,
    pub filename: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl<'a> From<&'a JobRecord> for JobSummary<'a> {
    fn from(record: &'a JobRecord) -> Self {
        Self {
            job_id: record.job_id,
            status: record.status,
            progress: record.progress,
            step: record.step,
            filename: &record.filename,
            created_at: record.created_at,
        }
    }
}

/// `GET /status/{id}`.
#[derive(Debug, Serialize)]
pub struct JobStatusView<'a> {
    #[serde(flatten)]
    pub summary: JobSummary<'a>,
    pub eta_seconds: Option<f64>,
    pub size_bytes: u64,
    pub duration_s: Option<f64>,
    pub language: Option<&'a str>,
    /// The Whisper model (pool) that transcribes the job (`null` for a job submitted before
    /// models were routed: the default).
    pub model: Option<&'a ModelName>,
    /// `mix`, or `split`: each channel transcribed on its own.
    pub channels: Channels,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
    pub error_message: Option<&'a str>,
    /// The API key that submitted the job.
    pub owner: Option<&'a str>,
    pub stages: BTreeMap<Stage, StageRunView<'a>>,
    /// The delivery as recorded: {id, state, attempts, last_status_code, last_error,
    /// delivered_at, next_attempt_at, history}.
    pub webhook: Option<&'a WebhookDelivery>,
}

/// `GET /jobs/{id}`: the job as `/status` shows it, and for an admin its dead letter (`null`
/// when the pipeline gave up on none of its messages; absent for other callers).
#[derive(Debug, Serialize)]
pub struct JobDetail<'a> {
    #[serde(flatten)]
    pub status: JobStatusView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<Option<DeadLetterView<'a>>>,
}

/// A message the pipeline gave up on, the message itself as JSON.
#[derive(Debug, Serialize)]
pub struct DeadLetterView<'a> {
    pub stage: Stage,
    pub reason: &'a str,
    pub attempts: u32,
    pub failures: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub subject: &'a str,
    /// `null` if the message was not even MessagePack.
    pub message: Option<serde_json::Value>,
}

impl<'a> From<&'a DeadLetter> for DeadLetterView<'a> {
    fn from(letter: &'a DeadLetter) -> Self {
        Self {
            stage: letter.stage,
            reason: &letter.reason,
            attempts: letter.attempts,
            failures: letter.failures,
            at: letter.at,
            subject: &letter.subject,
            message: proto_msgs::decode(&letter.payload).ok(),
        }
    }
}

/// One stage's run in `/status`: tries, failed tries and tries stopped by an outage, start and
/// end, seconds taken, last error, resume point.
#[derive(Debug, Serialize)]
pub struct StageRunView<'a> {
    pub attempts: u32,
    pub failures: u32,
    pub outages: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub seconds: Option<f64>,
    pub last_error: Option<&'a str>,
    pub resumed_from_s: Option<f64>,
    /// The process of the latest try, `<host>/<pid>`.
    pub worker: Option<&'a str>,
}

impl<'a> From<&'a StageRun> for StageRunView<'a> {
    fn from(run: &'a StageRun) -> Self {
        let seconds = match (run.started_at, run.finished_at) {
            (Some(start), Some(end)) => Some((end - start).as_seconds_f64()),
            _ => None,
        };
        Self {
            attempts: run.attempts,
            failures: run.failures,
            outages: run.outages,
            started_at: run.started_at,
            finished_at: run.finished_at,
            seconds,
            last_error: run.last_error.as_deref(),
            resumed_from_s: run.resumed_from_s,
            worker: run.worker.as_deref(),
        }
    }
}

impl<'a> From<&'a JobRecord> for JobStatusView<'a> {
    fn from(record: &'a JobRecord) -> Self {
        Self {
            summary: JobSummary::from(record),
            eta_seconds: record.eta_s,
            size_bytes: record.size_bytes,
            duration_s: record.duration_s,
            language: record.language.as_deref(),
            model: record.model.as_ref(),
            channels: record.channels,
            updated_at: record.updated_at,
            completed_at: record.completed_at,
            error_message: record.error_message.as_deref(),
            owner: record.owner.as_deref(),
            stages: record
                .stages
                .iter()
                .map(|(stage, run)| (*stage, StageRunView::from(run)))
                .collect(),
            webhook: record.webhook.as_ref(),
        }
    }
}

/// `GET /result/{id}` while the job runs: 202.
#[derive(Debug, Serialize)]
pub struct RunningJob {
    pub job_id: Uuid,
    pub status: JobStatus,
    pub progress: u8,
    pub step: JobStep,
    pub message: &'static str,
}

impl From<&JobRecord> for RunningJob {
    fn from(record: &JobRecord) -> Self {
        Self {
            job_id: record.job_id,
            status: record.status,
            progress: record.progress,
            step: record.step,
            message: "Job is still being processed",
        }
    }
}

/// `GET /jobs/processing`: the jobs that have not ended, oldest first, and the queue of each
/// stage (`null` when the queues cannot be read).
#[derive(Debug, Serialize)]
pub struct ActiveJobs<'a> {
    pub count: usize,
    pub jobs: Vec<JobSummary<'a>>,
    pub stages: Option<Vec<StageQueue>>,
}

/// `GET /models`: the default model, and every model a transcriber pool serves.
#[derive(Debug, Serialize)]
pub struct ModelsView {
    pub default: ModelName,
    pub models: Vec<ModelPool>,
}

/// One model's pool: its queue, and the transcribers waiting for work now (0 while a
/// transcriber works or none runs).
#[derive(Debug, Serialize)]
pub struct ModelPool {
    pub name: ModelName,
    pub default: bool,
    /// Jobs waiting for a transcriber of this model.
    pub queued: u64,
    /// Jobs being transcribed.
    pub in_progress: usize,
    pub idle_workers: usize,
}

/// `GET /health`: `ok` or what is wrong with each dependency, in words meant for whoever can
/// reach `/health` (the causes are in the log).
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub nats: &'static str,
    pub jetstream: &'static str,
    pub object_store: &'static str,
}

/// The synchronous endpoints' answer when the job goes on without them (504, or 503 when it
/// cannot be followed): `{job_id, status: "processing", detail}`.
#[derive(Debug, Serialize)]
pub struct StillRunning {
    pub job_id: Uuid,
    pub status: JobStatus,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_msgs::JobOptions;

    #[test]
    fn status_shows_each_stage_run_with_its_duration() {
        let mut record = JobRecord::new_pending(
            Uuid::nil(),
            "a.wav".into(),
            3,
            JobOptions::default(),
            OffsetDateTime::UNIX_EPOCH,
        );
        let run = record.stage_run(Stage::Decode);
        run.attempts = 1;
        run.started_at = Some(OffsetDateTime::UNIX_EPOCH);
        run.finished_at = Some(OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(1500));
        let json = serde_json::to_value(JobStatusView::from(&record)).expect("serializes");
        assert_eq!(json["status"], "pending");
        assert_eq!(json["step"], "queued");
        assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(json["completed_at"], serde_json::Value::Null);
        assert_eq!(json["stages"]["decode"]["seconds"], 1.5);
        assert_eq!(
            json["stages"]["decode"]["finished_at"],
            "1970-01-01T00:00:01.5Z"
        );
        assert_eq!(json["webhook"], serde_json::Value::Null);
    }
}
