//! The rules by which the loop settles a message, as pure functions: whether a try is made at
//! all ([`out_of_tries`]), what a handler's answer leads to ([`decide`]), how long to wait
//! before a retry ([`retry_delay`]), and what follows when a job fails ([`after_failure`]).

use std::time::Duration;

use proto_msgs::{EncodedMessage, JobRecord, JobStatus, Stage, StageRun};

use crate::stage::{Outcome, StageError};

/// How the loop settles a message with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done with; removed from the work queue.
    Ack,
    /// Handed back, to be delivered again (after the delay, if any). Counts as a delivery.
    Nak(Option<Duration>),
    /// Never to be delivered again; removed from the work queue.
    Term,
    /// Left alone: this process already handles the message (the server delivered it again
    /// while it ran); that handler's in-progress acks and settlement cover it.
    Leave,
}

/// What the loop does next with a handled message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Record the stage's end, hand the job to the next stage, then ack.
    Forward,
    /// Record the stage's end without an event (the stage published the job's end), then ack.
    Finish,
    /// Store this message for the same stage, then ack.
    Enqueue(EncodedMessage),
    /// Hand the message back, to be delivered again after this delay.
    Redeliver(Duration),
    /// Record `reason` on the stage's run and hand the message back, for another try after
    /// `delay`.
    Retry { reason: String, delay: Duration },
    /// A service the stage needs is down: record `reason` on the stage's run as an outage (not
    /// a failed try) and hand the message back, for another try after `delay`.
    Wait { reason: String, delay: Duration },
    /// Fail the job with this reason, which users read.
    Fail(String),
    /// Keep the message as a dead letter and fail the job with this reason: the stage failed
    /// on every try. `try_failed`: the try just made failed (not yet counted on the record).
    GiveUp { reason: String, try_failed: bool },
}

impl Decision {
    /// How the try ended, as the `outcome` label of `jetscribe_stage_duration_seconds`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Decision::Forward => "forwarded",
            Decision::Finish => "finished",
            Decision::Enqueue(_) => "rescheduled",
            Decision::Redeliver(_) => "too_early",
            Decision::Retry { .. } => "retried",
            Decision::Wait { .. } => "waiting",
            Decision::Fail(_) | Decision::GiveUp { .. } => "failed",
        }
    }
}

/// Tries stopped by an outage after which a stage gives up on a job all the same: with
/// retries a minute apart, about two hours of a store that stays down, or that never answers
/// (a wrong endpoint refuses every connection). Past it, the job fails with the reason.
pub const MAX_OUTAGES: u32 = 120;

/// Why the stage gives up on its message before trying again: its earlier tries, as `run`
/// records them, failed (or took their process down) `max_attempts` times.
pub fn out_of_tries(run: &StageRun, stage: Stage, max_attempts: u32) -> Option<String> {
    (run.failed_tries() >= max_attempts).then(|| {
        let last_error = run.last_error.as_deref().unwrap_or("no error recorded");
        let tries = run.failures + run.crashes;
        format!("{stage} failed after {tries} attempts: {last_error}")
    })
}

/// What the handler's `result` leads to, when the stage's earlier tries on this job went as
/// `run` records them and it allows `max_attempts` failed tries.
pub fn decide(
    result: Result<Outcome, StageError>,
    stage: Stage,
    run: &StageRun,
    max_attempts: u32,
) -> Decision {
    let tries_failed = run.failed_tries() + 1;
    match result {
        Ok(Outcome::Forward) => Decision::Forward,
        Ok(Outcome::Done) => Decision::Finish,
        Ok(Outcome::Reschedule(message)) => Decision::Enqueue(message),
        Ok(Outcome::TooEarly(delay)) => Decision::Redeliver(delay),
        Err(err @ StageError::Permanent(_)) => Decision::Fail(err.client_message()),
        Err(err @ StageError::Unavailable { .. }) if run.outages + 1 >= MAX_OUTAGES => {
            Decision::GiveUp {
                reason: format!(
                    "{stage} gave up after {} tries stopped by an outage: {}",
                    run.outages + 1,
                    err.client_message()
                ),
                try_failed: true,
            }
        }
        Err(err @ StageError::Unavailable { .. }) => Decision::Wait {
            reason: err.client_message(),
            delay: retry_delay(run.outages + 1),
        },
        Err(err) if tries_failed >= max_attempts => Decision::GiveUp {
            reason: format!(
                "{stage} failed after {tries_failed} attempts: {}",
                err.client_message()
            ),
            try_failed: true,
        },
        Err(err) => Decision::Retry {
            reason: err.client_message(),
            delay: retry_delay(tries_failed),
        },
    }
}

