//! The index of submitted jobs: one [`Submission`] per job on `jetscribe.submissions.<owner>`
//! in the stream `JETSCRIBE_SUBMISSIONS` (limits retention, kept as long as job records), so
//! that one key's jobs can be listed newest first without reading every job record.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// The stream of the index.
pub const SUBMISSIONS_STREAM: &str = "JETSCRIBE_SUBMISSIONS";
/// Prefix of its subjects.
pub const SUBMISSIONS_SUBJECT_PREFIX: &str = "jetscribe.submissions";

/// A job, as indexed when it is submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub job_id: Uuid,
    /// The name of the key that submitted it; `None` without keys.
    pub owner: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The subject of the jobs of `owner`: its name in hex (key names may hold `.`, which
/// separates subject tokens), or `_` for jobs submitted without a key.
pub fn submissions_subject(owner: Option<&str>) -> String {
    let token = match owner {
        Some(name) => name.bytes().map(|byte| format!("{byte:02x}")).collect(),
        None => "_".to_owned(),
    };
    format!("{SUBMISSIONS_SUBJECT_PREFIX}.{token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_owner_has_one_subject_token_whatever_its_name() {
        let cases = [
            (None, "jetscribe.submissions._"),
            (Some("alice"), "jetscribe.submissions.616c696365"),
            (Some("team.a"), "jetscribe.submissions.7465616d2e61"),
        ];
        for (owner, subject) in cases {
            assert_eq!(submissions_subject(owner), subject, "{owner:?}");
        }
    }
}
