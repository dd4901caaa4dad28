//! Connection and topology: the work stream, one durable pull consumer per stage, the events
//! stream and the job bucket, all created idempotently so that every process may start first.
//!
//! Written for nats-server 2.9 as well as newer servers: one `filter_subject` per consumer (2.9
//! silently ignores `filter_subjects`), bucket-wide `max_age` (no per-message TTL).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, kv, stream};
use futures::TryStreamExt as _;
use proto_msgs::{
    CodecError, DeadLetter, EncodedMessage, InputError, JobRecord, ModelName, PipelineMessage,
    Queue, Stage,
};
use tracing::{info, warn};

use crate::connection::connect_with_retry;
use crate::error_chain::{BoxError, ErrorChain};
use crate::{
    EventPublisher, IdempotencyKeys, JobStore, JobStoreError, NatsAuth, StoredEvent, trace_context,
};

/// A JetStream operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot connect to NATS at {url}")]
    Connect {
        /// NATS_URL, without credentials.
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// A setting the connection cannot use (a server address, a credentials file).
    #[error("{0}")]
    Config(String),
    #[error("cannot set up JetStream {what}")]
    Setup {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("cannot publish to {subject}")]
    Publish {
        subject: String,
        #[source]
        source: BoxError,
    },
    #[error("JetStream request failed: {what}")]
    Request {
        what: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("NATS connection is {0}")]
    Disconnected(async_nats::connection::State),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    JobStore(#[from] JobStoreError),
    #[error(transparent)]
    Input(#[from] InputError),
}

impl PipelineError {
    pub(crate) fn publish(subject: impl Into<String>, source: impl Into<BoxError>) -> Self {
        PipelineError::Publish {
            subject: subject.into(),
            source: source.into(),
        }
    }
    fn setup(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        PipelineError::Setup {
            what: what.into(),
            source: source.into(),
        }
    }
    pub(crate) fn request(what: &'static str, source: impl Into<BoxError>) -> Self {
        PipelineError::Request {
            what,
            source: source.into(),
        }
    }
}

/// How the pipeline is laid out on the server.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// NATS_URL: one server, or several separated by commas.
    pub nats_url: String,
    /// Credentials and TLS (NATS_CREDS, NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CA,
    /// NATS_CERT/NATS_KEY).
    pub auth: NatsAuth,
    /// NATS_REPLICAS: copies of every stream, consumer and bucket kept by a cluster; ones made
    /// with another number are updated to it. `None`: new ones get 1, existing ones keep theirs
    /// (a process started without the setting never scales a cluster's streams down).
    pub replicas: Option<usize>,
    /// Name this client shows in the server's connection list.
    pub client_name: String,
    /// How long the server waits for an ack (or an in-progress ack) before redelivering.
    pub ack_wait: Duration,
    /// Failed tries of one stage before the job is failed and its message dead-lettered
    /// (JOB_MAX_ATTEMPTS). Counted on the job record by the stages, not by the server: a message
    /// handed back by a process shutting down is not a failed try.
    pub max_attempts: u32,
    /// How long a finished job is kept (JOB_CLEANUP_DAYS): the API's janitor removes its record,
    /// events and files then. Events, the submissions index and dead letters also expire a day
    /// after that on the server, in case no janitor runs; job records do not (a job may wait
    /// in a queue for longer).
    pub retention: Duration,
    /// How long a connection attempt may keep retrying at start-up before giving up.
    pub connect_timeout: Duration,
    /// The Whisper models whose pools this process declares (WHISPER_MODELS): their consumers
    /// are made at start-up, so that a job for one of them is accepted (and waits) even while
    /// no transcriber of that pool runs, as when an autoscaler has scaled it to zero.
    pub models: Vec<ModelName>,
    /// The model of a job that names none (WHISPER_DEFAULT_MODEL); its pool is always
    /// declared.
    pub default_model: ModelName,
}

impl PipelineSettings {
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            auth: NatsAuth::default(),
            replicas: None,
            client_name: "jetscribe".to_owned(),
            ack_wait: Duration::from_secs(60),
            max_attempts: 5,
            retention: Duration::from_secs(7 * 24 * 3600),
            connect_timeout: Duration::from_secs(30),
            models: Vec::new(),
            default_model: ModelName::parse(DEFAULT_MODEL).expect("a valid model name"),
        }
    }

    /// Every queue this process declares: one per stage, one per model pool of a stage routed
    /// by model (the default model's among them).
    pub fn queues(&self) -> Vec<Queue> {
        let mut models = vec![&self.default_model];
        models.extend(self.models.iter().filter(|m| **m != self.default_model));
        Stage::ALL
            .into_iter()
            .flat_map(|stage| match stage.is_routed_by_model() {
                true => models
                    .iter()
                    .map(|model| Queue::for_message(stage, Some(model), model))
                    .collect(),
                false => vec![Queue::for_message(stage, None, &self.default_model)],
            })
            .collect()
    }
}

