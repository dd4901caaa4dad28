//! The job record and events around one message of a stage: the stage started, ended and
//! handed the job on, is retried, or failed the job. Each method answers how the loop settles
//! the message; anything that could not be stored is retried by a nak.

use std::time::Duration;

use proto_msgs::{DeadLetter, EncodedMessage, EventKind, JobRecord, JobStatus, JobStep, Stage};
use time::OffsetDateTime;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::error_chain::ErrorChain;
use crate::stage::settle::{Decision, Settle, after_failure, retry_delay};
use crate::{JobStoreError, Pipeline, PipelineError};

/// Delay before retrying a failure that could not be recorded.
const RECORD_RETRY: Duration = Duration::from_secs(2);

/// One job as seen by one stage's message.
pub(crate) struct JobLifecycle<'a> {
    pub pipeline: &'a Pipeline,
    pub job_id: Uuid,
    pub stage: Stage,
    /// The stage's [`crate::StageHandler::on_give_up`].
    pub on_give_up: fn(&mut JobRecord, &str),
    /// The message as delivered: its subject and payload, kept in a dead letter.
    pub message: (&'a str, &'a [u8]),
}

impl JobLifecycle<'_> {
    /// Marks the job as being in this stage, begins a try ([`proto_msgs::StageRun::begin_try`])
    /// and publishes `stage_started`. `None`: the job is gone (expired or never created).
    pub async fn start(&self) -> Result<Option<JobRecord>, PipelineError> {
        let (stage, now) = (self.stage, OffsetDateTime::now_utc());
        let updated = self
            .pipeline
            .jobs()
            .update(self.job_id, |record| {
                if !stage.wanted_for(record) {
                    // A late message of a job that has ended: dropped, its record left as is.
                    return;
                }
                let progress = record.progress;
                let run = record.stage_run(stage);
                run.begin_try(stage, progress, now);
                run.worker = Some(worker_name().to_owned());
                if !record.status.is_final() {
                    record.status = JobStatus::Processing;
                    record.step = stage.step();
                    record.raise_progress(stage.overall_progress(0.0));
                }
            })
            .await;
        let record = match updated {
            Ok(record) => record,
            Err(JobStoreError::NotFound(_)) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        if !record.status.is_final() {
            self.publish(&record, EventKind::StageStarted).await?;
        }
        Ok(Some(record))
    }

    /// Carries out what [`crate::stage::settle::decide`] decided for delivery `attempt`.
    pub async fn carry_out(&self, decision: Decision, attempt: u32) -> Settle {
        match decision {
            Decision::Forward => self.forward(attempt).await,
            Decision::Finish => self.finish().await,
            Decision::Enqueue(message) => self.enqueue(&message, attempt).await,
            Decision::Redeliver(delay) => self.hand_back(Some(delay)).await,
            Decision::Retry { reason, delay } => self.record_retry(reason, delay, false).await,
            Decision::Wait { reason, delay } => self.record_retry(reason, delay, true).await,
            Decision::Fail(reason) => {
                warn!(reason = %reason, "job failed");
                self.fail(reason, true).await
            }
            Decision::GiveUp { reason, try_failed } => self.give_up(reason, try_failed).await,
        }
    }

    /// Hands the message back unhandled (the process is shutting down, or the message is not
    /// due yet): the try is taken off the job's record, so that it never counts as a failure.
    pub async fn hand_back(&self, delay: Option<Duration>) -> Settle {
        let stage = self.stage;
        let recorded = self
            .pipeline
            .jobs()
            .update(self.job_id, |record| {
                if let Some(run) = record.stages.get_mut(&stage) {
                    run.hand_back();
                }
            })
            .await;
        if let Err(err) = recorded {
            warn!(error = %ErrorChain(&err), "cannot record the hand-back");
        }
        Settle::Nak(delay)
    }

    /// The stage gives up on the message (it failed on every try): it is kept as a dead letter
    /// with `reason`, and the job fails with it. `try_failed`: the try that just ran failed
    /// (not yet counted on the record).
    pub async fn give_up(&self, reason: String, try_failed: bool) -> Settle {
        error!(reason = %reason, "job failed; message dead-lettered");
        let record = match self.pipeline.jobs().get(self.job_id).await {
            Ok(record) => record,
            Err(err) => return self.retry_later("cannot read the job", &err.into(), 1),
        };
        let run = record
            .as_ref()
            .and_then(|record| record.stages.get(&self.stage).cloned())
            .unwrap_or_default();
        let (subject, payload) = self.message;
        let letter = DeadLetter {
            job_id: self.job_id,
            stage: self.stage,
            reason: reason.clone(),
            attempts: run.attempts,
            failures: run.failures + run.crashes + u32::from(try_failed),
            at: OffsetDateTime::now_utc(),
            subject: subject.to_owned(),
            payload: payload.to_vec(),
        };
        if let Err(err) = self.pipeline.publish_dead_letter(&letter).await {
            return self.retry_later("cannot store the dead letter", &err, 1);
        }
        self.fail(reason, try_failed).await
    }

    /// Records the end of this stage, publishes `stage_completed` and queues the next stage's
    /// message, built from the record.
    async fn forward(&self, attempt: u32) -> Settle {
        let (stage, now) = (self.stage, OffsetDateTime::now_utc());
        let finished = self
            .pipeline
            .jobs()
            .update(self.job_id, |record| {
                let run = record.stage_run(stage);
                run.finished_at = Some(now);
                run.end_try();
                record.raise_progress(stage.overall_progress(1.0));
                record.eta_s = None;
            })
            .await
            .map_err(PipelineError::from);
        let record = match finished {
            Ok(record) => record,
            Err(err) => return self.retry_later("cannot record the stage's end", &err, attempt),
        };
        if !stage.wanted_for(&record) {
            info!(status = ?record.status, "the job ended meanwhile; not handed on");
            return Settle::Ack;
        }
        if let Err(err) = self.publish(&record, EventKind::StageCompleted).await {
            return self.retry_later("cannot publish stage_completed", &err, attempt);
        }
        let Some(next) = stage.next() else {
            return Settle::Ack;
        };
        match next.input_for(&record) {
            Ok(message) => self.enqueue(&message, attempt).await,
            Err(err) => {
                self.fail(format!("{stage} cannot hand the job on: {err}"), true)
                    .await
            }
        }
    }

    /// Records the end of this stage without an event: the stage published the job's end, and
    /// `stage_completed` after it would make `completed` not the last event of the job.
    async fn finish(&self) -> Settle {
        let (stage, now) = (self.stage, OffsetDateTime::now_utc());
        let finished = self
            .pipeline
            .jobs()
            .update(self.job_id, |record| {
                let run = record.stage_run(stage);
                run.finished_at = Some(now);
                run.end_try();
            })
            .await;
        if let Err(err) = finished {
            warn!(error = %ErrorChain(&err), "cannot record the stage's end");
        }
        Settle::Ack
    }

    /// Stores `message`; the handled message is acked once it is stored, retried otherwise.
    async fn enqueue(&self, message: &EncodedMessage, attempt: u32) -> Settle {
        match self.pipeline.publish_encoded(message).await {
            Ok(()) => {
                debug!(stage = %message.stage, message_id = %message.message_id, "queued");
                if message.stage == self.stage {
                    // A rescheduled message: this try has ended.
                    self.end_try().await;
                }
                Settle::Ack
            }
            Err(err) => self.retry_later("cannot queue the next message", &err, attempt),
        }
    }

    /// Records the end of this try on the stage's run.
    pub async fn end_try(&self) {
        let stage = self.stage;
        let recorded = self
            .pipeline
            .jobs()
            .update(self.job_id, |record| record.stage_run(stage).end_try())
            .await;
        if let Err(err) = recorded {
            warn!(error = %ErrorChain(&err), "cannot record the end of the try");
        }
    }

    /// Records the try that failed with `reason` on this stage's run, as a failed try or (when
    /// a service the stage needs was down) as an `outage`, and hands the message back for
    /// another try.
    async fn record_retry(&self, reason: String, delay: Duration, outage: bool) -> Settle {
        warn!(reason = %reason, retry_in_s = delay.as_secs(), outage, "stage failed; will retry");
        let stage = self.stage;
        let recorded = self
            .pipeline
            .jobs()
            .update(self.job_id, |record| {
                let run = record.stage_run(stage);
                run.last_error = Some(reason.clone());
                if outage {
                    run.outages += 1;
                } else {
                    run.failures += 1;
                }
                run.end_try();
            })
            .await;
        if let Err(err) = recorded {
            warn!(error = %ErrorChain(&err), "cannot record the stage's error");
        }
        Settle::Nak(Some(delay))
    }

    /// Fails the job with `reason`, publishes `failed`, and hands it to the stages that still
    /// want failed jobs (the notifier, so that its webhook reports the failure). Retried (nak)
    /// if any of that cannot be stored; reported again by a retry, the event and the hand-over
    /// are dropped by the server as duplicates (Nats-Msg-Id). `try_failed`: the try that just
    /// ran is counted as failed.
    pub async fn fail(&self, reason: String, try_failed: bool) -> Settle {
        let (stage, on_give_up, now) = (self.stage, self.on_give_up, OffsetDateTime::now_utc());
        // Whether this call is the one that failed the job.
        let mut failed_now = false;
        let updated = self
            .pipeline
            .jobs()
            .update(self.job_id, |record| {
                let run = record.stage_run(stage);
                run.last_error = Some(reason.clone());
                run.finished_at = Some(now);
                run.end_try();
                run.failures += u32::from(try_failed);
                failed_now = !record.status.is_final();
                if failed_now {
                    record.status = JobStatus::Failed;
                    record.step = JobStep::Failed;
                    record.error_message = Some(reason.clone());
                    record.completed_at.get_or_insert(now);
                }
                on_give_up(record, &reason);
            })
            .await;
        let record = match updated {
            Ok(record) => record,
            Err(JobStoreError::NotFound(_)) => return Settle::Term,
            Err(err) => return self.retry_later("cannot record the failure", &err.into(), 1),
        };
        let follow_up = after_failure(&record, stage, failed_now);
        if follow_up.publish_failed
            && let Err(err) = self.publish(&record, EventKind::Failed).await
        {
            return self.retry_later("cannot publish the failed event", &err, 1);
        }
        for next in follow_up.hand_over_to {
            let handed_over = match next.input_for(&record) {
                Ok(message) => self.pipeline.publish_encoded(&message).await,
                Err(err) => Err(err.into()),
            };
            if let Err(err) = handed_over {
                return self.retry_later("cannot hand the failed job over", &err, 1);
            }
            info!(to = %next, "failed job handed over");
        }
        // On a work queue a terminated message is removed: it will not be delivered again.
        Settle::Term
    }

    async fn publish(&self, record: &JobRecord, kind: EventKind) -> Result<(), PipelineError> {
        self.pipeline
            .events()
            .publish_for(record, kind, Some(self.stage))
            .await
    }

    /// Logs why the message goes back, and hands it back after the retry delay of `attempt`.
    fn retry_later(&self, what: &str, err: &PipelineError, attempt: u32) -> Settle {
        warn!(error = %ErrorChain(err), "{what}; retrying");
        Settle::Nak(Some(retry_delay(attempt).max(RECORD_RETRY)))
    }
}

/// This process as a job record names it: `<host>/<pid>`. The host is HOSTNAME (a pod's name in
/// Kubernetes, a container's id in compose), else the kernel's host name.
fn worker_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|host| host.trim().to_owned())
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}/{}", std::process::id())
    })
}
