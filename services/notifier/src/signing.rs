//! Webhook signatures per the Standard Webhooks specification (standardwebhooks.com): the
//! receiver recomputes `base64(HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>"))` and
//! compares it with the `v1,` entry of `webhook-signature`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// WEBHOOK_SECRET could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("expected whsec_ followed by a base64 key")]
    Format,
    #[error("the key after whsec_ is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("the key is empty")]
    Empty,
}

/// The signing key, from WEBHOOK_SECRET (`whsec_<base64 key>`).
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    pub fn parse(secret: &str) -> Result<Self, SecretError> {
        let encoded = secret
            .trim()
            .strip_prefix("whsec_")
            .ok_or(SecretError::Format)?;
        let key = BASE64.decode(encoded)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { key })
    }

    /// The `webhook-signature` header value for one attempt: `v1,<base64 signature>`.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(webhook_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_example_signs_as_published() {
        // The example of the Standard Webhooks reference libraries.
        let secret =
            WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_secret_without_its_prefix_or_with_bad_base64_is_refused() {
        assert!(matches!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::Format)
        ));
        assert!(matches!(
            WebhookSecret::parse("whsec_not base64!"),
            Err(SecretError::Base64(_))
        ));
        assert!(format!("{:?}", WebhookSecret::parse("whsec_AAAA").expect("ok")).contains(".."));
    }
}
