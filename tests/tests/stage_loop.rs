//! The stage loop against a real nats-server: what happens to a job whose worker dies.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jetscribe_nats::{JobContext, Outcome, StageError, StageHandler, StageLoopSettings, run_stage};
use jetscribe_tests::{private_pipeline, wait_for};
use proto_msgs::{DecodeRequest, JobOptions, JobRecord, JobStatus};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A decode stage that would complete any job it is given.
struct CompletesEverything;

impl StageHandler for CompletesEverything {
    type Input = DecodeRequest;

    async fn handle(&self, _: DecodeRequest, _: &JobContext) -> Result<Outcome, StageError> {
        Ok(Outcome::Done)
    }
}

/// A decode stage that never finishes a job (its process is killed or shut down meanwhile).
struct NeverFinishes(std::sync::atomic::AtomicUsize);

impl StageHandler for NeverFinishes {
    type Input = DecodeRequest;

    async fn handle(&self, _: DecodeRequest, _: &JobContext) -> Result<Outcome, StageError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending().await
    }
}

/// A pending job and its decode message, stored.
async fn queued_job(pipeline: &jetscribe_nats::Pipeline) -> Uuid {
    let job_id = Uuid::now_v7();
    let record = JobRecord::new_pending(
        job_id,
        "a.wav".into(),
        1,
        JobOptions::default(),
        OffsetDateTime::now_utc(),
    );
    pipeline.jobs().create(&record).await.expect("job");
    pipeline
        .publish(&DecodeRequest {
            job_id,
            input_blob: format!("jobs/{job_id}/input"),
            filename: "a.wav".into(),
            channels: Default::default(),
        })
        .await
        .expect("published");
    job_id
}

/// Waits until the job's decode run has begun `tries` tries.
async fn wait_for_tries(pipeline: &jetscribe_nats::Pipeline, job_id: Uuid, tries: u32) {
    wait_for("the try to begin", Duration::from_secs(30), || {
        let jobs = pipeline.jobs().clone();
        async move {
            let record = jobs.get(job_id).await.ok().flatten()?;
            let run = record.stages.get(&proto_msgs::Stage::Decode)?;
            (run.attempts >= tries && run.running_from_progress.is_some()).then_some(())
        }
    })
    .await;
}

async fn wait_for_status(
    pipeline: &jetscribe_nats::Pipeline,
    job_id: Uuid,
    status: JobStatus,
) -> JobRecord {
    wait_for("the job's status", Duration::from_secs(30), || {
        let jobs = pipeline.jobs().clone();
        async move {
            let record = jobs.get(job_id).await.ok().flatten()?;
            (record.status == status).then_some(record)
        }
    })
    .await
}

