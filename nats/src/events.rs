//! Job events on `jetscribe.events.<job_id>`, stored in the `JETSCRIBE_EVENTS` stream so that a
//! late subscriber can replay a job's history.

use async_nats::jetstream;
use proto_msgs::{EventKind, JobEvent, JobRecord, Stage};
use time::OffsetDateTime;

use crate::PipelineError;

/// Publishes job events and waits for JetStream to store them. Cheap to clone.
#[derive(Clone)]
pub struct EventPublisher {
    js: jetstream::Context,
}

impl EventPublisher {
    pub(crate) fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    pub async fn publish(&self, event: &JobEvent) -> Result<(), PipelineError> {
        let payload = proto_msgs::encode(event)?;
        self.js
            .publish(proto_msgs::events_subject(event.job_id), payload.into())
            .await
            .map_err(PipelineError::publish)?
            .await
            .map_err(PipelineError::publish)?;
        Ok(())
    }

    /// Publishes an event describing `record` as it now is.
    pub async fn publish_for(
        &self,
        record: &JobRecord,
        kind: EventKind,
        stage: Option<Stage>,
    ) -> Result<(), PipelineError> {
        self.publish(&JobEvent {
            job_id: record.job_id,
            kind,
            status: record.status,
            progress: record.progress,
            at: OffsetDateTime::now_utc(),
            stage,
            error_message: record.error_message.clone(),
        })
        .await
    }
}
