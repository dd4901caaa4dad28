//! [`JobContext`]: what a handler may do to its job besides its own work.

use proto_msgs::{EventKind, JobRecord, Stage};
use tracing::warn;
use uuid::Uuid;

use crate::error_chain::ErrorChain;
use crate::stage::StageError;
use crate::{EventPublisher, JobStore};

/// The job a handler works on: read its record, record what the stage produced, report progress.
pub struct JobContext {
    job_id: Uuid,
    stage: Stage,
    attempt: u32,
    jobs: JobStore,
    events: EventPublisher,
}

impl JobContext {
    pub(crate) fn new(
        job_id: Uuid,
        stage: Stage,
        attempt: u32,
        jobs: JobStore,
        events: EventPublisher,
    ) -> Self {
        Self {
            job_id,
            stage,
            attempt,
            jobs,
            events,
        }
    }

    pub fn job_id(&self) -> Uuid {
        self.job_id
    }

    /// 1 on the first delivery of this stage's message.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub fn events(&self) -> &EventPublisher {
        &self.events
    }

    /// The job record as it is now.
    pub async fn record(&self) -> Result<JobRecord, StageError> {
        self.jobs
            .get(self.job_id)
            .await
            .map_err(|err| StageError::transient("reading the job record", err))?
            .ok_or_else(|| StageError::Permanent(format!("job {} no longer exists", self.job_id)))
    }

    /// Applies `change` to the job record by compare-and-set (so `change` may run more than
    /// once and must depend only on the record it is given); returns the record as written.
    /// `doing` names the update in the error: `recording the audio blob`.
    pub async fn update(
        &self,
        doing: &'static str,
        change: impl FnMut(&mut JobRecord),
    ) -> Result<JobRecord, StageError> {
        self.jobs
            .update(self.job_id, change)
            .await
            .map_err(|err| StageError::transient(doing, err))
    }

    /// Reports that `fraction` (0..=1) of this stage's work is done: raises the job's progress
    /// (never lowers it) and publishes a `progress` event. Callers rate-limit; a failure here is
    /// logged, not fatal: progress is informative.
    pub async fn progress(&self, fraction: f64) {
        self.progress_with_eta(fraction, None).await;
    }

    /// [`progress`](Self::progress) with an estimate of the seconds left in this stage.
    pub async fn progress_with_eta(&self, fraction: f64, eta_s: Option<f64>) {
        let overall = self.stage.overall_progress(fraction);
        let eta_s = eta_s
            .filter(|eta| eta.is_finite())
            .map(|eta| eta.max(0.0).round());
        let updated = self
            .jobs
            .update(self.job_id, |record| {
                if !record.status.is_final() {
                    record.raise_progress(overall);
                    record.eta_s = eta_s;
                }
            })
            .await;
        let record = match updated {
            Ok(record) => record,
            Err(err) => return warn!(error = %ErrorChain(&err), "progress not recorded"),
        };
        if record.status.is_final() {
            // Cancelled meanwhile: no event after the job's last one.
            return;
        }
        let published = self
            .events
            .publish_for(&record, EventKind::Progress, Some(self.stage))
            .await;
        if let Err(err) = published {
            warn!(error = %ErrorChain(&err), "progress event not published");
        }
    }
}