/// The default model's name when none is configured.
pub const DEFAULT_MODEL: &str = "base";

/// Tries at setting up the topology before giving up (about 10 s of back-off in all).
const SETUP_ATTEMPTS: u32 = 8;

/// One job's stored events, then its live ones ([`Pipeline::follow_job_events`]).
pub type JobEvents = futures::stream::BoxStream<'static, Result<StoredEvent, PipelineError>>;

/// Queue figures of one stage (or one model pool of it), for `/jobs/processing` and `/models`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageQueue {
    pub stage: Stage,
    /// The model pool, for a stage routed by model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelName>,
    /// Messages waiting for a worker.
    pub pending: u64,
    /// Messages delivered to a worker and not yet acknowledged.
    pub in_progress: usize,
    /// Pull requests waiting on the server: idle workers of this stage.
    pub waiting_workers: usize,
}

/// A connected, set-up pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    client: async_nats::Client,
    js: jetstream::Context,
    jobs: JobStore,
    idempotency: IdempotencyKeys,
    events: EventPublisher,
    settings: PipelineSettings,
}

impl Pipeline {
    /// Connects (retrying with backoff until `connect_timeout`) and makes sure the streams,
    /// consumers and bucket exist.
    pub async fn connect(settings: PipelineSettings) -> Result<Self, PipelineError> {
        let client = connect_with_retry(&settings).await?;
        let js = jetstream::new(client.clone());
        // Processes of every stage start together and set up the same streams at once; the
        // server may then answer some of these requests late. Setup is idempotent: try again.
        let mut attempt = 1;
        let (kv, idempotency) = loop {
            match ensure_topology(&js, &settings).await {
                Ok(buckets) => break buckets,
                Err(err) if attempt < SETUP_ATTEMPTS => {
                    let error = ErrorChain(&err);
                    warn!(%error, attempt, "JetStream setup not done yet; retrying");
                    tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        };
        Ok(Self {
            client,
            jobs: JobStore::new(kv),
            idempotency: IdempotencyKeys::new(idempotency),
            events: EventPublisher::new(js.clone()),
            js,
            settings,
        })
    }

    pub fn jobs(&self) -> &JobStore {
        &self.jobs
    }

    pub fn events(&self) -> &EventPublisher {
        &self.events
    }

    pub fn idempotency_keys(&self) -> &IdempotencyKeys {
        &self.idempotency
    }

    /// One job's events: the stored history (after `after_sequence`, or from the start), then
    /// live, for as long as the returned stream is polled.
    pub async fn follow_job_events(
        &self,
        job_id: uuid::Uuid,
        after_sequence: Option<u64>,
    ) -> Result<JobEvents, PipelineError> {
        let events = crate::events::follow_job(&self.js, job_id, after_sequence).await?;
        Ok(Box::pin(events))
    }

    /// The stream sequence of the last event stored for `job_id`.
    pub async fn last_event_sequence(
        &self,
        job_id: uuid::Uuid,
    ) -> Result<Option<u64>, PipelineError> {
        crate::events::last_sequence(&self.js, job_id).await
    }

    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Publishes a message to its stage with `Nats-Msg-Id` = [`PipelineMessage::message_id`] (so
    /// that a retried publish is stored once) and the current trace context; returns once
    /// JetStream stored it.
    pub async fn publish<M: PipelineMessage>(&self, message: &M) -> Result<(), PipelineError> {
        self.publish_encoded(&EncodedMessage::of(message)?).await
    }

    /// Queues a submitted job for the first stage, with a message built from its record.
    pub async fn submit(&self, record: &JobRecord) -> Result<(), PipelineError> {
        self.publish_encoded(&Stage::FIRST.input_for(record)?).await
    }

    /// [`publish`](Self::publish) for a message already encoded.
    pub async fn publish_encoded(&self, message: &EncodedMessage) -> Result<(), PipelineError> {
        let mut headers = message_id_header(&message.message_id);
        trace_context::inject_current(&mut headers);
        let queue = Queue::for_message(
            message.stage,
            message.model.as_ref(),
            &self.settings.default_model,
        );
        publish_stored(&self.js, queue.subject(), headers, message.payload.clone()).await
    }

    /// Stores `letter` in the dead-letter stream (once per job and stage: `Nats-Msg-Id`).
    pub async fn publish_dead_letter(&self, letter: &DeadLetter) -> Result<(), PipelineError> {
        let subject = proto_msgs::dead_letter_subject(letter.job_id);
        let headers = message_id_header(&format!("{}:{}:dead", letter.job_id, letter.stage));
        publish_stored(&self.js, subject, headers, proto_msgs::encode(letter)?).await
    }

    /// The last dead letter of `job_id`, if the pipeline gave up on one of its messages.
    pub async fn dead_letter(
        &self,
        job_id: uuid::Uuid,
    ) -> Result<Option<DeadLetter>, PipelineError> {
        let stream = self
            .stream(
                proto_msgs::DEAD_LETTER_STREAM,
                "reading the dead-letter stream",
            )
            .await?;
        let subject = proto_msgs::dead_letter_subject(job_id);
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(Some(proto_msgs::decode(&message.payload)?)),
            Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(PipelineError::request("reading a dead letter", err)),
        }
    }

    /// The stream `name`; `doing` says what for, in its error.
    pub(crate) async fn stream(
        &self,
        name: impl Into<String>,
        doing: &'static str,
    ) -> Result<jetstream::stream::Stream, PipelineError> {
        self.js
            .get_stream(name.into())
            .await
            .map_err(|err| PipelineError::request(doing, err))
    }

    /// The consumer of `queue`, made if it is missing (a transcriber started with a model no
    /// other process declared).
    pub(crate) async fn consumer(
        &self,
        queue: &Queue,
    ) -> Result<consumer::Consumer<consumer::pull::Config>, PipelineError> {
        let stream = self
            .stream(proto_msgs::PIPELINE_STREAM, "reading the work stream")
            .await?;
        let config = consumer_config(queue, &self.settings);
        ensure_consumer(&stream, config, self.settings.replicas).await?;
        stream
            .get_consumer(&queue.consumer_name())
            .await
            .map_err(|err| PipelineError::setup(format!("consumer {}", queue.consumer_name()), err))
    }

    /// Pending and in-flight messages of each stage, and of each model pool of a stage routed
    /// by model (every pool any process declared).
    pub async fn queues(&self) -> Result<Vec<StageQueue>, PipelineError> {
        let stream = self
            .stream(proto_msgs::PIPELINE_STREAM, "reading the work stream")
            .await?;
        let reading = |err| PipelineError::request("reading the consumers", err);
        let consumers: Vec<consumer::Info> =
            stream.consumers().try_collect().await.map_err(reading)?;
        let mut queues: Vec<StageQueue> = consumers
            .iter()
            .filter_map(|info| {
                let queue = queue_of_consumer(info)?;
                Some(StageQueue {
                    stage: queue.stage,
                    model: queue.model,
                    pending: info.num_pending,
                    in_progress: info.num_ack_pending,
                    waiting_workers: info.num_waiting,
                })
            })
            .collect();
        queues.sort_by(|a, b| (a.stage, &a.model).cmp(&(b.stage, &b.model)));
        Ok(queues)
    }

    /// Sets the queue gauges (`jetscribe_queue_*`) to each queue's figures now: called before
    /// the metrics are read, so that a scrape sees what JetStream holds.
    pub async fn refresh_queue_metrics(&self) -> Result<(), PipelineError> {
        let metrics = jetscribe_metrics::metrics();
        let queues = self.queues().await?;
        // A queue removed since the last scrape (a pool's consumer deleted) is no longer shown.
        metrics.queue_waiting.clear();
        metrics.queue_in_progress.clear();
        metrics.queue_idle_workers.clear();
        for queue in queues {
            let labels = jetscribe_metrics::QueueLabels {
                stage: queue.stage.name().to_owned(),
                model: queue.model.map(String::from).unwrap_or_default(),
            };
            let set = |family: &jetscribe_metrics::GaugeFamily<_>, value: u64| {
                family
                    .get_or_create(&labels)
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            };
            set(&metrics.queue_waiting, queue.pending);
            set(&metrics.queue_in_progress, queue.in_progress as u64);
            set(&metrics.queue_idle_workers, queue.waiting_workers as u64);
        }
        Ok(())
    }

    /// The model pools of the transcriber: every pool a process declared, with its queue.
    pub async fn model_pools(&self) -> Result<Vec<StageQueue>, PipelineError> {
        let mut queues = self.queues().await?;
        queues.retain(|queue| queue.model.is_some());
        Ok(queues)
    }

    /// Whether the client is connected to a NATS server now.
    pub fn check_connection(&self) -> Result<(), PipelineError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(PipelineError::Disconnected(state)),
        }
    }

