//! The server's advisory when a message of a stage has been delivered `max_deliver` times
//! without an ack: the process handling it died or hung on its last try, so no handler will
//! ever fail the job. One process of the stage (a queue group) fails it here, with the last
//! error recorded for the stage, and removes the message.

use futures::StreamExt;
use proto_msgs::{JobRecord, Stage};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};
use uuid::Uuid;

use crate::Pipeline;
use crate::error_chain::ErrorChain;
use crate::stage::lifecycle::JobLifecycle;
use crate::stage::settle::Settle;

/// The fields of `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES` that matter here.
#[derive(serde::Deserialize)]
struct Advisory {
    stream_seq: u64,
    deliveries: u64,
}

/// Any pipeline message names its job.
#[derive(serde::Deserialize)]
struct JobRef {
    job_id: Uuid,
}

/// Fails the jobs whose messages of `stage` run out of deliveries, until `shutdown`.
pub(crate) async fn watch(
    pipeline: Pipeline,
    stage: Stage,
    on_give_up: fn(&mut JobRecord, &str),
    shutdown: CancellationToken,
) {
    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
        proto_msgs::PIPELINE_STREAM,
        stage.consumer_name()
    );
    let subscribed = pipeline
        .client()
        .queue_subscribe(subject, stage.consumer_name())
        .await;
    let mut advisories = match subscribed {
        Ok(subscriber) => subscriber,
        Err(err) => {
            let error = ErrorChain(&err);
            return error!(%stage, %error, "cannot watch max-delivery advisories");
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
        match serde_json::from_slice::<Advisory>(&advisory.payload) {
            Ok(advisory) => give_up(&pipeline, stage, on_give_up, &advisory).await,
            Err(err) => warn!(stage = %stage, error = %err, "unreadable max-delivery advisory"),
        }
    }
}

/// Fails the job of the message the advisory names, then removes the message.
async fn give_up(
    pipeline: &Pipeline,
    stage: Stage,
    on_give_up: fn(&mut JobRecord, &str),
    advisory: &Advisory,
) {
    let sequence = advisory.stream_seq;
    let stream = match pipeline
        .jetstream()
        .get_stream(proto_msgs::PIPELINE_STREAM)
        .await
    {
        Ok(stream) => stream,
        Err(err) => {
            let error = ErrorChain(&err);
            return warn!(%stage, %error, "cannot read the stream for an advisory");
        }
    };
    let Ok(message) = stream.get_raw_message(sequence).await else {
        // Already removed (acked or terminated meanwhile).
        return;
    };
    let job_id = match proto_msgs::decode::<JobRef>(&message.payload) {
        Ok(job) => job.job_id,
        // Names no job to fail; nobody can ever handle it.
        Err(_) => return remove(&stream, sequence, stage).await,
    };
    let reason = format!(
        "{stage} failed after {} attempts: {}",
        advisory.deliveries,
        last_error(pipeline, job_id, stage).await
    );
    error!(stage = %stage, job_id = %job_id, reason = %reason, "job failed: out of deliveries");
    let job = JobLifecycle {
        pipeline,
        job_id,
        stage,
        on_give_up,
    };
    if job.fail(reason).await == Settle::Term {
        remove(&stream, sequence, stage).await;
    }
}

/// The error last recorded for `stage` on the job, or what the advisory itself tells.
async fn last_error(pipeline: &Pipeline, job_id: Uuid, stage: Stage) -> String {
    let record = pipeline.jobs().get(job_id).await.ok().flatten();
    record
        .and_then(|record| record.stages.get(&stage)?.last_error.clone())
        .unwrap_or_else(|| "the stage stopped responding".to_owned())
}

async fn remove(stream: &async_nats::jetstream::stream::Stream, sequence: u64, stage: Stage) {
    if let Err(err) = stream.delete_message(sequence).await {
        let error = ErrorChain(&err);
        warn!(%stage, sequence, %error, "cannot remove an undeliverable message");
    }
}
