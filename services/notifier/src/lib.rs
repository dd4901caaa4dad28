//! Notify stage: the last stage of every job. It marks a job that reached it without failing as
//! completed (progress 100, `completed` event), then delivers the webhook, if the job has one,
//! with the body `/result` answers with ([`proto_msgs::EndedJobBody`]).
//!
//! Delivery ([`delivery`]): signed per Standard Webhooks when WEBHOOK_SECRET is set
//! ([`signing`]); sent only to public addresses unless WEBHOOK_ALLOW_PRIVATE
//! (`jetscribe-webhook-policy`); each attempt recorded on the job (`webhook` in `/status`). A
//! failed attempt is retried after an exponential, jittered delay (at least the receiver's
//! Retry-After) up to WEBHOOK_MAX_RETRIES times ([`schedule`]). The retry is a new JetStream
//! message that the notifier hands back until it is due, never a task sleeping in memory: a
//! notifier that dies between two attempts loses nothing, another one (or the same one,
//! restarted) makes the next attempt. A retry message that runs out of deliveries (the notifier
//! failing on it again and again) marks the delivery failed, with the reason.

pub mod delivery;
pub mod schedule;
pub mod signing;

use std::time::Duration;

use jetscribe_blobstore::BlobStore;
use jetscribe_nats::{JobContext, Outcome, StageError, StageHandler};
use proto_msgs::{
    EndedJobBody, JobRecord, JobResult, JobStatus, JobStep, NotifyRequest, WebhookDelivery,
};
use time::OffsetDateTime;
use tracing::{info, warn};

use delivery::{AttemptResult, WebhookClient};
use schedule::{BeforeAttempt, RetryPolicy, Schedule, before_attempt, record_attempt};
pub use signing::WebhookSecret;

/// Webhook delivery settings (WEBHOOK_TIMEOUT, WEBHOOK_MAX_RETRIES, WEBHOOK_RETRY_DELAY,
/// WEBHOOK_SECRET, WEBHOOK_ALLOW_PRIVATE).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub timeout: Duration,
    pub max_retries: u32,
    /// Delay before the first retry; it doubles with each further retry.
    pub retry_delay: Duration,
    /// Signs every webhook when set.
    pub secret: Option<WebhookSecret>,
    /// Allows webhooks to loopback, private and link-local addresses.
    pub allow_private: bool,
}

/// The notify stage.
pub struct Notifier {
    blobs: BlobStore,
    client: WebhookClient,
    retries: RetryPolicy,
}

impl Notifier {
    pub fn new(blobs: BlobStore, settings: WebhookSettings) -> Result<Self, reqwest::Error> {
        Ok(Self {
            blobs,
            client: WebhookClient::new(settings.timeout, settings.secret, settings.allow_private)?,
            retries: RetryPolicy {
                max_retries: settings.max_retries,
                first_delay: settings.retry_delay,
            },
        })
    }
}

impl StageHandler for Notifier {
    type Input = NotifyRequest;

    async fn handle(&self, input: NotifyRequest, job: &JobContext) -> Result<Outcome, StageError> {
        let record = complete(job).await?;
        let Some(url) = record.webhook_url.clone() else {
            return Ok(Outcome::Done);
        };
        match before_attempt(record.webhook.as_ref(), &input, OffsetDateTime::now_utc()) {
            BeforeAttempt::Nothing => return Ok(Outcome::Done),
            BeforeAttempt::QueueRecorded(next) => return Outcome::reschedule(&next),
            BeforeAttempt::TooEarly(wait) => return Ok(Outcome::TooEarly(wait)),
            BeforeAttempt::Attempt => {}
        }
        // The same id on every attempt: receivers use it to drop a repeat.
        let webhook_id = WebhookDelivery::new(input.job_id).id;
        let body = serde_json::to_vec(&self.webhook_body(&record).await?)
            .map_err(|err| StageError::Permanent(format!("cannot encode the webhook: {err}")))?;
        let made = input.attempt;
        let result = self.client.attempt(&url, &webhook_id, &body).await;
        let next = schedule::schedule(result.verdict, made, self.retries, fastrand::f64());
        log_attempt(made, &result, next);
        let now = OffsetDateTime::now_utc();
        job.update("recording the webhook attempt", |record| {
            let webhook = record
                .webhook
                .get_or_insert_with(|| WebhookDelivery::new(input.job_id));
            record_attempt(webhook, made, &result, next, now);
        })
        .await?;
        match next {
            Schedule::RetryAfter(delay) => Outcome::reschedule(&NotifyRequest {
                job_id: input.job_id,
                attempt: made + 1,
                not_before: Some(now + delay),
            }),
            Schedule::Delivered | Schedule::GiveUp => Ok(Outcome::Done),
        }
    }