    /// Whether JetStream answers: a stream info request on the work stream (the account info
    /// request's 2.9 reply is not parsed by async-nats).
    pub async fn check_jetstream(&self) -> Result<(), PipelineError> {
        self.js
            .get_stream(proto_msgs::PIPELINE_STREAM)
            .await
            .map(|_| ())
            .map_err(|err| PipelineError::request("reading the work stream", err))
    }
}

/// Headers with `Nats-Msg-Id` = `message_id`: within the stream's duplicate window, a message
/// published again with the same id (a retried publish whose ack was lost) is stored once.
pub(crate) fn message_id_header(message_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(proto_msgs::MSG_ID_HEADER, message_id);
    headers
}

/// Publishes `payload` to `subject` and returns once JetStream has stored it (its publish ack):
/// a message whose publish returned is never lost.
pub(crate) async fn publish_stored(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Vec<u8>,
) -> Result<(), PipelineError> {
    js.publish_with_headers(subject.clone(), headers, payload.into())
        .await
        .map_err(|err| PipelineError::publish(&subject, err))?
        .await
        .map_err(|err| PipelineError::publish(&subject, err))?;
    Ok(())
}

/// Makes sure the streams, the consumers and the bucket exist, with this process's settings
/// (JOB_ACK_WAIT, JOB_CLEANUP_DAYS): ones made by an earlier start with other settings are
/// updated, so that the server's redelivery follows the heartbeats this process sends and
/// retention follows the current setting. What already matches is only read: every process
/// of a deployment starts at once, and a burst of updates makes the server time out. Returns
/// the job bucket and the idempotency bucket.
async fn ensure_topology(
    js: &jetstream::Context,
    settings: &PipelineSettings,
) -> Result<(kv::Store, kv::Store), PipelineError> {
    let replicas = settings.replicas;
    let work_stream = ensure_stream(js, work_stream_config(settings), replicas).await?;
    for queue in settings.queues() {
        ensure_consumer(&work_stream, consumer_config(&queue, settings), replicas).await?;
    }
    move_unrouted_messages(js, &work_stream, &settings.default_model).await?;
    ensure_stream(js, events_stream_config(settings), replicas).await?;
    ensure_stream(js, submissions_stream_config(settings), replicas).await?;
    ensure_stream(js, dead_letter_stream_config(settings), replicas).await?;
    // The buckets' streams are made directly: async-nats's `create_key_value` first asks for the
    // account info, whose 2.9 reply it cannot parse.
    let mut buckets = Vec::new();
    for (bucket, max_age) in [
        // Records never expire on the server: a job waiting in a queue for longer than the
        // retention must keep its record. The janitor removes finished ones.
        (proto_msgs::JOBS_BUCKET, Duration::ZERO),
        (proto_msgs::IDEMPOTENCY_BUCKET, IDEMPOTENCY_KEPT),
    ] {
        ensure_stream(js, bucket_config(bucket, max_age, settings), replicas).await?;
        let store = js
            .get_key_value(bucket)
            .await
            .map_err(|err| PipelineError::setup(format!("bucket {bucket}"), err))?;
        buckets.push(store);
    }
    let (Some(idempotency), Some(jobs)) = (buckets.pop(), buckets.pop()) else {
        unreachable!("two buckets were made");
    };
    info!("JetStream topology ready");
    Ok((jobs, idempotency))
}

