//! The stage loop. A stage only says what to do with one message ([`Stage::handle`] returns an
//! [`Outcome`] or a [`StageError`]); this loop alone pulls, acks, naks, terminates, sends
//! in-progress acks, bounds concurrency, updates the job record around the handler and stops on
//! shutdown.
//!
//! Guarantees:
//! - a message is acked only after the stage's output is stored by JetStream;
//! - one message is pulled per free slot, so nothing waits in a client buffer past its ack
//!   deadline while another job runs;
//! - a permanent failure, or a transient one on the last allowed delivery, fails the job with the
//!   reason (and still sends it to the notifier so that its webhook reports the failure): no job
//!   stays `processing` forever.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use proto_msgs::{
    EventKind, JobStatus, NotifyRequest, PipelineMessage, Stage as StageName, WebhookState,
};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

use crate::{EventPublisher, JobStore, Pipeline, PipelineError, trace_context};

/// What a stage did with a message.
#[derive(Debug)]
pub enum Outcome {
    /// The stage is done: hand the job to the next stage with this message, then ack.
    Forward(QueuedMessage),
    /// The job needs nothing more from the pipeline; ack.
    Done,
    /// The stage is not done and must see the job again: store this new message of the same
    /// stage (which says when it is due), then ack the one handled. Each such message starts with
    /// a fresh delivery count, so a stage may wait any number of times (webhook retries).
    Again(QueuedMessage),
    /// The message came before it was due: deliver it again after this delay.
    Later(Duration),
}

/// A message for a stage's subject, encoded, with its `Nats-Msg-Id`.
#[derive(Debug)]
pub struct QueuedMessage {
    stage: StageName,
    message_id: String,
    payload: Vec<u8>,
}

impl QueuedMessage {
    fn of<M: PipelineMessage>(message: &M) -> Result<Self, StageError> {
        Ok(Self {
            stage: M::STAGE,
            message_id: message.message_id(),
            payload: proto_msgs::encode(message)
                .map_err(|err| StageError::Transient(err.to_string()))?,
        })
    }
}

impl Outcome {
    pub fn forward<M: PipelineMessage>(message: &M) -> Result<Self, StageError> {
        Ok(Outcome::Forward(QueuedMessage::of(message)?))
    }

    pub fn again<M: PipelineMessage>(message: &M) -> Result<Self, StageError> {
        Ok(Outcome::Again(QueuedMessage::of(message)?))
    }
}

/// Why a stage could not handle a message.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The job cannot succeed (bad input): fail it with this message, which users read.
    #[error("{0}")]
    Permanent(String),
    /// Something outside the job went wrong (store, network): try again later.
    #[error("{0}")]
    Transient(String),
}

impl StageError {
    pub fn transient(context: &str, err: impl std::fmt::Display) -> Self {
        StageError::Transient(format!("{context}: {err}"))
    }
}

/// One stage of the pipeline.
pub trait Stage: Send + Sync + 'static {
    type Input: PipelineMessage;

    fn handle(
        &self,
        input: Self::Input,
        job: &JobContext,
    ) -> impl Future<Output = Result<Outcome, StageError>> + Send;
}

/// What a handler may do to its job besides its own work: read the record, report progress.
pub struct JobContext {
    job_id: Uuid,
    stage: StageName,
    attempt: u32,
    jobs: JobStore,
    events: EventPublisher,
}

impl JobContext {
    pub fn job_id(&self) -> Uuid {
        self.job_id
    }

    /// 1 on the first delivery of this stage's message.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub fn jobs(&self) -> &JobStore {
        &self.jobs
    }

    pub fn events(&self) -> &EventPublisher {
        &self.events
    }

    /// The job record as it is now.
    pub async fn record(&self) -> Result<proto_msgs::JobRecord, StageError> {
        self.jobs
            .get(self.job_id)
            .await
            .map_err(|err| StageError::transient("reading the job record", &err))?
            .ok_or_else(|| StageError::Permanent(format!("job {} no longer exists", self.job_id)))
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
        match self
            .jobs
            .update(self.job_id, |record| {
                record.raise_progress(overall);
                record.eta_s = eta_s;
            })
            .await
        {
            Ok(record) => {
                if let Err(err) = self
                    .events
                    .publish_for(&record, EventKind::Progress, Some(self.stage))
                    .await
                {
                    warn!(error = %err, "progress event not published");
                }
            }
            Err(err) => warn!(error = %err, "progress not recorded"),
        }
    }
}

