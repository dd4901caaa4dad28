//! Notify stage: the last stage of every job. It marks a job that reached it without failing as
//! completed (progress 100, `completed` event), then POSTs the webhook, if the job has one, with
//! the body of the original service: `{"job_id","status":"completed","completed_at","result"}` or
//! `{"job_id","status":"failed","completed_at","error_message"}`.

use std::time::Duration;

use jetscribe_blobstore::BlobStore;
use jetscribe_nats::{JobContext, Outcome, Stage, StageError};
use proto_msgs::{EventKind, JobRecord, JobResult, JobStatus, NotifyRequest};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

/// Webhook delivery settings (WEBHOOK_TIMEOUT, WEBHOOK_MAX_RETRIES, WEBHOOK_RETRY_DELAY).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub timeout: Duration,
    pub max_retries: u32,
    pub retry_delay: Duration,
}

/// The notify stage.
pub struct Notifier {
    blobs: BlobStore,
    http: reqwest::Client,
    settings: WebhookSettings,
}

impl Notifier {
    pub fn new(blobs: BlobStore, settings: WebhookSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("jetscribe/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            blobs,
            http,
            settings,
        })
    }

    /// The webhook body for a job that has ended.
    async fn webhook_body(&self, record: &JobRecord) -> Result<serde_json::Value, StageError> {
        let completed_at = record.completed_at.and_then(|at| at.format(&Rfc3339).ok());
        if record.status == JobStatus::Failed {
            return Ok(json!({
                "job_id": record.job_id,
                "status": "failed",
                "completed_at": completed_at,
                "error_message": record.error_message,
            }));
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
        Ok(json!({
            "job_id": record.job_id,
            "status": "completed",
            "completed_at": completed_at,
            "result": result,
        }))
    }

    /// POSTs `body` to `url`: the first try plus up to `max_retries` retries, `retry_delay`
    /// apart. Returns the last failure if none succeeded.
    async fn deliver(&self, url: &str, body: &serde_json::Value) -> Result<u16, String> {
        let mut last_error = String::new();
        for attempt in 0..=self.settings.max_retries {
            if attempt > 0 {
                tokio::time::sleep(self.settings.retry_delay).await;
            }
            match self.http.post(url).json(body).send().await {
                Ok(response) if response.status().is_success() => {
                    return Ok(response.status().as_u16());
                }
                Ok(response) => last_error = format!("HTTP {}", response.status()),
                Err(err) => last_error = err.to_string(),
            }
            warn!(attempt = attempt + 1, error = %last_error, "webhook delivery failed");
        }
        Err(last_error)
    }
}

impl Stage for Notifier {
    type Input = NotifyRequest;

    async fn handle(&self, input: NotifyRequest, job: &JobContext) -> Result<Outcome, StageError> {
        let mut record = job.record().await?;
        if !record.status.is_final() {
            let now = OffsetDateTime::now_utc();
            record = job
                .jobs()
                .update(input.job_id, |record| {
                    if !record.status.is_final() {
                        record.status = JobStatus::Completed;
                        record.step = "completed".to_owned();
                        record.raise_progress(100);
                        record.completed_at = Some(now);
                    }
                })
                .await
                .map_err(|err| StageError::transient("completing the job", err))?;
            if record.status == JobStatus::Completed {
                job.events()
                    .publish_for(&record, EventKind::Completed, None)
                    .await
                    .map_err(|err| StageError::transient("publishing the completed event", err))?;
                info!("job completed");
            }
        }
        let Some(url) = record.webhook_url.clone() else {
            return Ok(Outcome::Done);
        };
        let body = self.webhook_body(&record).await?;
        match self.deliver(&url, &body).await {
            Ok(status) => info!(status, "webhook delivered"),
            // The job itself is done; a receiver that is down does not undo it.
            Err(reason) => warn!(reason = %reason, "webhook not delivered; giving up"),
        }
        Ok(Outcome::Done)
    }
}
