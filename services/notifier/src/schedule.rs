//! The notifier's decisions, as pure functions: whether a message calls for an attempt now
//! ([`before_attempt`]), what follows an attempt ([`schedule`]), and how the delivery is
//! recorded ([`record_attempt`], [`give_up`]).

use std::time::Duration;

use proto_msgs::{NotifyRequest, WebhookAttempt, WebhookDelivery, WebhookState};
use time::OffsetDateTime;

use crate::delivery::{AttemptResult, Verdict};

/// The longest Retry-After honoured: a receiver cannot park a delivery for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The longest delay between two attempts, however many retries are allowed.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What a notify message calls for, given the delivery as recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum BeforeAttempt {
    /// The delivery is settled (delivered or given up): nothing to do.
    Nothing,
    /// This attempt was made and recorded, but the process stopped before it queued the next
    /// one: queue it now, as recorded.
    QueueRecorded(NotifyRequest),
    /// The attempt is not due yet.
    TooEarly(Duration),
    /// Make the attempt.
    Attempt,
}

pub fn before_attempt(
    delivery: Option<&WebhookDelivery>,
    input: &NotifyRequest,
    now: OffsetDateTime,
) -> BeforeAttempt {
    let recorded_attempts = delivery.map_or(0, |delivery| delivery.attempts);
    if delivery.is_some_and(|delivery| delivery.state != WebhookState::Pending) {
        return BeforeAttempt::Nothing;
    }
    if input.attempt <= recorded_attempts {
        return match delivery.and_then(|delivery| delivery.next_attempt_at) {
            Some(due) => BeforeAttempt::QueueRecorded(NotifyRequest {
                job_id: input.job_id,
                attempt: recorded_attempts + 1,
                not_before: Some(due),
            }),
            None => BeforeAttempt::Nothing,
        };
    }
    match input.not_before.map(|due| due - now) {
        Some(wait) if wait.is_positive() => BeforeAttempt::TooEarly(wait.unsigned_abs()),
        _ => BeforeAttempt::Attempt,
    }
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Delivered,
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Refused for good, or out of retries.
    GiveUp,
}

/// How retries are spaced (WEBHOOK_MAX_RETRIES, WEBHOOK_RETRY_DELAY).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// Delay before the first retry; it doubles with each further retry.
    pub first_delay: Duration,
}

/// What follows attempt `made` (1-based) that came to `verdict`. The delay before a retry is
/// the first delay doubled for each retry made, plus `jitter` (0..1) of a quarter more, so that
/// receivers that failed together are not retried together; capped at an hour, and never
/// shorter than the receiver's Retry-After (honoured up to an hour).
pub fn schedule(verdict: Verdict, made: u32, policy: RetryPolicy, jitter: f64) -> Schedule {
    match verdict {
        Verdict::Delivered => Schedule::Delivered,
        Verdict::Retry(retry_after) if made <= policy.max_retries => {
            let doubled = policy
                .first_delay
                .saturating_mul(2u32.saturating_pow(made.saturating_sub(1).min(20)))
                .min(MAX_BACKOFF);
            let jittered = doubled.mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.25);
            let at_least = retry_after.unwrap_or_default().min(MAX_RETRY_AFTER);
            Schedule::RetryAfter(jittered.max(at_least))
        }
        Verdict::Retry(_) | Verdict::Refused => Schedule::GiveUp,
    }
}

/// Records attempt `made`, made at `now`, on `delivery`. A delivery settled meanwhile (two
/// copies of one attempt) keeps its first answer.
pub fn record_attempt(
    delivery: &mut WebhookDelivery,
    made: u32,
    result: &AttemptResult,
    schedule: Schedule,
    now: OffsetDateTime,
) {
    if delivery.state != WebhookState::Pending {
        return;
    }
    delivery.attempts = delivery.attempts.max(made);
    delivery.state = match schedule {
        Schedule::Delivered => WebhookState::Delivered,
        Schedule::RetryAfter(_) => WebhookState::Pending,
        Schedule::GiveUp => WebhookState::Failed,
    };
    delivery.last_status_code = result.status_code;
    delivery.last_error = result.error.clone();
    delivery.next_attempt_at = match schedule {
        Schedule::RetryAfter(delay) => Some(now + delay),
        _ => None,
    };
    if schedule == Schedule::Delivered {
        delivery.delivered_at = Some(now);
    }
    delivery.history.push(WebhookAttempt {
        at: now,
        status_code: result.status_code,
        error: result.error.clone(),
    });
}