/// The stage loop on `pipeline`, whose tries get half a second to finish on shutdown.
fn spawn_stage<S: StageHandler>(
    pipeline: &jetscribe_nats::Pipeline,
    handler: Arc<S>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<Result<(), jetscribe_nats::PipelineError>> {
    let settings = StageLoopSettings {
        shutdown_grace: Duration::from_millis(500),
        ..Default::default()
    };
    spawn_stage_with(pipeline, handler, shutdown, settings)
}

fn spawn_stage_with<S: StageHandler>(
    pipeline: &jetscribe_nats::Pipeline,
    handler: Arc<S>,
    shutdown: &CancellationToken,
    settings: StageLoopSettings,
) -> tokio::task::JoinHandle<Result<(), jetscribe_nats::PipelineError>> {
    tokio::spawn(run_stage(
        pipeline.clone(),
        handler,
        settings,
        shutdown.clone(),
    ))
}

/// A decode stage that completes a job once told to go.
#[derive(Default)]
struct FinishesWhenTold {
    running: std::sync::atomic::AtomicUsize,
    go: tokio::sync::Notify,
}

impl StageHandler for FinishesWhenTold {
    type Input = DecodeRequest;

    async fn handle(&self, _: DecodeRequest, _: &JobContext) -> Result<Outcome, StageError> {
        self.running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.go.notified().await;
        Ok(Outcome::Done)
    }
}

#[tokio::test]
async fn a_try_that_ends_within_the_shutdown_grace_is_finished_not_handed_back() {
    let (_server, pipeline) = private_pipeline(|_| {}).await;
    let job_id = queued_job(&pipeline).await;
    let shutdown = CancellationToken::new();
    let handler = Arc::new(FinishesWhenTold::default());
    let settings = StageLoopSettings {
        shutdown_grace: Duration::from_secs(60),
        ..Default::default()
    };
    let stage = spawn_stage_with(&pipeline, handler.clone(), &shutdown, settings);
    wait_for_tries(&pipeline, job_id, 1).await;
    wait_for("the handler to run", Duration::from_secs(30), || {
        let running = handler.running.load(std::sync::atomic::Ordering::SeqCst);
        async move { (running > 0).then_some(()) }
    })
    .await;

    // The process begins to shut down; the try ends afterwards, within the grace.
    shutdown.cancel();
    handler.go.notify_one();
    stage
        .await
        .expect("joined")
        .expect("stage loop ends cleanly");

    let record = pipeline
        .jobs()
        .get(job_id)
        .await
        .expect("read")
        .expect("job");
    let run = &record.stages[&proto_msgs::Stage::Decode];
    assert!(run.finished_at.is_some(), "{run:?}");
    assert_eq!((run.attempts, run.failures), (1, 0), "{run:?}");
    let queued = pipeline.queued_jobs().await.expect("work stream read");
    assert!(!queued.contains(&job_id), "the message was acknowledged");
}

#[tokio::test]
async fn a_job_whose_process_dies_on_every_try_is_dead_lettered_and_failed_not_left_processing() {
    let (_server, pipeline) = private_pipeline(|settings| {
        settings.ack_wait = Duration::from_secs(1);
        settings.max_attempts = 2;
    })
    .await;
    let job_id = queued_job(&pipeline).await;

    // Processes take the message and die on it without a word (no ack, no nak): their tasks
    // are dropped mid-handler, as a SIGKILL would. Two deaths count as one failed try.
    for tries in 1..=4 {
        let shutdown = CancellationToken::new();
        let dies = spawn_stage(
            &pipeline,
            Arc::new(NeverFinishes(Default::default())),
            &shutdown,
        );
        wait_for_tries(&pipeline, job_id, tries).await;
        dies.abort();
        drop(dies.await);
    }

    // A healthy process takes it next: the stage gives up rather than try again.
    let shutdown = CancellationToken::new();
    let handler = Arc::new(CountsCalls(Default::default()));
    let stage = spawn_stage(&pipeline, handler.clone(), &shutdown);
    let failed = wait_for_status(&pipeline, job_id, JobStatus::Failed).await;
    let reason = failed.error_message.expect("a reason");
    assert_eq!(
        reason,
        "decode failed after 4 attempts: the decode process stopped while handling the job"
    );
    assert_eq!(handler.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    let letter = pipeline
        .dead_letter(job_id)
        .await
        .expect("dead letters read")
        .expect("a dead letter");
    assert_eq!(
        (letter.stage, letter.reason.as_str(), letter.failures),
        (proto_msgs::Stage::Decode, reason.as_str(), 4)
    );
    assert_eq!(letter.subject, "jetscribe.pipeline.decode");
    let message: DecodeRequest = proto_msgs::decode(&letter.payload).expect("the message");
    assert_eq!(message.job_id, job_id);
    // The message is gone from the work queue.
    let queues = pipeline.queues().await.expect("queues");
    let decode = queues
        .iter()
        .find(|q| q.stage == proto_msgs::Stage::Decode)
        .expect("decode");
    assert_eq!(decode.pending, 0);
    shutdown.cancel();
    stage
        .await
        .expect("joined")
        .expect("stage loop ends cleanly");
}

#[tokio::test]
async fn a_try_that_runs_past_its_deadline_is_stopped_and_counts_as_failed() {
    let (_server, pipeline) = private_pipeline(|settings| settings.max_attempts = 2).await;
    let job_id = queued_job(&pipeline).await;
    let shutdown = CancellationToken::new();
    let handler = Arc::new(NeverFinishes(Default::default()));
    let settings = StageLoopSettings {
        try_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let stage = tokio::spawn(run_stage(
        pipeline.clone(),
        handler.clone(),
        settings,
        shutdown.clone(),
    ));
    let failed = wait_for_status(&pipeline, job_id, JobStatus::Failed).await;
    assert_eq!(
        failed.error_message.as_deref(),
        Some("decode failed after 2 attempts: internal error (the stage ran past its deadline)")
    );
    assert_eq!(handler.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    shutdown.cancel();
    stage
        .await
        .expect("joined")
        .expect("stage loop ends cleanly");
}

#[tokio::test]
async fn shutting_down_mid_job_hands_it_back_without_counting_a_failed_try() {
    let (_server, pipeline) = private_pipeline(|settings| settings.max_attempts = 2).await;
    let job_id = queued_job(&pipeline).await;

    // More shutdowns than the tries allowed, each in the middle of the job.
    for _ in 0..4 {
        let shutdown = CancellationToken::new();
        let handler = Arc::new(NeverFinishes(Default::default()));
        let stage = spawn_stage(&pipeline, handler.clone(), &shutdown);
        wait_for("the handler to run", Duration::from_secs(30), || {
            let calls = handler.0.load(std::sync::atomic::Ordering::SeqCst);
            async move { (calls > 0).then_some(()) }
        })
        .await;
        shutdown.cancel();
        stage
            .await
            .expect("joined")
            .expect("stage loop ends cleanly");
    }

    let shutdown = CancellationToken::new();
    let stage = spawn_stage(&pipeline, Arc::new(CompletesEverything), &shutdown);
    let record = wait_for("the job to be handled", Duration::from_secs(30), || {
        let jobs = pipeline.jobs().clone();
        async move {
            let record = jobs.get(job_id).await.ok().flatten()?;
            let run = record.stages.get(&proto_msgs::Stage::Decode)?;
            run.finished_at.is_some().then_some(record)
        }
    })
    .await;
    let run = &record.stages[&proto_msgs::Stage::Decode];
    assert_eq!((run.attempts, run.failures), (1, 0), "{run:?}");
    assert_ne!(record.status, JobStatus::Failed);
    shutdown.cancel();
    stage
        .await
        .expect("joined")
        .expect("stage loop ends cleanly");
}

/// A decode stage that panics on one job and completes the others.
struct PanicsOn(Uuid);

impl StageHandler for PanicsOn {
    type Input = DecodeRequest;

    async fn handle(&self, input: DecodeRequest, _: &JobContext) -> Result<Outcome, StageError> {
        assert_ne!(input.job_id, self.0, "a poison message");
        Ok(Outcome::Done)
    }
}

#[tokio::test]
async fn a_message_that_panics_its_stage_every_time_is_dead_lettered_and_the_stage_serves_others() {
    let (_server, pipeline) = private_pipeline(|settings| settings.max_attempts = 2).await;
    let poison = queued_job(&pipeline).await;
    let shutdown = CancellationToken::new();
    let stage = spawn_stage(&pipeline, Arc::new(PanicsOn(poison)), &shutdown);
    let failed = wait_for_status(&pipeline, poison, JobStatus::Failed).await;
    assert_eq!(
        failed.error_message.as_deref(),
        Some(
            "decode failed after 2 attempts: internal error (handling the job (the stage panicked))"
        )
    );
    let letter = pipeline
        .dead_letter(poison)
        .await
        .expect("read")
        .expect("a dead letter");
    assert_eq!(letter.failures, 2);

    // The same process goes on with the next job.
    let healthy = queued_job(&pipeline).await;
    wait_for(
        "the next job to be handled",
        Duration::from_secs(30),
        || {
            let jobs = pipeline.jobs().clone();
            async move {
                let record = jobs.get(healthy).await.ok().flatten()?;
                record
                    .stages
                    .get(&proto_msgs::Stage::Decode)?
                    .finished_at
                    .map(|_| ())
            }
        },
    )
    .await;
    assert_eq!(pipeline.dead_letter(healthy).await.expect("read"), None);
    shutdown.cancel();
    stage
        .await
        .expect("joined")
        .expect("stage loop ends cleanly");
}

/// A decode stage whose store always fails, with the kind of detail an operator needs and a
/// client must not see.
struct StoreAlwaysFails;

impl StageHandler for StoreAlwaysFails {
    type Input = DecodeRequest;

    async fn handle(&self, _: DecodeRequest, _: &JobContext) -> Result<Outcome, StageError> {
        let cause = std::io::Error::other("/srv/jetscribe/blobs/jobs/x/input: permission denied");
        Err(StageError::transient("reading the upload", cause))
    }
}

#[tokio::test]
async fn a_job_failed_by_internal_errors_tells_its_owner_what_failed_but_not_the_internals() {
    let (_server, pipeline) = private_pipeline(|settings| settings.max_attempts = 2).await;
    let job_id = queued_job(&pipeline).await;
    let shutdown = CancellationToken::new();
    let stage = spawn_stage(&pipeline, Arc::new(StoreAlwaysFails), &shutdown);
    let failed = wait_for_status(&pipeline, job_id, JobStatus::Failed).await;
    assert_eq!(
        failed.error_message.as_deref(),
        Some("decode failed after 2 attempts: internal error (reading the upload)")
    );
    let run = &failed.stages[&proto_msgs::Stage::Decode];
    assert_eq!(
        run.last_error.as_deref(),
        Some("decode failed after 2 attempts: internal error (reading the upload)")
    );
    shutdown.cancel();
    stage
        .await
        .expect("joined")
        .expect("stage loop ends cleanly");
}

/// A decode stage whose object store is down (read-only) for its first tries, then up.
struct StoreDownForTries(std::sync::atomic::AtomicU32);

impl StageHandler for StoreDownForTries {
    type Input = DecodeRequest;

    async fn handle(&self, _: DecodeRequest, _: &JobContext) -> Result<Outcome, StageError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .0
            .fetch_update(SeqCst, SeqCst, |left| left.checked_sub(1))
            .is_ok()
        {
            let down = std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem);
            return Err(StageError::transient("writing the audio blob", down));
        }
        Ok(Outcome::Done)
    }
}

#[tokio::test]
async fn a_store_outage_is_waited_out_and_never_counted_as_a_failed_try() {
    // One failed try would fail the job.
    let (_server, pipeline) = private_pipeline(|settings| settings.max_attempts = 1).await;
    let job_id = queued_job(&pipeline).await;
    let shutdown = CancellationToken::new();
    let handler = Arc::new(StoreDownForTries(2.into()));
    let stage = spawn_stage(&pipeline, handler, &shutdown);
    let run = wait_for("the stage to end", Duration::from_secs(30), || {
        let jobs = pipeline.jobs().clone();
        async move {
            let record = jobs.get(job_id).await.ok().flatten()?;
            let run = record.stages.get(&proto_msgs::Stage::Decode)?;
            run.finished_at.is_some().then(|| run.clone())
        }
    })
    .await;
    assert_eq!((run.outages, run.failures), (2, 0), "{run:?}");
    assert_eq!(
        run.last_error.as_deref(),
        Some("storage or network unavailable (writing the audio blob); waiting for it")
    );
    let record = pipeline
        .jobs()
        .get(job_id)
        .await
        .expect("read")
        .expect("job");
    assert_eq!(record.status, JobStatus::Processing);
    shutdown.cancel();
    stage
        .await
        .expect("joined")
        .expect("stage loop ends cleanly");
}

/// A decode stage that counts the messages it is given.
struct CountsCalls(std::sync::atomic::AtomicUsize);

impl StageHandler for CountsCalls {
    type Input = DecodeRequest;

    async fn handle(&self, _: DecodeRequest, _: &JobContext) -> Result<Outcome, StageError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Outcome::Done)
    }
}

