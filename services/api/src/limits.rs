//! What one client may take of the API: submissions per key and period ([`RateLimiter`],
//! RATE_LIMIT), uploads and event streams at once ([`Slots`], MAX_CONCURRENT_UPLOADS,
//! MAX_EVENT_STREAMS), and the local store's free disk space (MIN_FREE_SPACE).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jetscribe_blobstore::BlobStore;
use poem::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ApiError;

/// RATE_LIMIT: at most `requests` submissions per `per` and key, in bursts of up to `requests`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

impl RateLimit {
    /// `60/min`, `10/s`, `1000/hour`, `5000/day`; `off` (or `0`) for no limit (`None`).
    pub fn parse(raw: &str) -> Result<Option<Self>, &'static str> {
        const EXPECTED: &str = "N/s, N/min, N/h or N/day (such as 60/min), or off";
        let raw = raw.trim().to_ascii_lowercase();
        if raw == "off" || raw == "0" {
            return Ok(None);
        }
        let (count, unit) = raw.split_once('/').ok_or(EXPECTED)?;
        let requests: u32 = count.trim().parse().map_err(|_| EXPECTED)?;
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(EXPECTED),
        };
        if requests == 0 {
            return Ok(None);
        }
        Ok(Some(Self {
            requests,
            per: Duration::from_secs(seconds),
        }))
    }
}

/// One client's allowance: refilled at `requests / per`, up to `requests`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Takes one submission from `bucket` at `now`, or says how long until one is allowed.
fn take(bucket: &mut Bucket, limit: RateLimit, now: Instant) -> Result<(), Duration> {
    let rate = f64::from(limit.requests) / limit.per.as_secs_f64();
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate).min(f64::from(limit.requests));
    bucket.updated = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Ok(())
    } else {
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
    }
}

/// The most clients tracked at once. When the table is full, buckets that have refilled (and so
/// hold nothing) are forgotten, at most once a second; a new client that still finds it full is
/// not tracked (it would start with a full bucket anyway).
const MAX_TRACKED_CLIENTS: usize = 10_000;
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Per-client submission rates (RATE_LIMIT).
#[derive(Clone, Debug)]
pub(crate) struct RateLimiter {
    limit: Option<RateLimit>,
    buckets: Arc<Mutex<Buckets>>,
}

#[derive(Debug, Default)]
struct Buckets {
    by_client: HashMap<String, Bucket>,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        Self {
            limit,
            buckets: Arc::default(),
        }
    }

    /// Counts one submission of `client` (a key's name, or an address without keys); past the
    /// limit, 429 with Retry-After.
    pub(crate) fn check(&self, client: &str) -> Result<(), ApiError> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Buckets {
            by_client,
            last_sweep,
        } = &mut *buckets;
        if by_client.len() >= MAX_TRACKED_CLIENTS && !by_client.contains_key(client) {
            if last_sweep.is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY) {
                *last_sweep = Some(now);
                by_client
                    .retain(|_, bucket| now.saturating_duration_since(bucket.updated) < limit.per);
            }
            if by_client.len() >= MAX_TRACKED_CLIENTS {
                return Ok(());
            }
        }
        let bucket = by_client.entry(client.to_owned()).or_insert(Bucket {
            tokens: f64::from(limit.requests),
            updated: now,
        });
        take(bucket, limit, now).map_err(|wait| {
            let detail = format!(
                "RATE_LIMIT: at most {} submissions per {} s; try again in {} s",
                limit.requests,
                limit.per.as_secs(),
                wait.as_secs().max(1)
            );
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, detail).retry_after(wait)
        })
    }
}

/// The rate-limited unit of a client without a key: its IPv4 address, or its IPv6 /64 (one
/// host commonly holds a whole /64).
pub(crate) fn client_network(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
            }
        },
    }
}

/// A bounded number of things at once (uploads, event streams): a slot is held while one runs.
#[derive(Clone, Debug)]
pub(crate) struct Slots {
    what: &'static str,
    setting: &'static str,
    semaphore: Arc<Semaphore>,
}

/// How long a client refused for want of a slot is told to wait.
const SLOT_RETRY_AFTER: Duration = Duration::from_secs(5);

impl Slots {
    pub(crate) fn new(what: &'static str, setting: &'static str, max: usize) -> Self {
        Self {
            what,
            setting,
            semaphore: Arc::new(Semaphore::new(max)),
        }
    }