/// Delay before the next delivery after a transient failure: 2, 4, 8 … s, at most a minute.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempt.min(6)).min(60))
}

/// What follows once `stage` has failed the job `record` (as written by that update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterFailure {
    /// Publish the job's `failed` event (deduplicated by the server if already published).
    pub publish_failed: bool,
    /// Stages that still get the failed job (the notifier, for the webhook).
    pub hand_over_to: Vec<Stage>,
}

/// A job ends once: a completed job stays completed (an undeliverable webhook does not undo
/// it), and a stage that receives jobs failed elsewhere does not report their failure again.
/// `failed_now`: this stage's update is the one that failed the job.
pub fn after_failure(record: &JobRecord, stage: Stage, failed_now: bool) -> AfterFailure {
    let reported_elsewhere = !failed_now && stage.wanted_after_failure(record);
    // Only a job that failed is reported as failed: a completed one stays completed (an
    // undeliverable webhook does not undo it), a cancelled one stays cancelled.
    if record.status != JobStatus::Failed || reported_elsewhere {
        return AfterFailure {
            publish_failed: false,
            hand_over_to: Vec::new(),
        };
    }
    AfterFailure {
        publish_failed: true,
        hand_over_to: Stage::ALL
            .into_iter()
            .filter(|other| *other != stage && other.wanted_after_failure(record))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_msgs::{JobOptions, NotifyRequest};
    use time::OffsetDateTime;
    use uuid::Uuid;

    fn transient() -> StageError {
        StageError::transient(
            "reading the audio",
            std::io::Error::other("connection reset"),
        )
    }

    #[test]
    fn a_stage_gives_up_before_trying_once_its_tries_have_all_failed() {
        let run = |failures, crashes, last_error: Option<&str>| StageRun {
            attempts: failures + crashes + 1,
            failures,
            crashes,
            last_error: last_error.map(str::to_owned),
            ..Default::default()
        };
        let died = "the transcribe process stopped while handling the job";
        let cases = [
            (run(0, 0, None), None),
            (run(4, 1, Some(died)), None),
            (run(0, 9, Some(died)), None),
            (
                run(0, 10, Some(died)),
                Some(format!("transcribe failed after 10 attempts: {died}")),
            ),
            (
                run(4, 2, Some(died)),
                Some(format!("transcribe failed after 6 attempts: {died}")),
            ),
            (
                run(6, 0, None),
                Some("transcribe failed after 6 attempts: no error recorded".to_owned()),
            ),
        ];
        for (run, expected) in cases {
            assert_eq!(
                out_of_tries(&run, Stage::Transcribe, 5),
                expected,
                "{run:?}"
            );
        }
    }

    #[test]
    fn a_handlers_answer_decides_how_its_message_is_settled() {
        let retry = |reason: &str, seconds| Decision::Retry {
            reason: reason.to_owned(),
            delay: Duration::from_secs(seconds),
        };
        let message = EncodedMessage::of(&NotifyRequest::first(Uuid::nil())).expect("encodes");
        let outage = || {
            let down = std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem);
            StageError::transient("writing the audio blob", down)
        };
        let wait = |seconds| Decision::Wait {
            reason: "storage or network unavailable (writing the audio blob); waiting for it"
                .into(),
            delay: Duration::from_secs(seconds),
        };
        // (answer, failures before this try, decision); outages before this try: failures × 2
        let cases: Vec<(Result<Outcome, StageError>, u32, Decision)> = vec![
            (Ok(Outcome::Forward), 0, Decision::Forward),
            (Ok(Outcome::Done), 4, Decision::Finish),
            (
                Ok(Outcome::Reschedule(message.clone())),
                0,
                Decision::Enqueue(message),
            ),
            (
                Ok(Outcome::TooEarly(Duration::from_secs(7))),
                4,
                Decision::Redeliver(Duration::from_secs(7)),
            ),
            (
                Err(StageError::Permanent("no audio stream in a.mp4".into())),
                0,
                Decision::Fail("no audio stream in a.mp4".into()),
            ),
            (
                Err(transient()),
                0,
                retry("internal error (reading the audio)", 2),
            ),
            (
                Err(transient()),
                3,
                retry("internal error (reading the audio)", 16),
            ),
            (
                Err(transient()),
                4,
                Decision::GiveUp {
                    reason: "decode failed after 5 attempts: internal error (reading the audio)"
                        .into(),
                    try_failed: true,
                },
            ),
            // While the store is down, the job waits for it…
            (Err(outage()), 0, wait(2)),
            (Err(outage()), 1, wait(8)),
            (Err(outage()), 4, wait(60)),
        ];
        for (result, failures, expected) in cases {
            let shown = format!("{result:?} after {failures} failures");
            let run = StageRun {
                failures,
                outages: failures * 2,
                ..Default::default()
            };
            assert_eq!(decide(result, Stage::Decode, &run, 5), expected, "{shown}");
        }
        // … up to a point: a store that never comes back fails the job in the end.
        let long_outage = StageRun {
            outages: MAX_OUTAGES - 1,
            ..Default::default()
        };
        assert!(matches!(
            decide(Err(outage()), Stage::Decode, &long_outage, 5),
            Decision::GiveUp {
                try_failed: true,
                ..
            }
        ));
    }

    #[test]
    fn retry_delays_double_up_to_a_minute() {
        let delays: Vec<u64> = [1, 2, 3, 5, 6, 40]
            .map(|attempt| retry_delay(attempt).as_secs())
            .to_vec();
        assert_eq!(delays, [2, 4, 8, 32, 60, 60]);
    }

    #[test]
    fn a_failure_is_reported_once_and_handed_to_the_notifier_when_it_has_a_webhook() {
        let record = |status, webhook: bool| {
            let mut record = JobRecord::new_pending(
                Uuid::nil(),
                "a.wav".into(),
                1,
                JobOptions {
                    webhook_url: webhook.then(|| "https://example.org/hook".into()),
                    ..Default::default()
                },
                OffsetDateTime::UNIX_EPOCH,
            );
            record.status = status;
            record
        };
        let reported = |hand_over_to: Vec<Stage>| AfterFailure {
            publish_failed: true,
            hand_over_to,
        };
        let nothing = AfterFailure {
            publish_failed: false,
            hand_over_to: Vec::new(),
        };
        use JobStatus::{Completed, Failed};
        use Stage::{Analyze, Decode, Notify, Transcribe};
        let cases = [
            // (status written, webhook, stage, failed by this call, what follows)
            (Failed, true, Decode, true, reported(vec![Notify])),
            (Failed, false, Transcribe, true, reported(vec![])),
            // A retried failure is reported again; the server drops the duplicates.
            (Failed, true, Analyze, false, reported(vec![Notify])),
            (Failed, true, Notify, true, reported(vec![])),
            // The notifier gives up on the webhook of a job another stage failed.
            (Failed, true, Notify, false, nothing.clone()),
            (Completed, true, Notify, false, nothing),
        ];
        for (status, webhook, stage, failed_now, expected) in cases {
            assert_eq!(
                after_failure(&record(status, webhook), stage, failed_now),
                expected,
                "{status:?} webhook={webhook} {stage} failed_now={failed_now}"
            );
        }
    }
}
