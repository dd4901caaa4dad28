//! The loop that runs one stage: pulls a message per free slot, runs the handler with
//! in-progress acks, and settles the message as the rules of [`crate::stage::settle`] say.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use futures::{FutureExt, StreamExt};
use proto_msgs::{JobRecord, JobStatus, PipelineMessage, Queue, Stage};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};
use uuid::Uuid;

use crate::error_chain::ErrorChain;
use crate::stage::lifecycle::JobLifecycle;
use crate::stage::settle::{Settle, decide, out_of_tries, retry_delay};
use crate::stage::{JobContext, Outcome, StageError, StageHandler};
use crate::{Pipeline, PipelineError, trace_context};

/// How the loop runs one stage.
#[derive(Debug, Clone)]
pub struct StageLoopSettings {
    /// Messages handled at once by this process (MAX_CONCURRENT_JOBS).
    pub concurrency: usize,
    /// How long one pull request waits on the server for a message.
    pub pull_expiry: Duration,
    /// SHUTDOWN_GRACE: on shutdown the loop stops pulling, and each running try may go on for
    /// this long to finish; one still running then is stopped and its message handed back (not
    /// a failed try), so that another process takes it at once.
    pub shutdown_grace: Duration,
    /// STAGE_TIMEOUT: the least time one try may run; longer media get more
    /// ([`proto_msgs::Stage::deadline`]). A try past it is stopped and counts as failed.
    pub try_timeout: Duration,
}

impl Default for StageLoopSettings {
    fn default() -> Self {
        Self {
            concurrency: 2,
            pull_expiry: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(20),
            try_timeout: Duration::from_secs(600),
        }
    }
}