/// A record of `status`, stored.
async fn stored_job(pipeline: &jetscribe_nats::Pipeline, status: JobStatus) -> JobRecord {
    let mut record = JobRecord::new_pending(
        Uuid::now_v7(),
        "a.wav".into(),
        1,
        JobOptions::default(),
        OffsetDateTime::now_utc(),
    );
    record.status = status;
    pipeline.jobs().create(&record).await.expect("job");
    record
}

#[tokio::test]
async fn a_late_message_of_a_completed_job_is_dropped_without_work_or_events() {
    let (_server, pipeline) = private_pipeline(|_| {}).await;
    let job = stored_job(&pipeline, JobStatus::Completed).await;
    let request = DecodeRequest {
        job_id: job.job_id,
        input_blob: "jobs/x/input".into(),
        filename: "a.wav".into(),
        channels: Default::default(),
    };
    pipeline.publish(&request).await.expect("published");
    let handler = Arc::new(CountsCalls(Default::default()));
    let shutdown = CancellationToken::new();
    let stage = tokio::spawn(run_stage(
        pipeline.clone(),
        handler.clone(),
        StageLoopSettings::default(),
        shutdown.clone(),
    ));
    wait_for("the message to be settled", Duration::from_secs(30), || {
        let pipeline = pipeline.clone();
        async move {
            let queues = pipeline.queues().await.ok()?;
            let decode = queues
                .iter()
                .find(|q| q.stage == proto_msgs::Stage::Decode)?;
            (decode.pending == 0 && decode.in_progress == 0).then_some(())
        }
    })
    .await;
    shutdown.cancel();
    stage
        .await
        .expect("joined")
        .expect("stage loop ends cleanly");
    assert_eq!(handler.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    let record = pipeline
        .jobs()
        .get(job.job_id)
        .await
        .expect("read")
        .expect("job");
    assert_eq!(record.status, JobStatus::Completed);
    assert!(record.stages.is_empty(), "{:?}", record.stages);
    let events = pipeline
        .last_event_sequence(job.job_id)
        .await
        .expect("events");
    assert_eq!(events, None, "no event after the job's end");
}

#[tokio::test]
async fn a_job_that_ended_without_its_final_event_gets_it_from_the_notifier() {
    let (_server, pipeline) = private_pipeline(|_| {}).await;
    // Completed by a notifier that died before publishing `completed`.
    let job = stored_job(&pipeline, JobStatus::Completed).await;
    let blobs_dir = tempfile::tempdir().expect("tempdir");
    let blobs =
        jetscribe_blobstore::BlobStore::open(&format!("file://{}", blobs_dir.path().display()))
            .expect("store");
    let settings = jetscribe_notifier::WebhookSettings {
        timeout: Duration::from_secs(5),
        max_retries: 0,
        retry_delay: Duration::from_secs(1),
        secret: None,
        allow_private: true,
    };
    let notifier = jetscribe_notifier::Notifier::new(blobs, settings).expect("notifier");
    let request = proto_msgs::NotifyRequest::first(job.job_id);
    pipeline.publish(&request).await.expect("published");
    let shutdown = CancellationToken::new();
    let stage = tokio::spawn(run_stage(
        pipeline.clone(),
        Arc::new(notifier),
        StageLoopSettings::default(),
        shutdown.clone(),
    ));
    let events = pipeline
        .follow_job_events(job.job_id, None)
        .await
        .expect("follow");
    let mut events = std::pin::pin!(events);
    let first = tokio::time::timeout(Duration::from_secs(30), events.next()).await;
    let first = first.expect("an event").expect("stored").expect("readable");
    assert_eq!(first.event.kind, proto_msgs::EventKind::Completed);
    shutdown.cancel();
    stage
        .await
        .expect("joined")
        .expect("stage loop ends cleanly");
}

/// A decode stage that panics on every job.
struct AlwaysPanics;

impl StageHandler for AlwaysPanics {
    type Input = DecodeRequest;

    async fn handle(&self, _: DecodeRequest, _: &JobContext) -> Result<Outcome, StageError> {
        panic!("index out of bounds: the len is 0 but the index is 0")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_the_dead_letter_of_a_job_and_its_owner_sees_only_why_it_failed() {
    const ALICE: &str = "alice-0123456789abcdef";
    const ROOT: &str = "root-0123456789abcdef0";
    let keys = format!("alice={ALICE},root={ROOT}");
    let mut app = jetscribe_tests::TestApp::spawn_parts(
        &["api"],
        &[("API_KEYS", keys.as_str()), ("ADMIN_KEYS", "root")],
    )
    .await;
    // The decode stage of this deployment panics on every message.
    let mut settings = jetscribe_nats::PipelineSettings::new(app.nats_url.clone());
    settings.max_attempts = 2;
    let pipeline = jetscribe_nats::Pipeline::connect(settings)
        .await
        .expect("pipeline");
    let shutdown = CancellationToken::new();
    let stage = spawn_stage(&pipeline, Arc::new(AlwaysPanics), &shutdown);

    app.set_api_key(Some(ALICE));
    let job_id = app
        .submit_job(&jetscribe_tests::fixture("jfk.flac"), "")
        .await;
    let ended = app.wait_until_ended(&job_id).await;
    assert_eq!(ended["status"], "failed", "{ended}");
    let (code, owners_view) = app.get_json(&format!("/jobs/{job_id}")).await;
    assert_eq!(code, 200, "{owners_view}");
    assert_eq!(
        owners_view["error_message"],
        "decode failed after 2 attempts: internal error (handling the job (the stage panicked))"
    );
    assert_eq!(owners_view["stages"]["decode"]["failures"], 2);
    assert!(owners_view.get("dead_letter").is_none(), "{owners_view}");

    app.set_api_key(Some(ROOT));
    let (code, admins_view) = app.get_json(&format!("/jobs/{job_id}")).await;
    assert_eq!(code, 200, "{admins_view}");
    let letter = &admins_view["dead_letter"];
    assert_eq!(letter["stage"], "decode", "{admins_view}");
    assert_eq!(letter["reason"], owners_view["error_message"]);
    assert_eq!(letter["failures"], 2);
    assert_eq!(letter["subject"], "jetscribe.pipeline.decode");
    assert_eq!(letter["message"]["job_id"], job_id.as_str());
    // The same view as /status, and other jobs have no dead letter.
    let (_, status) = app.get_json(&format!("/status/{job_id}")).await;
    assert_eq!(status["status"], admins_view["status"]);
    shutdown.cancel();
    stage
        .await
        .expect("joined")
        .expect("stage loop ends cleanly");
}
