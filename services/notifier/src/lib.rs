//! Notify stage: the last stage of every job. It marks a job that reached it without failing as
//! completed (progress 100, `completed` event), then delivers the webhook, if the job has one,
//! with the body of the original service: `{"job_id","status":"completed","completed_at","result"}`
//! or `{"job_id","status":"failed","completed_at","error_message"}`.
//!
//! Delivery: signed per Standard Webhooks when WEBHOOK_SECRET is set ([`signing`]); sent only to
//! public addresses unless WEBHOOK_ALLOW_PRIVATE ([`destination`]); each attempt recorded on the
//! job (`webhook` in `/status`). A failed attempt is retried after an exponential, jittered
//! delay (at least the receiver's Retry-After) up to WEBHOOK_MAX_RETRIES times. The retry is a
//! new JetStream message that the notifier hands back until it is due, never a task sleeping
//! in memory: a notifier that dies between two attempts loses nothing, another one (or the same
//! one, restarted) makes the next attempt. A retry message that runs out of deliveries (the
//! notifier failing on it again and again) marks the delivery failed, with the reason.

pub mod destination;
pub mod signing;

use std::time::Duration;

use jetscribe_blobstore::BlobStore;
use jetscribe_nats::{JobContext, Outcome, Stage, StageError};
use proto_msgs::{
    EventKind, JobRecord, JobResult, JobStatus, NotifyRequest, WebhookAttempt, WebhookDelivery,
    WebhookState,
};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

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

/// The longest Retry-After honoured: a receiver cannot park a delivery for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The longest delay between two attempts, however many retries are allowed.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The notify stage.
pub struct Notifier {
    blobs: BlobStore,
    http: reqwest::Client,
    settings: WebhookSettings,
}

impl Notifier {
    pub fn new(blobs: BlobStore, settings: WebhookSettings) -> Result<Self, reqwest::Error> {
        let mut http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("jetscribe/", env!("CARGO_PKG_VERSION")))
            // A redirect could lead anywhere, past the destination check; so could a proxy,
            // which resolves the name itself: webhooks go out directly.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !settings.allow_private {
            http = http.dns_resolver(destination::PublicOnlyResolver);
        }
        Ok(Self {
            blobs,
            http: http.build()?,
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

    /// One POST of the webhook.
    async fn attempt(&self, url: &str, webhook_id: &str, body: &[u8]) -> AttemptResult {
        if let Err(refused) = destination::check(url, self.settings.allow_private).await {
            let retry = matches!(refused, destination::DestinationError::Unresolvable { .. });
            return AttemptResult::failed(None, refused.to_string(), retry, None);
        }
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(secret) = &self.settings.secret {
            request = request.header(
                "webhook-signature",
                secret.sign(webhook_id, timestamp, body),
            );
        }
        match request.body(body.to_vec()).send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return AttemptResult {
                        status_code: Some(status.as_u16()),
                        error: None,
                        verdict: Verdict::Delivered,
                    };
                }
                let retry_after = retry_after(response.headers());
                let retry = status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                let error = if status.is_redirection() {
                    format!("HTTP {status}: redirects are not followed")
                } else {
                    format!("HTTP {status}")
                };
                AttemptResult::failed(Some(status.as_u16()), error, retry, retry_after)
            }
            // Timeouts and refused connections are worth another try.
            Err(err) => AttemptResult::failed(None, error_chain(&err), true, None),
        }
    }

    /// When attempt `made` (1-based) failed and may be retried: the delay before the next one.
    fn next_delay(&self, made: u32, retry_after: Option<Duration>) -> Duration {
        let doubled = self
            .settings
            .retry_delay
            .saturating_mul(2u32.saturating_pow(made.saturating_sub(1).min(20)))
            .min(MAX_BACKOFF);
        // Jitter: up to a quarter more, so that receivers that failed together are not retried
        // together.
        let jittered = doubled.mul_f64(1.0 + fastrand::f64() * 0.25);
        jittered.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
    }
}

