//! What the janitor of a deployment (the API process) needs from JetStream: every job record
//! in one pass, the jobs that have a message queued or in flight, and the three remedies: forget
//! an expired job's record and events, queue a lost job again, or fail it.

use std::collections::HashSet;

use async_nats::jetstream::{kv, stream};
use futures::StreamExt;
use futures::stream::BoxStream;
use proto_msgs::{JobRecord, Stage};
use uuid::Uuid;

use crate::stage::JobLifecycle;
use crate::stage::settle::Settle;
use crate::{Pipeline, PipelineError};

impl Pipeline {
    /// Every job record, read in one pass over the bucket (one ordered consumer, the newest
    /// value of each key), so a scan costs one stream read, not one request per job.
    pub async fn scan_jobs(
        &self,
    ) -> Result<BoxStream<'static, Result<JobRecord, PipelineError>>, PipelineError> {
        let mut bucket_stream = self
            .stream(
                format!("KV_{}", proto_msgs::JOBS_BUCKET),
                "reading the job bucket",
            )
            .await?;
        let info = bucket_stream
            .info()
            .await
            .map_err(|err| PipelineError::request("reading the job bucket", err))?;
        if info.state.messages == 0 {
            // An empty bucket sends nothing to a watch, not even an end.
            return Ok(futures::stream::empty().boxed());
        }
        let kv = self.jobs().bucket();
        let watch = kv
            .watch_with_history(">")
            .await
            .map_err(|err| PipelineError::request("scanning the job bucket", err))?;
        // Ends at the newest value there was when the scan began (delta 0).
        let records = futures::stream::unfold((watch, false), |(mut watch, done)| async move {
            if done {
                return None;
            }
            loop {
                let entry = match watch.next().await? {
                    Ok(entry) => entry,
                    Err(err) => {
                        let err = PipelineError::request("scanning the job bucket", err);
                        return Some((Some(Err(err)), (watch, true)));
                    }
                };
                let last = entry.delta == 0;
                if entry.operation != kv::Operation::Put {
                    if last {
                        return None;
                    }
                    continue;
                }
                let record = proto_msgs::decode(&entry.value).map_err(PipelineError::from);
                return Some((Some(record), (watch, last)));
            }
        })
        .filter_map(|item| async move { item });
        Ok(records.boxed())
    }

    /// The jobs that have a stage message stored (queued, in flight, or waiting to be due).
    pub async fn queued_jobs(&self) -> Result<HashSet<Uuid>, PipelineError> {
        let stream = self
            .stream(proto_msgs::PIPELINE_STREAM, "reading the work stream")
            .await?;
        let subjects = format!("{}.>", proto_msgs::PIPELINE_SUBJECT_PREFIX);
        let mut jobs = HashSet::new();
        let mut sequence = 1;
        loop {
            let message = match stream
                .get_first_raw_message_by_subject(&subjects, sequence)
                .await
            {
                Ok(message) => message,
                Err(err) if is_no_message(&err) => return Ok(jobs),
                Err(err) => return Err(PipelineError::request("reading the work stream", err)),
            };
            if let Ok(job) = proto_msgs::decode::<JobRef>(&message.payload) {
                jobs.insert(job.job_id);
            }
            sequence = message.sequence + 1;
        }
    }

    /// Removes a job's record and its events: the job is gone (its files are the caller's).
    /// Its dead letter, if any, expires with the dead-letter stream.
    pub async fn forget_job(&self, job_id: Uuid) -> Result<(), PipelineError> {
        let events = self
            .stream(proto_msgs::EVENTS_STREAM, "reading the events stream")
            .await?;
        events
            .purge()
            .filter(proto_msgs::events_subject(job_id))
            .await
            .map_err(|err| PipelineError::request("removing a job's events", err))?;
        self.jobs().remove(job_id).await?;
        Ok(())
    }

    /// Queues `stage`'s message of a job that no stage holds, built from its record, under a
    /// new message id (the first one may still be in the duplicate window); the record counts
    /// the requeue first, so a job lost again and again is failed, not requeued for ever.
    /// Nothing is done (`None`) if the record changed since `seen` (another janitor requeued
    /// it, a stage moved it on, it was cancelled).
    pub async fn requeue(
        &self,
        seen: &JobRecord,
        stage: Stage,
    ) -> Result<Option<JobRecord>, PipelineError> {
        let counted = self
            .jobs()
            .update_if(seen.job_id, |record| {
                let unchanged = record.updated_at == seen.updated_at && !record.status.is_final();
                if unchanged {
                    record.requeues += 1;
                }
                unchanged
            })
            .await?;
        let Some(record) = counted else {
            return Ok(None);
        };
        let mut message = stage.input_for(&record)?;
        message.message_id = format!("{}:requeue:{}", message.message_id, record.requeues);
        self.publish_encoded(&message).await?;
        Ok(Some(record))
    }

    /// Fails a job that no stage holds, as `stage` would have: `failed` published, the job
    /// handed to the stages that want failed jobs (its webhook).
    pub async fn fail_lost_job(
        &self,
        job_id: Uuid,
        stage: Stage,
        reason: String,
    ) -> Result<(), PipelineError> {
        let job = JobLifecycle {
            pipeline: self,
            job_id,
            stage,
            on_give_up: |_, _| {},
            message: ("", &[]),
        };
        match job.fail(reason, false).await {
            Settle::Term | Settle::Ack | Settle::Leave => Ok(()),
            Settle::Nak(_) => Err(PipelineError::request(
                "failing a lost job",
                "its failure could not be recorded or published",
            )),
        }
    }
}

/// Any pipeline message names its job.
#[derive(serde::Deserialize)]
struct JobRef {
    job_id: Uuid,
}

fn is_no_message(err: &stream::RawMessageError) -> bool {
    err.kind() == stream::LastRawMessageErrorKind::NoMessageFound
}
