//! The stages of the pipeline, in order, and what each one is called on the wire.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::PIPELINE_SUBJECT_PREFIX;

/// The four stages of the pipeline, in order. On the wire (subjects, record keys, events) a
/// stage is its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Decode,
    Transcribe,
    Analyze,
    Notify,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 4] = [
        Stage::Decode,
        Stage::Transcribe,
        Stage::Analyze,
        Stage::Notify,
    ];

    /// The stage a submitted job starts in.
    pub const FIRST: Stage = Stage::ALL[0];

    /// Lower-case name: used in subjects, consumer names and the job record.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Transcribe => "transcribe",
            Stage::Analyze => "analyze",
            Stage::Notify => "notify",
        }
    }

    /// The stage a job goes to when this one is done; `None` after the last.
    pub fn next(self) -> Option<Stage> {
        let index = Stage::ALL.iter().position(|stage| *stage == self)?;
        Stage::ALL.get(index + 1).copied()
    }

    /// The subject this stage consumes (a stage routed by model: the start of its pools'
    /// subjects, [`crate::Queue`]).
    pub fn subject(self) -> String {
        format!("{PIPELINE_SUBJECT_PREFIX}.{}", self.name())
    }

    /// The durable consumer shared by every process of this stage.
    pub fn consumer_name(self) -> String {
        format!("jetscribe-{}", self.name())
    }

    /// Whether this stage has one queue per Whisper model (a pool per model, see
    /// [`crate::routing`]) rather than one queue.
    pub fn is_routed_by_model(self) -> bool {
        self == Stage::Transcribe
    }

    /// Whether this stage's messages may wait, unacknowledged, until they are due: a webhook
    /// retry is handed back until its time. Its consumer must allow many such messages at once.
    pub fn holds_messages_until_due(self) -> bool {
        self == Stage::Notify
    }

    /// What `/status` shows as `step` while this stage works on a job.
    pub fn step(self) -> JobStep {
        match self {
            Stage::Decode => JobStep::Decoding,
            Stage::Transcribe => JobStep::Transcribing,
            Stage::Analyze => JobStep::Analyzing,
            Stage::Notify => JobStep::Notifying,
        }
    }

    /// The share of overall progress (0..=100) this stage spans, so that progress seen by a
    /// client only ever grows across stages.
    /// How long one try of this stage may run on `record`'s job before it is stopped and counted
    /// as failed: `base` (STAGE_TIMEOUT), plus time in proportion to the media, so a hung
    /// ffmpeg or a stuck model never holds a job for ever while its heartbeats keep the
    /// message alive. The decoder goes by the upload's size (its length is not known yet): a
    /// second per MB; the transcriber gets three times the media's length (Whisper on a slow CPU
    /// runs near real time); the analyzer a tenth of it.
    pub fn deadline(
        self,
        base: std::time::Duration,
        record: &crate::JobRecord,
    ) -> std::time::Duration {
        let media_s = record.duration_s.unwrap_or(0.0).max(0.0);
        let extra_s = match self {
            Stage::Decode => record.size_bytes as f64 / 1e6,
            Stage::Transcribe => 3.0 * media_s,
            Stage::Analyze => 0.1 * media_s,
            Stage::Notify => 0.0,
        };
        base + std::time::Duration::from_secs_f64(extra_s.min(1e7))
    }

    pub fn progress_span(self) -> (u8, u8) {
        match self {
            Stage::Decode => (0, 15),
            Stage::Transcribe => (15, 90),
            Stage::Analyze => (90, 97),
            Stage::Notify => (97, 100),
        }
    }

    /// Maps a fraction of this stage's work (0.0..=1.0) to overall progress.
    pub fn overall_progress(self, fraction: f64) -> u8 {
        let (lo, hi) = self.progress_span();
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        lo + ((f64::from(hi - lo)) * fraction).floor() as u8
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a job is doing now, as `/status` shows it in `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStep {
    /// Submitted, waiting for the decoder.
    Queued,
    Decoding,
    Transcribing,
    Analyzing,
    Notifying,
    Completed,
    Failed,
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_try_may_run_longer_on_longer_media() {
        let mut record = crate::JobRecord::new_pending(
            uuid::Uuid::nil(),
            "a.wav".into(),
            50_000_000,
            crate::JobOptions::default(),
            time::OffsetDateTime::UNIX_EPOCH,
        );
        record.duration_s = Some(3600.0);
        let base = std::time::Duration::from_secs(600);
        let seconds = |stage: Stage| stage.deadline(base, &record).as_secs();
        assert_eq!(seconds(Stage::Decode), 650);
        assert_eq!(seconds(Stage::Transcribe), 600 + 3 * 3600);
        assert_eq!(seconds(Stage::Analyze), 960);
        assert_eq!(seconds(Stage::Notify), 600);
    }

    #[test]
    fn overall_progress_stays_inside_the_stage_span() {
        let cases = [
            (Stage::Decode, 0.0, 0),
            (Stage::Transcribe, 1.0, 90),
            (Stage::Notify, 1.0, 100),
            (Stage::Analyze, f64::NAN, 90),
            (Stage::Analyze, 7.0, 97),
            (Stage::Transcribe, 0.5, 52),
        ];
        for (stage, fraction, expected) in cases {
            assert_eq!(
                stage.overall_progress(fraction),
                expected,
                "{stage} {fraction}"
            );
        }
    }

    #[test]
    fn stages_follow_each_other_in_pipeline_order() {
        let chain: Vec<Option<Stage>> = Stage::ALL.iter().map(|stage| stage.next()).collect();
        assert_eq!(
            chain,
            [
                Some(Stage::Transcribe),
                Some(Stage::Analyze),
                Some(Stage::Notify),
                None
            ]
        );
    }

    #[test]
    fn stage_names_on_the_wire_are_lower_case() {
        for stage in Stage::ALL {
            let json = serde_json::to_string(&stage).expect("serializes");
            assert_eq!(json, format!("\"{}\"", stage.name()));
            assert_eq!(stage.subject(), format!("jetscribe.pipeline.{stage}"));
        }
        let step = serde_json::to_string(&JobStep::Transcribing).expect("serializes");
        assert_eq!(step, "\"transcribing\"");
    }
}
