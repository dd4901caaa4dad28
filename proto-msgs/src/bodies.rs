//! JSON bodies that leave jetscribe through more than one door: `/result` answers with the same
//! body as the webhook of the job (the original service's shapes), so both are built from this
//! one type.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::record::JobRecord;
use crate::transcript::JobResult;

/// A job that has ended, as `/result` (200 or 500) and its webhook carry it:
/// `{"status":"completed","job_id","completed_at","result":{…}}` or
/// `{"status":"failed","job_id","completed_at","error_message"}` or
/// `{"status":"cancelled","job_id","completed_at"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EndedJobBody {
    Completed {
        job_id: Uuid,
        #[serde(with = "time::serde::rfc3339::option", default)]
        completed_at: Option<OffsetDateTime>,
        result: Box<JobResult>,
    },
    Failed {
        job_id: Uuid,
        #[serde(with = "time::serde::rfc3339::option", default)]
        completed_at: Option<OffsetDateTime>,
        error_message: Option<String>,
    },
    Cancelled {
        job_id: Uuid,
        #[serde(with = "time::serde::rfc3339::option", default)]
        completed_at: Option<OffsetDateTime>,
    },
}

impl EndedJobBody {
    /// The body of a completed job with its result.
    pub fn completed(record: &JobRecord, result: JobResult) -> Self {
        EndedJobBody::Completed {
            job_id: record.job_id,
            completed_at: record.completed_at,
            result: Box::new(result),
        }
    }

    /// The body of a cancelled job.
    pub fn cancelled(record: &JobRecord) -> Self {
        EndedJobBody::Cancelled {
            job_id: record.job_id,
            completed_at: record.completed_at,
        }
    }

    /// The body of a failed job.
    pub fn failed(record: &JobRecord) -> Self {
        EndedJobBody::Failed {
            job_id: record.job_id,
            completed_at: record.completed_at,
            error_message: record.error_message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::JobOptions;

    #[test]
    fn a_failed_job_body_has_the_original_fields() {
        let mut record = JobRecord::new_pending(
            Uuid::nil(),
            "a.wav".into(),
            1,
            JobOptions::default(),
            OffsetDateTime::UNIX_EPOCH,
        );
        record.error_message = Some("no audio stream in a.wav".into());
        record.completed_at = Some(OffsetDateTime::UNIX_EPOCH);
        let json = serde_json::to_value(EndedJobBody::failed(&record)).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "job_id": Uuid::nil(),
                "status": "failed",
                "completed_at": "1970-01-01T00:00:00Z",
                "error_message": "no audio stream in a.wav",
            })
        );
    }
}