    /// The notifier's message is out of deliveries: the webhook will not be sent.
    fn on_give_up(record: &mut JobRecord, reason: &str) {
        if record.webhook_url.is_some() {
            let job_id = record.job_id;
            let webhook = record
                .webhook
                .get_or_insert_with(|| WebhookDelivery::new(job_id));
            schedule::give_up(webhook, reason);
        }
    }
}

/// Marks a job that has not ended as completed; publishes its final event unless stored (also
/// for a job completed or failed by an earlier delivery that could not publish it); returns the
/// record.
async fn complete(job: &JobContext) -> Result<JobRecord, StageError> {
    let mut record = job.record().await?;
    if !record.status.is_final() {
        let now = OffsetDateTime::now_utc();
        record = job
            .update("completing the job", |record| {
                if !record.status.is_final() {
                    record.status = JobStatus::Completed;
                    record.step = JobStep::Completed;
                    record.raise_progress(100);
                    record.completed_at = Some(now);
                }
            })
            .await?;
        info!(status = ?record.status, "job ended");
    }
    job.events()
        .publish_end_if_missing(&record)
        .await
        .map_err(|err| StageError::transient("publishing the job's final event", err))?;
    Ok(record)
}

impl Notifier {
    /// The webhook body for a job that has ended.
    async fn webhook_body(&self, record: &JobRecord) -> Result<EndedJobBody, StageError> {
        match record.status {
            JobStatus::Failed => return Ok(EndedJobBody::failed(record)),
            JobStatus::Cancelled => return Ok(EndedJobBody::cancelled(record)),
            _ => {}
        }
        let result_blob =
            record.blobs.result.as_deref().ok_or_else(|| {
                StageError::Permanent("the job has no result to notify".to_owned())
            })?;
        let result: JobResult = self
            .blobs
            .get_json(result_blob)
            .await
            .map_err(|err| StageError::transient("reading the result", err))?;
        Ok(EndedJobBody::completed(record, result))
    }
}

/// Logs an attempt and counts it in `jetscribe_webhook_attempts_total` by outcome.
fn log_attempt(made: u32, result: &AttemptResult, next: Schedule) {
    let outcome = match next {
        Schedule::Delivered => "delivered",
        Schedule::RetryAfter(_) => "retry",
        Schedule::GiveUp => "failed",
    };
    let label = jetscribe_metrics::OutcomeLabel {
        outcome: outcome.to_owned(),
    };
    let attempts = &jetscribe_metrics::metrics().webhook_attempts;
    attempts.get_or_create(&label).inc();
    let error = result.error.as_deref().unwrap_or_default();
    match next {
        Schedule::Delivered => {
            info!(attempt = made, status = ?result.status_code, "webhook delivered");
        }
        Schedule::RetryAfter(delay) => warn!(
            attempt = made,
            error,
            retry_in_s = delay.as_secs_f64(),
            "webhook attempt failed; retry scheduled"
        ),
        Schedule::GiveUp => warn!(attempt = made, error, "webhook not delivered; giving up"),
    }
}
