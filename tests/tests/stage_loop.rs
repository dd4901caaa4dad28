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
