//! Stages and the loop that runs them. A stage only says what to do with one message
//! ([`StageHandler::handle`] returns an [`Outcome`] or a [`StageError`]); the loop alone pulls,
//! acks, naks, terminates, sends in-progress acks, bounds concurrency, keeps the job record's
//! life-cycle around the handler and stops on shutdown. It knows no particular stage: what one
//! needs beyond that is a hook it declares ([`StageHandler::on_give_up`],
//! [`proto_msgs::PipelineMessage::wanted_after_failure`]).
//!
//! - [`handler`]: the trait, its outcomes and errors;
//! - [`context`]: what a handler may do to its job (read the record, update it, report progress);
//! - [`settle`]: what the loop does with a handler's answer (pure rules);
//! - `runner`: the loop;
//! - `lifecycle`: the job record and events around each message (started, forwarded, handed
//!   back, retried, failed, dead-lettered).
//!
//! Guarantees:
//! - a message is acked only after the stage's output is stored by JetStream;
//! - one message is pulled per free slot, so nothing waits in a client buffer past its ack
//!   deadline while another job runs;
//! - tries are counted on the job record: a message handed back on shutdown is not a failed try;
//!   a try whose process died without the job progressing is. A permanent failure, or the
//!   JOB_MAX_ATTEMPTS-th failed try (an error, a panic, a dead process), fails the job with the
//!   reason (and still hands it to the stages that want failed jobs, so that its webhook reports
//!   the failure); a message given up on after failed tries is kept in `JETSCRIBE_DLQ`.

pub mod context;
pub mod handler;
mod lifecycle;
pub(crate) use lifecycle::JobLifecycle;
mod runner;
pub mod settle;

pub use context::JobContext;
pub use handler::{Outcome, StageError, StageHandler};
pub use runner::{StageLoopSettings, run_stage};