/// How the loop runs one stage.
#[derive(Debug, Clone)]
pub struct StageLoopSettings {
    /// Messages handled at once by this process (MAX_CONCURRENT_JOBS).
    pub concurrency: usize,
    /// How long one pull request waits on the server for a message.
    pub pull_expiry: Duration,
    /// How long in-flight handlers get to finish after shutdown before they are abandoned (their
    /// messages are nak'd so another process takes them at once).
    pub drain_timeout: Duration,
}

impl Default for StageLoopSettings {
    fn default() -> Self {
        Self {
            concurrency: 2,
            pull_expiry: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(3),
        }
    }
}

/// Runs `stage` until `shutdown` is cancelled.
pub async fn run_stage<S: Stage>(
    pipeline: Pipeline,
    stage: Arc<S>,
    settings: StageLoopSettings,
    shutdown: CancellationToken,
) -> Result<(), PipelineError> {
    let name = S::Input::STAGE;
    let consumer = pipeline.consumer(name).await?;
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    let watcher = tokio::spawn(watch_max_deliveries(
        pipeline.clone(),
        name,
        shutdown.clone(),
    ));
    info!(stage = %name, concurrency = settings.concurrency, "stage started");

    loop {
        // Reap finished handlers so the set does not grow.
        while in_flight.try_join_next().is_some() {}

        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let pulled = tokio::select! {
            _ = shutdown.cancelled() => break,
            pulled = pull_one(&consumer, settings.pull_expiry) => pulled,
        };
        let message = match pulled {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(err) => {
                // The client reconnects by itself; wait a little instead of spinning.
                warn!(stage = %name, error = %err, "pull failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let pipeline = pipeline.clone();
        let stage = stage.clone();
        let shutdown = shutdown.clone();
        in_flight.spawn(async move {
            process_message(&pipeline, stage.as_ref(), message, &shutdown).await;
            drop(permit);
        });
    }

    info!(stage = %name, in_flight = in_flight.len(), "stage stopping");
    let drained = tokio::time::timeout(settings.drain_timeout, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        in_flight.abort_all();
    }
    watcher.abort();
    Ok(())
}

/// The server's advisory when a message of `stage` has been delivered `max_deliver` times
/// without an ack: the process handling it died or hung on its last try, so no handler will
/// ever fail the job. One process of the stage (a queue group) fails it here, with the last
/// error recorded for the stage, and removes the message.
async fn watch_max_deliveries(pipeline: Pipeline, stage: StageName, shutdown: CancellationToken) {
    #[derive(serde::Deserialize)]
    struct Advisory {
        stream_seq: u64,
        deliveries: u64,
    }
    #[derive(serde::Deserialize)]
    struct JobRef {
        job_id: Uuid,
    }

    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
        proto_msgs::PIPELINE_STREAM,
        stage.consumer_name()
    );
    let mut advisories = match pipeline
        .client()
        .queue_subscribe(subject, stage.consumer_name())
        .await
    {
        Ok(subscriber) => subscriber,
        Err(err) => {
            error!(stage = %stage, error = %err, "cannot watch max-delivery advisories");
            return;
        }
    };
    loop {
        let advisory = tokio::select! {
            _ = shutdown.cancelled() => return,
            advisory = advisories.next() => match advisory {
                Some(advisory) => advisory,
                None => return,
            },
        };
        let Ok(advisory) = serde_json::from_slice::<Advisory>(&advisory.payload) else {
            warn!(stage = %stage, "unreadable max-delivery advisory");
            continue;
        };
        let stream = match pipeline
            .jetstream()
            .get_stream(proto_msgs::PIPELINE_STREAM)
            .await
        {
            Ok(stream) => stream,
            Err(err) => {
                warn!(stage = %stage, error = %err, "cannot read the stream for an advisory");
                continue;
            }
        };
        let Ok(message) = stream.get_raw_message(advisory.stream_seq).await else {
            // Already removed (acked or terminated meanwhile).
            continue;
        };
        let Ok(job) = proto_msgs::decode::<JobRef>(&message.payload) else {
            let _ = stream.delete_message(advisory.stream_seq).await;
            continue;
        };
        let last_error = pipeline
            .jobs()
            .get(job.job_id)
            .await
            .ok()
            .flatten()
            .and_then(|record| {
                record
                    .stages
                    .get(stage.name())
                    .and_then(|run| run.last_error.clone())
            })
            .unwrap_or_else(|| "the stage stopped responding".to_owned());
        let reason = format!(
            "{stage} failed after {} attempts: {last_error}",
            advisory.deliveries
        );
        error!(stage = %stage, job_id = %job.job_id, reason = %reason, "job failed: out of deliveries");
        if matches!(
            fail_job(&pipeline, job.job_id, stage, reason).await,
            Settle::Term
        ) {
            let _ = stream.delete_message(advisory.stream_seq).await;
        }
    }
}

async fn pull_one(
    consumer: &async_nats::jetstream::consumer::PullConsumer,
    expiry: Duration,
) -> Result<Option<Message>, PipelineError> {
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(expiry)
        .messages()
        .await
        .map_err(|err| PipelineError::Request(err.to_string()))?;
    match batch.next().await {
        Some(Ok(message)) => Ok(Some(message)),
        Some(Err(err)) => Err(PipelineError::Request(err.to_string())),
        None => Ok(None),
    }
}

/// Delay before the next delivery after a transient failure: 2, 4, 8 … s, at most a minute.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempt.min(6)).min(60))
}

async fn process_message<S: Stage>(
    pipeline: &Pipeline,
    stage: &S,
    message: Message,
    shutdown: &CancellationToken,
) {
    let name = S::Input::STAGE;
    let attempt = message
        .info()
        .map(|info| info.delivered.max(1) as u32)
        .unwrap_or(1);
    let input: S::Input = match proto_msgs::decode(&message.payload) {
        Ok(input) => input,
        Err(err) => {
            // Nobody can ever handle it, and it names no job we could fail.
            error!(stage = %name, error = %err, "undecodable message dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let job_id = input.job_id();
    let span = info_span!("stage", stage = %name, job_id = %job_id, attempt);
    trace_context::set_parent_from(&span, message.headers.as_ref());

    async {
        let settle =
            handle_with_heartbeat(pipeline, stage, input, attempt, &message, shutdown).await;
        match settle {
            Settle::Ack => {
                if let Err(err) = message.double_ack().await {
                    // The work is stored downstream; a redelivery is deduplicated by Nats-Msg-Id.
                    warn!(error = %err, "ack not confirmed");
                }
            }
            Settle::Nak(delay) => {
                let _ = message.ack_with(AckKind::Nak(delay)).await;
            }
            Settle::Term => {
                let _ = message.ack_with(AckKind::Term).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// How the loop settles a message with the server.
enum Settle {
    Ack,
    Nak(Option<Duration>),
    Term,
}

async fn handle_with_heartbeat<S: Stage>(
    pipeline: &Pipeline,
    stage: &S,
    input: S::Input,
    attempt: u32,
    message: &Message,
    shutdown: &CancellationToken,
) -> Settle {
    let name = S::Input::STAGE;
    let job_id = input.job_id();
    let max_deliver = pipeline.settings().max_deliver.max(1) as u32;

    let record = match start_stage(pipeline, job_id, name, attempt).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            info!("job no longer exists; message dropped");
            return Settle::Term;
        }
        Err(err) => {
            warn!(error = %err, "cannot record stage start; retrying");
            return Settle::Nak(Some(retry_delay(attempt)));
        }
    };
    // A job already failed elsewhere only still needs its notification.
    if record.status == JobStatus::Failed && name != StageName::Notify {
        info!("job already failed; message dropped");
        return Settle::Ack;
    }

    let context = JobContext {
        job_id,
        stage: name,
        attempt,
        jobs: pipeline.jobs().clone(),
        events: pipeline.events().clone(),
    };
    let heartbeat_every = pipeline.settings().ack_wait / 3;
    let handler = stage.handle(input, &context);
    tokio::pin!(handler);
    let result = loop {
        tokio::select! {
            result = &mut handler => break result,
            _ = tokio::time::sleep(heartbeat_every) => {
                if let Err(err) = message.ack_with(AckKind::Progress).await {
                    warn!(error = %err, "in-progress ack failed");
                }
            }
            _ = shutdown.cancelled() => {
                info!("shutting down: job handed back to the stream");
                return Settle::Nak(None);
            }
        }
    };

    match result {
        Ok(Outcome::Forward(next)) => {
            if let Err(err) = finish_stage(pipeline, job_id, name).await {
                warn!(error = %err, "cannot record stage end; retrying");
                return Settle::Nak(Some(retry_delay(attempt)));
            }
            enqueue(pipeline, next, attempt).await
        }
        Ok(Outcome::Again(again)) => enqueue(pipeline, again, attempt).await,
        Ok(Outcome::Later(delay)) => Settle::Nak(Some(delay)),
        Ok(Outcome::Done) => {
            // The last stage publishes the job's final event itself; `stage_completed` after it
            // would make `completed` not the last event of the job.
            let now = OffsetDateTime::now_utc();
            if let Err(err) = pipeline
                .jobs()
                .update(job_id, |record| {
                    record.stage_run(name).finished_at = Some(now)
                })
                .await
            {
                warn!(error = %err, "cannot record stage end");
            }
            Settle::Ack
        }
        Err(StageError::Permanent(reason)) => {
            warn!(reason = %reason, "job failed");
            fail_job(pipeline, job_id, name, reason).await
        }
        Err(StageError::Transient(reason)) if attempt >= max_deliver => {
            error!(reason = %reason, attempt, "job failed: out of retries");
            fail_job(
                pipeline,
                job_id,
                name,
                format!("{name} failed after {attempt} attempts: {reason}"),
            )
            .await
        }
        Err(StageError::Transient(reason)) => {
            let delay = retry_delay(attempt);
            warn!(reason = %reason, retry_in_s = delay.as_secs(), "stage failed; will retry");
            let _ = pipeline
                .jobs()
                .update(job_id, |record| {
                    record.stage_run(name).last_error = Some(reason.clone());
                })
                .await;
            Settle::Nak(Some(delay))
        }
    }
}

/// Stores `message` for its stage; the handled message is acked once it is stored, retried
/// otherwise.
async fn enqueue(pipeline: &Pipeline, message: QueuedMessage, attempt: u32) -> Settle {
    match pipeline
        .publish_raw(message.stage, &message.message_id, message.payload)
        .await
    {
        Ok(()) => {
            debug!(stage = %message.stage, message_id = %message.message_id, "queued");
            Settle::Ack
        }
        Err(err) => {
            warn!(error = %err, "cannot queue the next message; retrying");
            Settle::Nak(Some(retry_delay(attempt)))
        }
    }
}

/// Marks the job as being in `stage` and publishes `stage_started`. `None`: the job is gone.
async fn start_stage(
    pipeline: &Pipeline,
    job_id: Uuid,
    stage: StageName,
    attempt: u32,
) -> Result<Option<proto_msgs::JobRecord>, PipelineError> {
    let now = OffsetDateTime::now_utc();
    let record = match pipeline
        .jobs()
        .update(job_id, |record| {
            let run = record.stage_run(stage);
            run.attempts = run.attempts.max(attempt);
            run.started_at.get_or_insert(now);
            if !record.status.is_final() {
                record.status = JobStatus::Processing;
                record.step = stage.step().to_owned();
                record.raise_progress(stage.overall_progress(0.0));
            }
        })
        .await
    {
        Ok(record) => record,
        Err(crate::JobStoreError::NotFound(_)) => return Ok(None),
        Err(err) => return Err(PipelineError::Request(err.to_string())),
    };
    if !record.status.is_final() {
        pipeline
            .events()
            .publish_for(&record, EventKind::StageStarted, Some(stage))
            .await?;
    }
    Ok(Some(record))
}

/// Records the end of `stage` and publishes `stage_completed`.
async fn finish_stage(
    pipeline: &Pipeline,
    job_id: Uuid,
    stage: StageName,
) -> Result<(), PipelineError> {
    let now = OffsetDateTime::now_utc();
    let record = pipeline
        .jobs()
        .update(job_id, |record| {
            record.stage_run(stage).finished_at = Some(now);
            record.raise_progress(stage.overall_progress(1.0));
            record.eta_s = None;
        })
        .await
        .map_err(|err| PipelineError::Request(err.to_string()))?;
    pipeline
        .events()
        .publish_for(&record, EventKind::StageCompleted, Some(stage))
        .await
}

/// Fails the job with `reason`, publishes `failed`, and hands it to the notifier so that its
/// webhook reports the failure. Retried (nak) if any of that cannot be stored.
async fn fail_job(pipeline: &Pipeline, job_id: Uuid, stage: StageName, reason: String) -> Settle {
    let now = OffsetDateTime::now_utc();
    // Whether this call is the one that failed the job.
    let mut failed_now = false;
    let record = match pipeline
        .jobs()
        .update(job_id, |record| {
            record.stage_run(stage).last_error = Some(reason.clone());
            record.stage_run(stage).finished_at = Some(now);
            failed_now = !record.status.is_final();
            if failed_now {
                record.status = JobStatus::Failed;
                record.step = "failed".to_owned();
                record.error_message = Some(reason.clone());
                record.completed_at.get_or_insert(now);
            }
            if stage == StageName::Notify && record.webhook_url.is_some() {
                // The notifier's message is out of deliveries: its webhook will not be sent.
                let webhook = record
                    .webhook
                    .get_or_insert_with(|| proto_msgs::WebhookDelivery::new(job_id));
                if webhook.state == WebhookState::Pending {
                    webhook.state = WebhookState::Failed;
                    webhook.last_error = Some(reason.clone());
                    webhook.next_attempt_at = None;
                }
            }
        })
        .await
    {
        Ok(record) => record,
        Err(crate::JobStoreError::NotFound(_)) => return Settle::Term,
        Err(err) => {
            warn!(error = %err, "cannot record the failure; retrying");
            return Settle::Nak(Some(Duration::from_secs(2)));
        }
    };
    if record.status == JobStatus::Completed || (stage == StageName::Notify && !failed_now) {
        // A job ends once: a completed job stays completed (an undeliverable webhook does not
        // undo it), and the notifier of a failed job reports nothing more.
        return Settle::Term;
    }
    // Reported again by the same stage (a retry after the event could not be stored), the event
    // and the hand-over are dropped by the server as duplicates (Nats-Msg-Id).
    if let Err(err) = pipeline
        .events()
        .publish_for(&record, EventKind::Failed, Some(stage))
        .await
    {
        warn!(error = %err, "failed event not published; retrying");
        return Settle::Nak(Some(Duration::from_secs(2)));
    }
    if stage != StageName::Notify && record.webhook_url.is_some() {
        let handed_over = pipeline.publish(&NotifyRequest::first(job_id)).await;
        if let Err(err) = handed_over {
            warn!(error = %err, "cannot hand the failure to the notifier; retrying");
            return Settle::Nak(Some(Duration::from_secs(2)));
        }
    }
    // Term: on a work queue the message is removed; it will not be delivered again.
    Settle::Term
}