/// The stream of `config`: made if missing, updated if its retention, duplicate window or
/// replicas differ.
async fn ensure_stream(
    js: &jetstream::Context,
    mut config: stream::Config,
    replicas: Option<usize>,
) -> Result<jetstream::stream::Stream, PipelineError> {
    let name = config.name.clone();
    let setup = |err| PipelineError::setup(name.clone(), err);
    let stream = js
        .get_or_create_stream(config.clone())
        .await
        .map_err(|err| setup(Box::new(err)))?;
    let current = &stream.cached_info().config;
    if replicas.is_none() {
        config.num_replicas = current.num_replicas;
    }
    if current.max_age != config.max_age
        || current.duplicate_window != config.duplicate_window
        || current.num_replicas != config.num_replicas
    {
        js.update_stream(config)
            .await
            .map_err(|err| setup(Box::new(err)))?;
        info!(stream = %name, "stream updated to the current settings");
    }
    Ok(stream)
}

/// The consumer of `config`: made if missing, updated if its ack wait, deliveries or replicas
/// differ.
async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    mut config: consumer::pull::Config,
    replicas: Option<usize>,
) -> Result<(), PipelineError> {
    let name = config.durable_name.clone().unwrap_or_default();
    let setup = |err| PipelineError::setup(format!("consumer {name}"), err);
    let consumer = stream
        .get_or_create_consumer(&name, config.clone())
        .await
        .map_err(|err| setup(Box::new(err)))?;
    let current = &consumer.cached_info().config;
    if replicas.is_none() {
        config.num_replicas = current.num_replicas;
    }
    if current.ack_wait != config.ack_wait
        || current.max_deliver != config.max_deliver
        || current.num_replicas != config.num_replicas
    {
        stream
            .create_consumer(config)
            .await
            .map_err(|err| setup(Box::new(err)))?;
        info!(consumer = %name, "consumer updated to the current settings");
    }
    Ok(())
}

