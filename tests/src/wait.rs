//! Waiting for observable state with a deadline (never a fixed sleep).

use std::time::{Duration, Instant};

/// How long a test waits for one short job (the JFK clip) to end, on a busy 2-core machine.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
