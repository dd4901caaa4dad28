//! Dead letters: a stage message the pipeline gave up on (it failed, panicked or took its
//! process down on every try), kept with the reason in the stream `JETSCRIBE_DLQ` on
//! `jetscribe.dlq.<job_id>`, as long as job records, for an operator to look at.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Stage;

/// The stream of dead letters.
pub const DEAD_LETTER_STREAM: &str = "JETSCRIBE_DLQ";
/// Prefix of its subjects.
pub const DEAD_LETTER_SUBJECT_PREFIX: &str = "jetscribe.dlq";

/// The subject of the dead letters of one job.
pub fn dead_letter_subject(job_id: Uuid) -> String {
    format!("{DEAD_LETTER_SUBJECT_PREFIX}.{job_id}")
}

/// A message given up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub job_id: Uuid,
    /// The stage that gave up.
    pub stage: Stage,
    /// Why, as the job's owner reads it on the failed job.
    pub reason: String,
    /// Tries of the stage, and how many of them failed (errors, panics and crashes).
    pub attempts: u32,
    pub failures: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Where the message was published, and the message itself (MessagePack, as published).
    pub subject: String,
    pub payload: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_names_its_fields_on_the_wire() {
        let letter = DeadLetter {
            job_id: Uuid::nil(),
            stage: Stage::Analyze,
            reason: "analyze failed after 5 attempts: internal error (reading the transcript)"
                .into(),
            attempts: 5,
            failures: 5,
            at: OffsetDateTime::UNIX_EPOCH,
            subject: "jetscribe.pipeline.analyze".into(),
            payload: vec![0x80],
        };
        let bytes = crate::encode(&letter).expect("encodes");
        let back: DeadLetter = crate::decode(&bytes).expect("decodes");
        assert_eq!(back, letter);
        let json = serde_json::to_value(&letter).expect("json");
        assert_eq!(json["stage"], "analyze");
        assert_eq!(
            dead_letter_subject(Uuid::nil()),
            "jetscribe.dlq.00000000-0000-0000-0000-000000000000"
        );
    }
}