/// The queue a consumer of the work stream serves, from its filter subject; `None` for a
/// consumer that is none of the pipeline's (an operator's, or one from before routing).
fn queue_of_consumer(info: &consumer::Info) -> Option<Queue> {
    let subject = &info.config.filter_subject;
    Stage::ALL.into_iter().find_map(|stage| {
        let queue = match stage.is_routed_by_model() {
            true => Queue {
                stage,
                model: Some(Queue::pool_of(stage, subject)?),
            },
            false if *subject == stage.subject() => Queue { stage, model: None },
            false => return None,
        };
        (queue.consumer_name() == info.name).then_some(queue)
    })
}

/// Messages a version without model routing queued on a routed stage's own subject
/// (`jetscribe.pipeline.transcribe`) are moved to the default model's pool, and that stage's
/// old consumer is removed: an upgrade loses no queued job. Several processes may do this at
/// once: a moved message keeps one message id, so it is stored once. (A message an earlier
/// transcriber is working on would be moved too: README's upgrade note says to stop the
/// earlier processes first.)
async fn move_unrouted_messages(
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    default_model: &ModelName,
) -> Result<(), PipelineError> {
    for stage in Stage::ALL.into_iter().filter(|s| s.is_routed_by_model()) {
        // Scanned at every start (one request when there is nothing), not only while the old
        // consumer exists: an earlier process started later may still have queued some.
        let pool = Queue::for_message(stage, None, default_model);
        let mut moved = 0;
        let mut sequence = 1;
        loop {
            let message = match stream
                .get_first_raw_message_by_subject(stage.subject(), sequence)
                .await
            {
                Ok(message) => message,
                Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
                Err(err) => return Err(PipelineError::setup("an unrouted message", err)),
            };
            let id = format!("{}:{}:routed", stage.name(), message.sequence);
            let payload = message.payload.to_vec();
            publish_stored(js, pool.subject(), message_id_header(&id), payload).await?;
            if let Err(err) = stream.delete_message(message.sequence).await {
                warn!(error = %ErrorChain(&err), "an unrouted message moved but not removed");
            }
            moved += 1;
            sequence = message.sequence + 1;
        }
        match stream.delete_consumer(&stage.consumer_name()).await {
            Ok(_) => info!(stage = %stage, "the unrouted consumer is removed"),
            Err(err) if is_consumer_not_found(&err) => {}
            Err(err) => warn!(error = %ErrorChain(&err), "the unrouted consumer is left"),
        }
        if moved > 0 {
            info!(stage = %stage, moved, pool = %pool, "unrouted messages moved to the default pool");
        }
    }
    Ok(())
}

/// Whether removing a consumer failed because there is none.
fn is_consumer_not_found(err: &jetstream::stream::ConsumerError) -> bool {
    matches!(
        err.kind(),
        jetstream::stream::ConsumerErrorKind::JetStream(error)
            if error.kind() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
    )
}

