//! One POST of a webhook: the HTTP client (no redirects, no proxy, only public addresses unless
//! allowed), the Standard Webhooks headers, and what the receiver's answer means.

use std::net::SocketAddr;
use std::time::Duration;

use jetscribe_nats::ErrorChain;
use jetscribe_webhook_policy::{DestinationError, check, check_addresses};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use time::OffsetDateTime;

use crate::signing::WebhookSecret;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub verdict: Verdict,
}

/// How a receiver took an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Worth another try, not before the receiver's Retry-After, if it gave one.
    Retry(Option<Duration>),
    /// The receiver refused it for good (a 4xx other than 408 and 429) or the URL is not allowed.
    Refused,
}

impl AttemptResult {
    fn failed(status_code: Option<u16>, error: String, verdict: Verdict) -> Self {
        Self {
            status_code,
            error: Some(error),
            verdict,
        }
    }
}

/// Sends webhooks.
pub struct WebhookClient {
    http: reqwest::Client,
    secret: Option<WebhookSecret>,
    allow_private: bool,
}

impl WebhookClient {
    pub fn new(
        timeout: Duration,
        secret: Option<WebhookSecret>,
        allow_private: bool,
    ) -> Result<Self, reqwest::Error> {
        let mut http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("jetscribe/", env!("CARGO_PKG_VERSION")))
            // A redirect could lead anywhere, past the destination check; so could a proxy,
            // which resolves the name itself: webhooks go out directly.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !allow_private {
            http = http.dns_resolver(PublicOnlyResolver);
        }
        Ok(Self {
            http: http.build()?,
            secret,
            allow_private,
        })
    }

    /// POSTs `body` to `url` once, signed when a secret is set.
    pub async fn attempt(&self, url: &str, webhook_id: &str, body: &[u8]) -> AttemptResult {
        if let Err(refused) = check(url, self.allow_private).await {
            let verdict = match refused {
                DestinationError::Unresolvable { .. } => Verdict::Retry(None),
                _ => Verdict::Refused,
            };
            return AttemptResult::failed(None, ErrorChain(&refused).to_string(), verdict);
        }
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(secret) = &self.secret {
            let signature = secret.sign(webhook_id, timestamp, body);
            request = request.header("webhook-signature", signature);
        }
        match request.body(body.to_vec()).send().await {
            Ok(response) => judge(response.status(), response.headers()),
            // Timeouts and refused connections are worth another try.
            // The URL is the owner's own, but may hold credentials: it is not repeated.
            Err(err) => {
                let error = ErrorChain(&err.without_url()).to_string();
                AttemptResult::failed(None, error, Verdict::Retry(None))
            }
        }
    }
}

/// What the receiver's answer means.
fn judge(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap) -> AttemptResult {
    use reqwest::StatusCode;
    if status.is_success() {
        return AttemptResult {
            status_code: Some(status.as_u16()),
            error: None,
            verdict: Verdict::Delivered,
        };
    }
    let retry = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    let verdict = if retry {
        Verdict::Retry(retry_after(headers))
    } else {
        Verdict::Refused
    };
    let error = if status.is_redirection() {
        format!("HTTP {status}: redirects are not followed")
    } else {
        format!("HTTP {status}")
    };
    AttemptResult::failed(Some(status.as_u16()), error, verdict)
}

/// Retry-After as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The webhook client's DNS resolver: resolves as usual and refuses names with a non-public
/// address, so that the address checked is the address connected to.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            check_addresses(&host, addresses.iter().map(SocketAddr::ip))?;
            let addresses: Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn the_receivers_answer_decides_whether_to_retry() {
        let mut with_retry_after = HeaderMap::new();
        with_retry_after.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let none = HeaderMap::new();
        let seven = Some(Duration::from_secs(7));
        let cases = [
            (200, &none, Verdict::Delivered),
            (204, &none, Verdict::Delivered),
            (500, &none, Verdict::Retry(None)),
            (503, &with_retry_after, Verdict::Retry(seven)),
            (429, &with_retry_after, Verdict::Retry(seven)),
            (408, &none, Verdict::Retry(None)),
            (410, &with_retry_after, Verdict::Refused),
            (302, &none, Verdict::Refused),
        ];
        for (status, headers, verdict) in cases {
            let status = reqwest::StatusCode::from_u16(status).expect("a status");
            assert_eq!(judge(status, headers).verdict, verdict, "{status}");
        }
        let redirect = judge(reqwest::StatusCode::FOUND, &none);
        assert_eq!(
            redirect.error.as_deref(),
            Some("HTTP 302 Found: redirects are not followed")
        );
    }
}
