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

#[tokio::test]
async fn a_job_whose_workers_die_on_every_delivery_is_failed_not_left_processing() {
    let (_server, pipeline) = private_pipeline(|settings| {
        settings.ack_wait = Duration::from_secs(1);
        settings.max_deliver = 2;
    })
    .await;

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
            input_blob: "jobs/x/input".into(),
            filename: "a.wav".into(),
        })
        .await
        .expect("published");

    // Two workers take the message and die without a word: no ack, no nak.
    let consumer: async_nats::jetstream::consumer::PullConsumer = pipeline
        .jetstream()
        .get_consumer_from_stream("jetscribe-decode", proto_msgs::PIPELINE_STREAM)
        .await
        .expect("consumer");
    for delivery in 1..=2 {
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(10))
            .messages()
            .await
            .expect("pull");
        let message = batch.next().await.expect("delivered").expect("message");
        assert_eq!(message.info().expect("info").delivered, delivery);
    }

    // A healthy process of the stage is running when the server gives up on the message.
    let shutdown = CancellationToken::new();
    let stage = tokio::spawn(run_stage(
        pipeline.clone(),
        Arc::new(CompletesEverything),
        StageLoopSettings::default(),
        shutdown.clone(),
    ));
    let failed = wait_for("the job to be failed", Duration::from_secs(30), || {
        let jobs = pipeline.jobs().clone();
        async move {
            let record = jobs.get(job_id).await.ok().flatten()?;
            (record.status == JobStatus::Failed).then_some(record)
        }
    })
    .await;
    let reason = failed.error_message.expect("a reason");
    assert!(
        reason.contains("decode failed after 2 attempts"),
        "{reason}"
    );
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
    let (_server, pipeline) = private_pipeline(|settings| settings.max_deliver = 2).await;
    let job_id = Uuid::now_v7();
    let record = JobRecord::new_pending(
        job_id,
        "a.wav".into(),
        1,
        JobOptions::default(),
        OffsetDateTime::now_utc(),
    );
    pipeline.jobs().create(&record).await.expect("job");
    let request = DecodeRequest {
        job_id,
        input_blob: "jobs/x/input".into(),
        filename: "a.wav".into(),
    };
    pipeline.publish(&request).await.expect("published");
    let shutdown = CancellationToken::new();
    let stage = tokio::spawn(run_stage(
        pipeline.clone(),
        Arc::new(StoreAlwaysFails),
        StageLoopSettings::default(),
        shutdown.clone(),
    ));
    let failed = wait_for("the job to be failed", Duration::from_secs(30), || {
        let jobs = pipeline.jobs().clone();
        async move {
            let record = jobs.get(job_id).await.ok().flatten()?;
            (record.status == JobStatus::Failed).then_some(record)
        }
    })
    .await;
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
