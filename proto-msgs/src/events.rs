//! Job events on `jetscribe.events.<job_id>` (see docs/events.md).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::record::JobStatus;
use crate::stage::Stage;

/// What a job event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Submitted,
    StageStarted,
    Progress,
    StageCompleted,
    Completed,
    Failed,
    Cancelled,
}

impl EventKind {
    /// The name on the wire: `stage_started`, `completed`, …
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Submitted => "submitted",
            EventKind::StageStarted => "stage_started",
            EventKind::Progress => "progress",
            EventKind::StageCompleted => "stage_completed",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
        }
    }

    /// `completed`, `failed` or `cancelled`: the last event of a job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            EventKind::Completed | EventKind::Failed | EventKind::Cancelled
        )
    }
}

/// An event on `jetscribe.events.<job_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: Uuid,
    pub kind: EventKind,
    pub status: JobStatus,
    pub progress: u8,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The stage the event comes from, if any.
    #[serde(default)]
    pub stage: Option<Stage>,
    /// The failure reason on `failed`.
    #[serde(default)]
    pub error_message: Option<String>,
    /// On `progress` from a stage that can tell: estimated seconds until that stage ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    /// Media duration in seconds, once the decoder knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

impl JobEvent {
    /// `Nats-Msg-Id` of a final event (`<job_id>:Completed`, `<job_id>:Failed`): a job ends
    /// once, and the server drops the same final event published again.
    pub fn final_message_id(&self) -> Option<String> {
        let kind = match self.kind {
            EventKind::Completed => "Completed",
            EventKind::Failed => "Failed",
            EventKind::Cancelled => "Cancelled",
            _ => return None,
        };
        Some(format!("{}:{kind}", self.job_id))
    }
}