    /// A slot, or 503 with Retry-After when all are taken.
    pub(crate) fn take(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.semaphore.clone().try_acquire_owned().map_err(|_| {
            let detail = format!(
                "too many {} at once ({}); try again shortly",
                self.what, self.setting
            );
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, detail).retry_after(SLOT_RETRY_AFTER)
        })
    }
}

/// 507 when the local store's disk has less than `min_free` bytes free (a remote store: never).
pub(crate) fn check_free_space(free: Option<u64>, min_free: u64) -> Result<(), ApiError> {
    match free {
        Some(free) if free < min_free => Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "the server is short of disk space (MIN_FREE_SPACE); try again later",
        )
        .retry_after(Duration::from_secs(60))),
        _ => Ok(()),
    }
}

/// How often a running upload looks at the free space again.
const SPACE_CHECK_EVERY: u64 = 64 << 20;

/// Watches the local store's free space while an upload is written.
pub(crate) struct DiskWatch<'a> {
    blobs: &'a BlobStore,
    min_free: u64,
    next_check: u64,
}

impl<'a> DiskWatch<'a> {
    pub(crate) fn new(blobs: &'a BlobStore, min_free: u64) -> Self {
        Self {
            blobs,
            min_free,
            next_check: SPACE_CHECK_EVERY,
        }
    }

    /// Every [`SPACE_CHECK_EVERY`] bytes `written`: 507 once the disk is short of space.
    pub(crate) fn check(&mut self, written: u64) -> Result<(), ApiError> {
        if written < self.next_check {
            return Ok(());
        }
        self.next_check = written + SPACE_CHECK_EVERY;
        check_free_space(self.blobs.free_space(), self.min_free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_are_parsed_or_refused() {
        let minute = Duration::from_secs(60);
        let cases = [
            (
                "60/min",
                Ok(Some(RateLimit {
                    requests: 60,
                    per: minute,
                })),
            ),
            (
                " 10 / S ",
                Ok(Some(RateLimit {
                    requests: 10,
                    per: Duration::from_secs(1),
                })),
            ),
            (
                "1000/hour",
                Ok(Some(RateLimit {
                    requests: 1000,
                    per: Duration::from_secs(3600),
                })),
            ),
            ("off", Ok(None)),
            ("0/min", Ok(None)),
            ("60", Err(())),
            ("60/week", Err(())),
            ("-1/min", Err(())),
        ];
        for (raw, expected) in cases {
            assert_eq!(RateLimit::parse(raw).map_err(|_| ()), expected, "{raw}");
        }
    }

    #[test]
    fn a_bucket_allows_a_burst_then_one_per_interval() {
        let limit = RateLimit {
            requests: 3,
            per: Duration::from_secs(3),
        };
        let start = Instant::now();
        let mut bucket = Bucket {
            tokens: 3.0,
            updated: start,
        };
        let at = |ms: u64| start + Duration::from_millis(ms);
        let steps = [
            (0, Ok(())),
            (0, Ok(())),
            (0, Ok(())),
            (0, Err(Duration::from_secs(1))),
            (500, Err(Duration::from_millis(500))),
            (1000, Ok(())),
            (1000, Err(Duration::from_secs(1))),
            (60_000, Ok(())),
            (60_000, Ok(())),
            (60_000, Ok(())),
            (60_000, Err(Duration::from_secs(1))),
        ];
        for (i, (ms, expected)) in steps.into_iter().enumerate() {
            let got = take(&mut bucket, limit, at(ms)).map_err(|wait| wait.as_millis());
            assert_eq!(
                got,
                expected.map_err(|wait: Duration| wait.as_millis()),
                "step {i}"
            );
        }
    }

    #[test]
    fn clients_without_keys_are_counted_by_address_or_ipv6_network() {
        let cases = [
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ];
        for (ip, network) in cases {
            let ip: std::net::IpAddr = ip.parse().expect("an address");
            assert_eq!(client_network(ip), network);
        }
    }

    #[test]
    fn free_space_below_the_minimum_is_507_and_a_remote_store_is_not_checked() {
        assert!(check_free_space(None, 1 << 30).is_ok());
        assert!(check_free_space(Some(2 << 30), 1 << 30).is_ok());
        let refused = check_free_space(Some(1 << 20), 1 << 30).expect_err("refused");
        assert_eq!(refused.status, StatusCode::INSUFFICIENT_STORAGE);
    }
}