/// What one attempt came to.
struct AttemptResult {
    status_code: Option<u16>,
    error: Option<String>,
    verdict: Verdict,
}

enum Verdict {
    Delivered,
    /// Worth another try, not before the receiver's Retry-After, if it gave one.
    Retry(Option<Duration>),
    /// The receiver refused it for good (a 4xx other than 408 and 429) or the URL is not allowed.
    Refused,
}

impl AttemptResult {
    fn failed(
        status_code: Option<u16>,
        error: String,
        retry: bool,
        retry_after: Option<Duration>,
    ) -> Self {
        Self {
            status_code,
            error: Some(error),
            verdict: if retry {
                Verdict::Retry(retry_after)
            } else {
                Verdict::Refused
            },
        }
    }
}

/// Retry-After as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// An error with its causes, on one line ("error sending request: connection refused").
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
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
        let delivery = record.webhook.clone().unwrap_or_default();
        if delivery.state != WebhookState::Pending {
            return Ok(Outcome::Done);
        }
        if input.attempt <= delivery.attempts {
            // This attempt was made and recorded, but the process stopped before it queued
            // the next one: queue it now, as recorded.
            return match delivery.next_attempt_at {
                Some(due) => Outcome::again(&NotifyRequest {
                    job_id: input.job_id,
                    attempt: delivery.attempts + 1,
                    not_before: Some(due),
                }),
                None => Ok(Outcome::Done),
            };
        }
        if let Some(due) = input.not_before {
            let wait = due - OffsetDateTime::now_utc();
            if wait.is_positive() {
                return Ok(Outcome::Later(wait.unsigned_abs()));
            }
        }

        // The same id on every attempt: receivers use it to drop a repeat.
        let webhook_id = WebhookDelivery::new(input.job_id).id;
        let body = serde_json::to_vec(&self.webhook_body(&record).await?)
            .map_err(|err| StageError::Permanent(format!("cannot encode the webhook: {err}")))?;
        let made = input.attempt;
        let result = self.attempt(&url, &webhook_id, &body).await;
        let now = OffsetDateTime::now_utc();
        let next = match result.verdict {
            Verdict::Retry(retry_after) if made <= self.settings.max_retries => {
                let delay = self.next_delay(made, retry_after);
                Some(now + delay)
            }
            _ => None,
        };
        let state = match (&result.verdict, next) {
            (Verdict::Delivered, _) => {
                info!(attempt = made, status = ?result.status_code, "webhook delivered");
                WebhookState::Delivered
            }
            (_, Some(at)) => {
                warn!(
                    attempt = made,
                    error = result.error.as_deref().unwrap_or_default(),
                    retry_in_s = (at - now).as_seconds_f64(),
                    "webhook attempt failed; retry scheduled"
                );
                WebhookState::Pending
            }
            (_, None) => {
                warn!(
                    attempt = made,
                    error = result.error.as_deref().unwrap_or_default(),
                    "webhook not delivered; giving up"
                );
                WebhookState::Failed
            }
        };
        job.jobs()
            .update(input.job_id, |record| {
                let webhook = record
                    .webhook
                    .get_or_insert_with(|| WebhookDelivery::new(input.job_id));
                if webhook.state != WebhookState::Pending {
                    // Settled meanwhile (two copies of one attempt): keep the first answer.
                    return;
                }
                webhook.attempts = webhook.attempts.max(made);
                webhook.state = state;
                webhook.last_status_code = result.status_code;
                webhook.last_error = result.error.clone();
                webhook.next_attempt_at = next;
                if state == WebhookState::Delivered {
                    webhook.delivered_at = Some(now);
                }
                webhook.history.push(WebhookAttempt {
                    at: now,
                    status_code: result.status_code,
                    error: result.error.clone(),
                });
            })
            .await
            .map_err(|err| StageError::transient("recording the webhook attempt", err))?;
        match next {
            Some(due) => Outcome::again(&NotifyRequest {
                job_id: input.job_id,
                attempt: made + 1,
                not_before: Some(due),
            }),
            None => Ok(Outcome::Done),
        }
    }
}