/// The notifier's message ran out of deliveries: a delivery still pending will not be made.
pub fn give_up(delivery: &mut WebhookDelivery, reason: &str) {
    if delivery.state == WebhookState::Pending {
        delivery.state = WebhookState::Failed;
        delivery.last_error = Some(reason.to_owned());
        delivery.next_attempt_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(seconds)
    }

    fn delivery(state: WebhookState, attempts: u32, next: Option<i64>) -> WebhookDelivery {
        WebhookDelivery {
            state,
            attempts,
            next_attempt_at: next.map(at),
            ..WebhookDelivery::new(Uuid::nil())
        }
    }

    fn request(attempt: u32, not_before: Option<i64>) -> NotifyRequest {
        NotifyRequest {
            job_id: Uuid::nil(),
            attempt,
            not_before: not_before.map(at),
        }
    }

    #[test]
    fn a_message_leads_to_an_attempt_only_when_due_and_not_yet_made() {
        let pending = WebhookState::Pending;
        let cases = [
            (None, request(1, None), BeforeAttempt::Attempt),
            (
                Some(delivery(WebhookState::Delivered, 1, None)),
                request(2, None),
                BeforeAttempt::Nothing,
            ),
            (
                Some(delivery(WebhookState::Failed, 2, None)),
                request(2, None),
                BeforeAttempt::Nothing,
            ),
            // Made and recorded, the next one not queued: queue it as recorded.
            (
                Some(delivery(pending, 1, Some(130))),
                request(1, None),
                BeforeAttempt::QueueRecorded(request(2, Some(130))),
            ),
            (
                Some(delivery(pending, 1, None)),
                request(1, None),
                BeforeAttempt::Nothing,
            ),
            (
                Some(delivery(pending, 1, Some(130))),
                request(2, Some(130)),
                BeforeAttempt::TooEarly(Duration::from_secs(30)),
            ),
            (
                Some(delivery(pending, 1, Some(130))),
                request(2, Some(90)),
                BeforeAttempt::Attempt,
            ),
        ];
        for (recorded, input, expected) in cases {
            assert_eq!(
                before_attempt(recorded.as_ref(), &input, at(100)),
                expected,
                "{recorded:?} {input:?}"
            );
        }
    }

    #[test]
    fn retries_back_off_and_honour_retry_after_until_the_retries_run_out() {
        let policy = RetryPolicy {
            max_retries: 3,
            first_delay: Duration::from_secs(5),
        };
        let retry = |seconds| Schedule::RetryAfter(Duration::from_secs_f64(seconds));
        let cases = [
            (Verdict::Delivered, 1, 0.0, Schedule::Delivered),
            (Verdict::Retry(None), 1, 0.0, retry(5.0)),
            (Verdict::Retry(None), 2, 0.0, retry(10.0)),
            (Verdict::Retry(None), 3, 1.0, retry(25.0)),
            (Verdict::Retry(None), 4, 0.0, Schedule::GiveUp),
            (
                Verdict::Retry(Some(Duration::from_secs(60))),
                1,
                0.5,
                retry(60.0),
            ),
            (
                Verdict::Retry(Some(Duration::from_secs(86_400))),
                1,
                0.0,
                retry(3600.0),
            ),
            (Verdict::Refused, 1, 0.0, Schedule::GiveUp),
        ];
        for (verdict, made, jitter, expected) in cases {
            assert_eq!(
                schedule(verdict, made, policy, jitter),
                expected,
                "{verdict:?} attempt {made}"
            );
        }
        let many = RetryPolicy {
            max_retries: 100,
            ..policy
        };
        assert_eq!(schedule(Verdict::Retry(None), 60, many, 0.0), retry(3600.0));
    }

    #[test]
    fn an_attempt_is_recorded_once_and_a_settled_delivery_keeps_its_answer() {
        let failed = AttemptResult {
            status_code: Some(503),
            error: Some("HTTP 503".into()),
            verdict: Verdict::Retry(None),
        };
        let mut delivery = WebhookDelivery::new(Uuid::nil());
        record_attempt(
            &mut delivery,
            1,
            &failed,
            Schedule::RetryAfter(Duration::from_secs(5)),
            at(0),
        );
        assert_eq!(
            (delivery.state, delivery.attempts, delivery.next_attempt_at),
            (WebhookState::Pending, 1, Some(at(5)))
        );
        let ok = AttemptResult {
            status_code: Some(200),
            error: None,
            verdict: Verdict::Delivered,
        };
        record_attempt(&mut delivery, 2, &ok, Schedule::Delivered, at(6));
        record_attempt(&mut delivery, 2, &failed, Schedule::GiveUp, at(7));
        assert_eq!(delivery.state, WebhookState::Delivered);
        assert_eq!(delivery.delivered_at, Some(at(6)));
        assert_eq!(delivery.history.len(), 2);
        give_up(&mut delivery, "out of deliveries");
        assert_eq!(delivery.state, WebhookState::Delivered);
    }
}
