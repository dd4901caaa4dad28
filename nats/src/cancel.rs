//! Cancelling a job (`DELETE /jobs/{id}`): the record is marked `cancelled` first (so no stage
//! starts it, and a stage that finishes a step for it drops what it made), then the stages
//! running it are told on `jetscribe.cancel.<job_id>`, the final event `cancelled` is published
//! and the job is handed to the stages that still want ended jobs (its webhook).

use proto_msgs::{JobRecord, JobStatus, JobStep, Stage};
use time::OffsetDateTime;
use tracing::warn;
use uuid::Uuid;

use crate::error_chain::ErrorChain;
use crate::{Pipeline, PipelineError};

/// What a cancellation found.
#[derive(Debug)]
pub enum Cancellation {
    /// The job was pending or running, and is cancelled now.
    Cancelled(JobRecord),
    /// An earlier cancellation did it (what follows a cancellation is done again: it may have
    /// been cut short).
    AlreadyCancelled(JobRecord),
    /// The job had already completed or failed: nothing changed.
    AlreadyEnded(JobRecord),
}

impl Pipeline {
    /// Cancels `job_id`; `JobStoreError::NotFound` (as a [`PipelineError`]) for an unknown job.
    pub async fn cancel_job(&self, job_id: Uuid) -> Result<Cancellation, PipelineError> {
        let now = OffsetDateTime::now_utc();
        let mut found = JobStatus::Pending;
        let record = self
            .jobs()
            .update(job_id, |record| {
                found = record.status;
                if !record.status.is_final() {
                    record.status = JobStatus::Cancelled;
                    record.step = JobStep::Cancelled;
                    record.completed_at = Some(now);
                    record.eta_s = None;
                }
            })
            .await?;
        if matches!(found, JobStatus::Completed | JobStatus::Failed) {
            return Ok(Cancellation::AlreadyEnded(record));
        }
        // Core NATS, not stored: a stage that misses it sees the record at its next heartbeat.
        let subject = proto_msgs::cancel_subject(job_id);
        if let Err(err) = self.client().publish(subject, Default::default()).await {
            warn!(%job_id, error = %ErrorChain(&err), "cannot tell the stages of a cancellation");
        }
        self.follow_up_cancellation(&record).await?;
        Ok(match found {
            JobStatus::Cancelled => Cancellation::AlreadyCancelled(record),
            _ => Cancellation::Cancelled(record),
        })
    }

    /// The final event `cancelled` and the hand-over to the stages that want ended jobs (the
    /// notifier, for the webhook), unless already done (message ids): after a cancellation,
    /// and again by the janitor in case it was cut short.
    pub async fn follow_up_cancellation(&self, record: &JobRecord) -> Result<(), PipelineError> {
        self.events().publish_end_if_missing(record).await?;
        for stage in Stage::ALL.into_iter().filter(|s| s.wanted_for(record)) {
            self.publish_encoded(&stage.input_for(record)?).await?;
        }
        Ok(())
    }
}
