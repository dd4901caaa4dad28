//! Job events on `jetscribe.events.<job_id>`, stored in the `JETSCRIBE_EVENTS` stream so that a
//! late subscriber can replay a job's history.

use async_nats::jetstream;
use proto_msgs::{EventKind, JobEvent, JobRecord, JobStatus, Stage};
use time::OffsetDateTime;

use crate::PipelineError;
use crate::pipeline::{message_id_header, publish_stored};

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
        // A job ends once: a final event published again (a retried stage) is dropped by the
        // server.
        let headers = match event.final_message_id() {
            Some(message_id) => message_id_header(&message_id),
            None => async_nats::HeaderMap::new(),
        };
        let subject = proto_msgs::events_subject(event.job_id);
        publish_stored(&self.js, subject, headers, payload).await
    }

    /// Publishes the final event of a job that has ended (`completed` or `failed`, as its record
    /// says) unless it is the last event stored: a stage that died, or failed to publish, after
    /// writing the final record left the job's followers waiting for it.
    pub async fn publish_end_if_missing(&self, record: &JobRecord) -> Result<(), PipelineError> {
        let kind = match record.status {
            JobStatus::Completed => EventKind::Completed,
            JobStatus::Failed => EventKind::Failed,
            JobStatus::Cancelled => EventKind::Cancelled,
            JobStatus::Pending | JobStatus::Processing => return Ok(()),
        };
        if let Some(last) = last_event(&self.js, record.job_id).await? {
            let last: JobEvent = proto_msgs::decode(&last.payload)?;
            if last.kind.is_final() {
                return Ok(());
            }
        }
        self.publish_for(record, kind, None).await
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
            eta_s: record.eta_s.filter(|_| kind == EventKind::Progress),
            duration_s: record.duration_s,
        })
        .await
    }
}

/// A job event as stored in `JETSCRIBE_EVENTS`.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The event's sequence in the stream: increasing, so a reader that stopped after one
    /// resumes after it.
    pub sequence: u64,
    pub event: JobEvent,
    /// Events of this job stored after this one when it was read: 0 at the live edge.
    pub pending: u64,
}

/// Follows one job's events: its stored history from the start (or after `after_sequence`), then
/// live. Ordered consumer with a single `filter_subject` (nats-server 2.9 ignores
/// `filter_subjects`); the stream ends only when the caller drops it.
pub async fn follow_job(
    js: &jetstream::Context,
    job_id: uuid::Uuid,
    after_sequence: Option<u64>,
) -> Result<
    impl futures::Stream<Item = Result<StoredEvent, PipelineError>> + Send + use<>,
    PipelineError,
> {
    use futures::StreamExt as _;
    use jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};

    let stream = events_stream(js).await?;
    let deliver_policy = match after_sequence {
        Some(sequence) => DeliverPolicy::ByStartSequence {
            start_sequence: sequence.saturating_add(1),
        },
        None => DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: proto_msgs::events_subject(job_id),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|err| PipelineError::request("creating an event consumer", err))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|err| PipelineError::request("reading events", err))?;
    Ok(messages.map(|message| {
        let message = message.map_err(|err| PipelineError::request("reading an event", err))?;
        let info = message
            .info()
            .map_err(|err| PipelineError::request("reading an event's metadata", err))?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        let event = proto_msgs::decode(&message.payload)?;
        Ok(StoredEvent {
            sequence,
            event,
            pending,
        })
    }))
}

/// The stream sequence of the last event stored for `job_id`, if any.
pub async fn last_sequence(
    js: &jetstream::Context,
    job_id: uuid::Uuid,
) -> Result<Option<u64>, PipelineError> {
    Ok(last_event(js, job_id)
        .await?
        .map(|message| message.sequence))
}

/// The last event stored for `job_id`, raw, if any.
async fn last_event(
    js: &jetstream::Context,
    job_id: uuid::Uuid,
) -> Result<Option<jetstream::message::StreamMessage>, PipelineError> {
    let stream = events_stream(js).await?;
    match stream
        .get_last_raw_message_by_subject(&proto_msgs::events_subject(job_id))
        .await
    {
        Ok(message) => Ok(Some(message)),
        Err(err) if err.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            Ok(None)
        }
        Err(err) => Err(PipelineError::request("reading a job's last event", err)),
    }
}

async fn events_stream(
    js: &jetstream::Context,
) -> Result<jetstream::stream::Stream, PipelineError> {
    js.get_stream(proto_msgs::EVENTS_STREAM)
        .await
        .map_err(|err| PipelineError::request("reading the events stream", err))
}
