//! The only crate that knows JetStream. It owns:
//! - [`Pipeline`]: the connection (to one of NATS_URL's servers, with credentials and TLS,
//!   retried while they start: `connection`), the idempotent creation of the work stream, the
//!   events stream, one durable consumer per stage and the job bucket; publishing to a stage;
//!   dead letters (`JETSCRIBE_DLQ`);
//!   queue statistics and health;
//! - housekeeping: every record in one scan, the jobs with a stored message, forgetting,
//!   requeueing and failing lost jobs (for the API's janitor);
//! - [`Cancellation`]: cancelling a job (record, the stages told, final event, webhook);
//! - [`JobStore`]: job records in the `jetscribe_jobs` bucket, updated by compare-and-set;
//! - [`EventPublisher`]: job events on `jetscribe.events.<job_id>`;
//! - [`stage`]: the [`StageHandler`] trait and the loop that alone acks, naks, heartbeats, limits
//!   concurrency, keeps the job's life-cycle and stops on shutdown;
//! - [`LocalNatsServer`]: a private `nats-server -js` child, for `jetscribe up` and for tests;
//! - [`trace_context`]: the OpenTelemetry context carried in message headers;
//! - [`ErrorChain`]: an error and its causes on one line, as logged and recorded.

mod cancel;
mod connection;
mod error_chain;
mod events;
mod housekeeping;
mod idempotency;
mod jobs;
mod pipeline;
mod redact;
mod server;
pub mod stage;
mod submissions;
pub mod trace_context;

pub use cancel::Cancellation;
pub use connection::{NatsAuth, parse_servers};
pub use error_chain::{BoxError, ErrorChain, is_outage};
pub use events::{EventPublisher, StoredEvent};
pub use idempotency::IdempotencyKeys;
pub use jobs::{JobStore, JobStoreError};
pub use pipeline::{
    DEFAULT_MODEL, JobEvents, Pipeline, PipelineError, PipelineSettings, StageQueue,
};
pub use redact::redact_url;
pub use server::{LocalNatsServer, ServerError};
pub use stage::{JobContext, Outcome, StageError, StageHandler, StageLoopSettings, run_stage};
pub use submissions::{IndexedJob, Submitters};

/// Re-exported so that callers can name client types without depending on async-nats directly.
pub use async_nats;