/// Runs `handler` on its stage's messages until `shutdown` is cancelled.
pub async fn run_stage<S: StageHandler>(
    pipeline: Pipeline,
    handler: Arc<S>,
    settings: StageLoopSettings,
    shutdown: CancellationToken,
) -> Result<(), PipelineError> {
    let stage = S::Input::STAGE;
    let queue = Queue::for_message(stage, handler.model(), &pipeline.settings().default_model);
    let consumer = pipeline.consumer(&queue).await?;
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    let running = RunningJobs::default();
    // Listens until the tries have drained: a job cancelled during the shutdown grace is
    // stopped like any other.
    let drained = CancellationToken::new();
    let listener = tokio::spawn(listen_for_cancellations(
        pipeline.clone(),
        running.clone(),
        drained.clone(),
    ));
    info!(stage = %stage, queue = %queue.subject(), concurrency = settings.concurrency, "stage started");
    loop {
        // Reap finished handlers so the set does not grow.
        while in_flight.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore stays open"),
        };
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            pulled = pull_one(&consumer, settings.pull_expiry) => match pulled {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(err) => {
                    // The client reconnects by itself; wait a little instead of spinning.
                    warn!(stage = %stage, error = %ErrorChain(&err), "pull failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let (pipeline, handler, shutdown) = (pipeline.clone(), handler.clone(), shutdown.clone());
        let (running, try_timeout) = (running.clone(), settings.try_timeout);
        let shutdown_grace = settings.shutdown_grace;
        in_flight.spawn(async move {
            let context = LoopContext {
                pipeline: &pipeline,
                shutdown: &shutdown,
                running: &running,
                try_timeout,
                shutdown_grace,
            };
            process_message(&context, handler.as_ref(), message).await;
            drop(permit);
        });
    }
    info!(stage = %stage, in_flight = in_flight.len(), "stage stopping");
    // The tries get their grace, then a moment to hand their messages back.
    let all_ended = tokio::time::timeout(settings.shutdown_grace + HAND_BACK_TIME, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if all_ended.is_err() {
        in_flight.abort_all();
    }
    drained.cancel();
    drop(listener.await);
    Ok(())
}

/// How long a try stopped at the end of SHUTDOWN_GRACE gets to record its hand-back.
const HAND_BACK_TIME: Duration = Duration::from_secs(5);

async fn pull_one(
    consumer: &PullConsumer,
    expiry: Duration,
) -> Result<Option<Message>, PipelineError> {
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(expiry)
        .messages()
        .await
        .map_err(|err| PipelineError::request("pulling a message", err))?;
    match batch.next().await {
        Some(Ok(message)) => Ok(Some(message)),
        Some(Err(err)) => Err(PipelineError::request("pulling a message", err)),
        None => Ok(None),
    }
}

/// What every message of one loop is handled with.
struct LoopContext<'a> {
    pipeline: &'a Pipeline,
    shutdown: &'a CancellationToken,
    running: &'a RunningJobs,
    try_timeout: Duration,
    shutdown_grace: Duration,
}

/// Decodes, handles and settles one message, inside a span that continues the job's trace.
async fn process_message<S: StageHandler>(
    context: &LoopContext<'_>,
    handler: &S,
    message: Message,
) {
    let stage = S::Input::STAGE;
    let (delivery, sequence) = message
        .info()
        .map(|info| (info.delivered, info.stream_sequence))
        .unwrap_or((1, 0));
    let input: S::Input = match proto_msgs::decode(&message.payload) {
        Ok(input) => input,
        Err(err) => {
            // Nobody can ever handle it, and it names no job we could fail.
            error!(stage = %stage, error = %ErrorChain(&err), "undecodable message dropped");
            return settle(&message, Settle::Term).await;
        }
    };
    let span = info_span!("stage", stage = %stage, job_id = %input.job_id(), delivery, sequence);
    trace_context::set_parent_from(&span, message.headers.as_ref());
    async {
        let settled = handle(context, handler, input, &message).await;
        settle(&message, settled).await;
    }
    .instrument(span)
    .await;
}

/// Runs the handler between the job's start and what its answer decides.
async fn handle<S: StageHandler>(
    loop_context: &LoopContext<'_>,
    handler: &S,
    input: S::Input,
    message: &Message,
) -> Settle {
    let (pipeline, stage) = (loop_context.pipeline, S::Input::STAGE);
    // One try per job at a time in a process: the same message delivered again while this
    // process handles it (a redelivery racing a hand-back) is left to the handler it has;
    // another message of the job (a webhook retry queued by the running try) waits a moment.
    let sequence = message.info().map_or(0, |info| info.stream_sequence);
    let claim = match loop_context.running.claim(input.job_id(), sequence) {
        Ok(claim) => claim,
        Err(Busy::SameMessage) => {
            info!("already handled by this process: duplicate delivery left alone");
            return Settle::Leave;
        }
        Err(Busy::OtherMessage) => return Settle::Nak(Some(Duration::from_secs(1))),
    };
    let job = JobLifecycle {
        pipeline,
        job_id: input.job_id(),
        stage,
        on_give_up: S::on_give_up,
        message: (message.subject.as_str(), &message.payload),
    };
    let record = match job.start().await {
        Ok(Some(record)) => record,
        Ok(None) => {
            info!("job no longer exists; message dropped");
            return Settle::Term;
        }
        Err(err) => {
            warn!(error = %ErrorChain(&err), "cannot record the stage's start; retrying");
            return Settle::Nak(Some(retry_delay(1)));
        }
    };
    if !stage.wanted_for(&record) {
        info!(status = ?record.status, "the job has ended; message dropped");
        return Settle::Ack;
    }
    let run = record.stages.get(&stage).cloned().unwrap_or_default();
    let max_attempts = pipeline.settings().max_attempts.max(1);
    if let Some(reason) = out_of_tries(&run, stage, max_attempts) {
        return job.give_up(reason, false).await;
    }
    let timer = TryTimer::start(stage);
    let result = match run_try(loop_context, handler, input, &record, &claim, message).await {
        Run::Handled(result) => result,
        Run::ShuttingDown => {
            info!("shutting down: the try did not end within SHUTDOWN_GRACE; handed back");
            timer.stop("handed_back");
            return job.hand_back(None).await;
        }
        Run::Cancelled => {
            info!("job cancelled: its handler stopped");
            timer.stop("cancelled");
            job.end_try().await;
            return Settle::Ack;
        }
    };
    if let Err(err) = &result
        && !matches!(err, StageError::Permanent(_))
    {
        // The job's record gets only what the stage was doing; the causes are logged here.
        warn!(error = %ErrorChain(err), "stage error");
    }
    let decision = decide(result, stage, &run, max_attempts);
    timer.stop(decision.outcome());
    job.carry_out(decision, run.attempts).await
}

/// A try counted in `jetscribe_stage_tries_running` while it runs, and observed in
/// `jetscribe_stage_duration_seconds` with how it ended.
struct TryTimer {
    stage: Stage,
    started: std::time::Instant,
}

impl TryTimer {
    fn start(stage: Stage) -> Self {
        running_tries(stage).inc();
        Self {
            stage,
            started: std::time::Instant::now(),
        }
    }

    fn stop(self, outcome: &str) {
        let labels = jetscribe_metrics::TryLabels {
            stage: self.stage.name().to_owned(),
            outcome: outcome.to_owned(),
        };
        let metrics = jetscribe_metrics::metrics();
        let duration = metrics.stage_duration.get_or_create(&labels);
        duration.observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for TryTimer {
    fn drop(&mut self) {
        running_tries(self.stage).dec();
    }
}

fn running_tries(stage: Stage) -> jetscribe_metrics::Gauge {
    let label = jetscribe_metrics::StageLabel {
        stage: stage.name().to_owned(),
    };
    jetscribe_metrics::metrics()
        .tries_running
        .get_or_create(&label)
        .clone()
}

/// Runs one try of `handler` on the job `record`, telling the server all along that the
/// message is in progress. A panic fails the try like any error (the stage goes on serving
/// other jobs, and a message that panics on every try ends as a dead letter); so does running
/// past the try's deadline.
async fn run_try<S: StageHandler>(
    loop_context: &LoopContext<'_>,
    handler: &S,
    input: S::Input,
    record: &JobRecord,
    claim: &RunningJob,
    message: &Message,
) -> Run<Result<Outcome, StageError>> {
    let (pipeline, stage) = (loop_context.pipeline, S::Input::STAGE);
    let attempt = record.stages.get(&stage).map_or(0, |run| run.attempts);
    let context = JobContext::new(
        record.job_id,
        stage,
        attempt,
        pipeline.jobs().clone(),
        pipeline.events().clone(),
    );
    let deadline = stage.deadline(loop_context.try_timeout, record);
    let handled = AssertUnwindSafe(handler.handle(input, &context))
        .catch_unwind()
        .map(|handled| handled.unwrap_or_else(|panic| Err(StageError::from_panic(panic))));
    // Past its deadline the try is dropped (ffmpeg is killed when its channel closes) and fails.
    let handled = tokio::time::timeout(deadline, handled).map(|handled| {
        handled.unwrap_or_else(|_| {
            let after = format!("stopped after {} s", deadline.as_secs());
            Err(StageError::transient(
                "the stage ran past its deadline",
                after,
            ))
        })
    });
    let watch = Watch {
        message,
        every: pipeline.settings().ack_wait / 3,
        shutdown: loop_context.shutdown,
        grace: loop_context.shutdown_grace,
        cancelled: claim,
        // Only a job that is running can be cancelled: the notifier delivering a cancelled
        // job's webhook is not stopped by that cancellation.
        watch_cancellation: !record.status.is_final(),
        pipeline,
        job_id: record.job_id,
    };
    with_heartbeat(handled, watch).await
}

/// How a handler's run ended.
enum Run<T> {
    Handled(T),
    /// The process is shutting down: the handler was stopped.
    ShuttingDown,
    /// The job was cancelled: the handler was stopped.
    Cancelled,
}

/// What a running handler is watched for.
struct Watch<'a> {
    message: &'a Message,
    /// Between in-progress acks (and looks at the job's record).
    every: Duration,
    shutdown: &'a CancellationToken,
    /// How long the handler may go on once `shutdown` is cancelled.
    grace: Duration,
    /// Cancelled when the job's cancellation is announced.
    cancelled: &'a RunningJob,
    watch_cancellation: bool,
    pipeline: &'a Pipeline,
    job_id: Uuid,
}

/// Awaits `handled`, telling the server every `watch.every` that the message is still in
/// progress; stops it (drops it: the stages' blocking work ends with its channels) when the job
/// is cancelled (announced or found on its record), or `watch.grace` after the process began
/// to shut down.
async fn with_heartbeat<T>(handled: impl Future<Output = T>, watch: Watch<'_>) -> Run<T> {
    tokio::pin!(handled);
    let mut grace_ends: Option<tokio::time::Instant> = None;
    loop {
        let grace_over = async move {
            match grace_ends {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut handled => return Run::Handled(result),
            _ = tokio::time::sleep(watch.every) => {
                if let Err(err) = watch.message.ack_with(AckKind::Progress).await {
                    warn!(error = %ErrorChain(err.as_ref()), "in-progress ack failed");
                }
                if !watch.watch_cancellation {
                    continue;
                }
                let record = watch.pipeline.jobs().get(watch.job_id).await;
                if record.ok().flatten().is_some_and(|r| r.status == JobStatus::Cancelled) {
                    return Run::Cancelled;
                }
            }
            _ = watch.cancelled.cancelled(), if watch.watch_cancellation => {
                return Run::Cancelled;
            }
            _ = watch.shutdown.cancelled(), if grace_ends.is_none() => {
                info!(grace_s = watch.grace.as_secs_f64(), "shutting down: the try may finish");
                grace_ends = Some(tokio::time::Instant::now() + watch.grace);
            }
            () = grace_over => return Run::ShuttingDown,
        }
    }
}

/// The jobs this process is handling, each with the token that stops its handler when the job
/// is cancelled.
#[derive(Clone, Default)]
struct RunningJobs(Arc<Mutex<HashMap<Uuid, (u64, CancellationToken)>>>);

/// Why a job cannot be claimed: this process already handles it.
enum Busy {
    /// The same message (stream sequence).
    SameMessage,
    /// Another message of the job.
    OtherMessage,
}

impl RunningJobs {
    /// Registers `job_id`, handled for the message of stream `sequence`, for as long as the
    /// returned guard lives, unless it already is.
    fn claim(&self, job_id: Uuid, sequence: u64) -> Result<RunningJob, Busy> {
        let token = CancellationToken::new();
        let mut jobs = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match jobs.get(&job_id) {
            Some((held, _)) if *held == sequence => return Err(Busy::SameMessage),
            Some(_) => return Err(Busy::OtherMessage),
            None => {}
        }
        jobs.insert(job_id, (sequence, token.clone()));
        Ok(RunningJob {
            jobs: self.clone(),
            job_id,
            token,
        })
    }

    fn cancel(&self, job_id: Uuid) {
        let jobs = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, token)) = jobs.get(&job_id) {
            token.cancel();
        }
    }
}

/// A job registered in [`RunningJobs`]; unregistered on drop.
struct RunningJob {
    jobs: RunningJobs,
    job_id: Uuid,
    token: CancellationToken,
}

impl std::ops::Deref for RunningJob {
    type Target = CancellationToken;
    fn deref(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        let mut jobs = self
            .jobs
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        jobs.remove(&self.job_id);
    }
}

/// Stops the handlers of jobs announced cancelled on `jetscribe.cancel.<job_id>`, until
/// `stop`. Every process of every stage listens (no queue group).
async fn listen_for_cancellations(
    pipeline: Pipeline,
    running: RunningJobs,
    stop: CancellationToken,
) {
    let subject = format!("{}.*", proto_msgs::CANCEL_SUBJECT_PREFIX);
    let mut announcements = match pipeline.client().subscribe(subject).await {
        Ok(subscriber) => subscriber,
        Err(err) => {
            // Cancelled jobs are still found on their record at the next heartbeat.
            return warn!(error = %ErrorChain(&err), "cannot listen for cancellations");
        }
    };
    loop {
        let announcement = tokio::select! {
            _ = stop.cancelled() => return,
            announcement = announcements.next() => match announcement {
                Some(announcement) => announcement,
                None => return,
            },
        };
        let job_id = announcement
            .subject
            .rsplit('.')
            .next()
            .and_then(|id| id.parse().ok());
        if let Some(job_id) = job_id {
            running.cancel(job_id);
        }
    }
}

/// Settles `message` with the server; a failure is logged (the server redelivers after
/// `ack_wait`, and downstream messages are deduplicated by their ids).
async fn settle(message: &Message, settle: Settle) {
    let settled = match settle {
        Settle::Ack => message.double_ack().await,
        Settle::Nak(delay) => message.ack_with(AckKind::Nak(delay)).await,
        Settle::Term => message.ack_with(AckKind::Term).await,
        Settle::Leave => return,
    };
    if let Err(err) = settled {
        warn!(?settle, error = %ErrorChain(err.as_ref()), "message not settled with the server");
    }
}
