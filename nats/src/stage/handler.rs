//! What a stage implements: [`StageHandler`], the [`Outcome`] it returns and the
//! [`StageError`] it fails with.

use std::future::Future;
use std::time::Duration;

use proto_msgs::{EncodedMessage, JobRecord, ModelName, PipelineMessage};

use crate::error_chain::{BoxError, ErrorChain, is_outage};
use crate::stage::JobContext;

/// One stage of the pipeline: handles one message at a time (the loop runs several at once).
pub trait StageHandler: Send + Sync + 'static {
    /// The message of this stage's subject.
    type Input: PipelineMessage;

    fn handle(
        &self,
        input: Self::Input,
        job: &JobContext,
    ) -> impl Future<Output = Result<Outcome, StageError>> + Send;

    /// What else changes on the record of a job when this stage gives up on its message (a
    /// permanent error, or out of deliveries), besides failing the job. The notifier marks the
    /// webhook delivery failed.
    fn on_give_up(_record: &mut JobRecord, _reason: &str) {}

    /// The model pool this handler serves, for a stage routed by model (a transcriber loads
    /// one model per handler); `None`: the deployment's default model there.
    fn model(&self) -> Option<&ModelName> {
        None
    }
}

/// What a stage did with a message.
#[derive(Debug)]
pub enum Outcome {
    /// The stage is done with the job and recorded its output on the job record: the loop hands
    /// the job to the next stage with a message built from that record, then acks.
    Forward,
    /// The job needs nothing more from the pipeline (the stage published its end); ack.
    Done,
    /// The stage must see the job again later: store this new message of the same stage (which
    /// says when it is due), then ack the one handled. Each such message starts with a fresh
    /// delivery count, so a stage may wait any number of times (webhook retries).
    Reschedule(EncodedMessage),
    /// The message arrived before it was due: deliver the same message again after this delay.
    TooEarly(Duration),
}

impl Outcome {
    /// [`Outcome::Reschedule`] with `message` encoded.
    pub fn reschedule<M: PipelineMessage>(message: &M) -> Result<Self, StageError> {
        EncodedMessage::of(message)
            .map(Outcome::Reschedule)
            .map_err(|err| StageError::transient("encoding the next attempt", err))
    }
}

/// Why a stage could not handle a message.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The job cannot succeed (bad input): fail it with this message, which users read.
    #[error("{0}")]
    Permanent(String),
    /// Something outside the job went wrong (store, network): try again later; counted against
    /// the job's tries.
    #[error("{context}")]
    Transient {
        /// What the stage was doing: `reading the transcript`.
        context: &'static str,
        #[source]
        source: BoxError,
    },
    /// A service the stage needs is down (the object store unreachable, read-only or full):
    /// not the job's fault. The try is made again with backoff for as long as the outage
    /// lasts, and never counts against the job's tries.
    #[error("{context}")]
    Unavailable {
        /// What the stage was doing: `writing the audio blob`.
        context: &'static str,
        #[source]
        source: BoxError,
    },
}

impl StageError {
    /// Something outside the job went wrong while the stage was doing `context`: a
    /// [`StageError::Transient`] error, or [`StageError::Unavailable`] when one of its causes
    /// says that a service is down ([`is_outage`]).
    pub fn transient(context: &'static str, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        if is_outage(source.as_ref()) {
            StageError::Unavailable { context, source }
        } else {
            StageError::Transient { context, source }
        }
    }

    /// A handler that panicked: a transient error whose cause is the panic's message.
    pub fn from_panic(panic: Box<dyn std::any::Any + Send>) -> Self {
        let message = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
            (Some(text), _) => (*text).to_owned(),
            (_, Some(text)) => text.clone(),
            _ => "a panic without a message".to_owned(),
        };
        StageError::transient("handling the job (the stage panicked)", message)
    }

    /// The error with its causes on one line, for the log.
    pub fn reason(&self) -> String {
        ErrorChain(self).to_string()
    }

    /// What the job's owner reads (`error_message`, webhooks, `/status`): a permanent error's
    /// reason, which is written for them; of a transient one only what the stage was doing, as
    /// its causes (object-store paths, OS errors, addresses) are the operator's business and go
    /// to the log with the job id.
    pub fn client_message(&self) -> String {
        match self {
            StageError::Permanent(reason) => reason.clone(),
            StageError::Transient { context, .. } => format!("internal error ({context})"),
            StageError::Unavailable { context, .. } => {
                format!("storage or network unavailable ({context}); waiting for it")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_caused_by_a_service_being_down_is_an_outage_not_a_failure() {
        use std::io::{Error, ErrorKind};
        let cases = [
            (Error::from(ErrorKind::PermissionDenied), true),
            (Error::from(ErrorKind::ConnectionRefused), true),
            (Error::from(ErrorKind::StorageFull), true),
            (Error::new(ErrorKind::ReadOnlyFilesystem, "remounted"), true),
            (Error::from(ErrorKind::NotFound), false),
            (Error::from(ErrorKind::InvalidData), false),
            (Error::other("connection refused"), false),
        ];
        for (cause, outage) in cases {
            let shown = format!("{cause:?}");
            let error = StageError::transient("writing the audio blob", cause);
            assert_eq!(
                matches!(error, StageError::Unavailable { .. }),
                outage,
                "{shown}"
            );
            assert!(error.client_message().contains("(writing the audio blob)"));
        }
        let panicked = StageError::from_panic(Box::new("index out of bounds"));
        assert!(matches!(panicked, StageError::Transient { .. }));
    }
}