/// How long an idempotency key names its job.
const IDEMPOTENCY_KEPT: Duration = Duration::from_secs(24 * 3600);

/// A message retried by a stage is published with the same Nats-Msg-Id; the duplicate window
/// must outlast a stage's retries.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 3600);

fn work_stream_config(settings: &PipelineSettings) -> stream::Config {
    stream::Config {
        name: proto_msgs::PIPELINE_STREAM.to_owned(),
        num_replicas: settings.replicas.unwrap_or(1),
        subjects: vec![format!("{}.>", proto_msgs::PIPELINE_SUBJECT_PREFIX)],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// Messages that may wait for their due time at once, across all processes of a stage that
/// holds them (webhook retries).
const MAX_WAITING_MESSAGES: i64 = 1_000_000;

fn consumer_config(queue: &Queue, settings: &PipelineSettings) -> consumer::pull::Config {
    let stage = queue.stage;
    consumer::pull::Config {
        durable_name: Some(queue.consumer_name()),
        filter_subject: queue.subject(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        // As many copies as its stream: a consumer left on one server loses its place when
        // that server dies.
        num_replicas: settings.replicas.unwrap_or(1),
        // Unlimited: the stages count failed tries on the job record and give up themselves.
        // A server-side limit also counts hand-backs on shutdown, and the job of a message it
        // drops is left unfinished when no process of the stage hears the advisory.
        max_deliver: -1,
        // A webhook retry waits for its time as an unacknowledged message (a nak with a delay):
        // with the server's default of 1000, a receiver that is down for 1000 jobs would stop
        // the notifier from completing any other job.
        max_ack_pending: if stage.holds_messages_until_due() {
            MAX_WAITING_MESSAGES
        } else {
            0
        },
        ..Default::default()
    }
}

fn events_stream_config(settings: &PipelineSettings) -> stream::Config {
    stream::Config {
        name: proto_msgs::EVENTS_STREAM.to_owned(),
        num_replicas: settings.replicas.unwrap_or(1),
        subjects: vec![format!("{}.*", proto_msgs::EVENTS_SUBJECT_PREFIX)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: settings.retention + SERVER_SIDE_GRACE,
        // A job's final event, published again by a retried stage, is dropped within this.
        duplicate_window: DUPLICATE_WINDOW.min(settings.retention),
        ..Default::default()
    }
}

/// The index of submissions: kept as long as the records it points to.
fn submissions_stream_config(settings: &PipelineSettings) -> stream::Config {
    stream::Config {
        name: proto_msgs::SUBMISSIONS_STREAM.to_owned(),
        num_replicas: settings.replicas.unwrap_or(1),
        subjects: vec![format!("{}.*", proto_msgs::SUBMISSIONS_SUBJECT_PREFIX)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: settings.retention + SERVER_SIDE_GRACE,
        // A submission indexed again (a retried queueing) is dropped within this.
        duplicate_window: DUPLICATE_WINDOW.min(settings.retention),
        ..Default::default()
    }
}

/// Dead letters, kept as long as job records.
fn dead_letter_stream_config(settings: &PipelineSettings) -> stream::Config {
    stream::Config {
        name: proto_msgs::DEAD_LETTER_STREAM.to_owned(),
        num_replicas: settings.replicas.unwrap_or(1),
        subjects: vec![format!("{}.*", proto_msgs::DEAD_LETTER_SUBJECT_PREFIX)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: settings.retention + SERVER_SIDE_GRACE,
        duplicate_window: DUPLICATE_WINDOW.min(settings.retention),
        ..Default::default()
    }
}

/// How much longer than the retention the server keeps events, index entries and dead letters:
/// the janitor removes a job's events when it forgets the job; this only bounds what is left
/// when no janitor runs.
const SERVER_SIDE_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The stream behind a KV bucket, as async-nats's `create_key_value` would make it.
fn bucket_config(bucket: &str, max_age: Duration, settings: &PipelineSettings) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        num_replicas: settings.replicas.unwrap_or(1),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_bytes: -1,
        max_message_size: -1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        // What the server sets when none is given: stated, so that the comparison at start-up
        // finds it unchanged.
        duplicate_window: match max_age.is_zero() {
            true => Duration::from_secs(120),
            false => Duration::from_secs(120).min(max_age),
        },
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}
