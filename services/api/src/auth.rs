//! API keys: who is calling, and which jobs they may see. Keys come from API_KEYS
//! (`name=key,…`) and API_KEYS_FILE (a `name=key` or `name=sha256:<64 hex>` per line); only
//! their SHA-256 digests are kept, and a presented key is compared with every one of them in
//! constant time. With no key configured the API is open (and binds to loopback by default).

use poem::http::{StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::json_response;
use crate::views::ErrorBody;

/// Keys shorter than this are refused: they could be guessed.
const MIN_KEY_LEN: usize = 16;

/// The configured keys.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

#[derive(Clone)]
struct ApiKey {
    name: String,
    digest: [u8; 32],
    admin: bool,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: never a key, nor its digest.
        let names: Vec<&str> = self.keys.iter().map(|key| key.name.as_str()).collect();
        f.debug_struct("ApiKeys").field("names", &names).finish()
    }
}

/// A key definition that cannot be used. Never contains the key itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("{source_name}: expected name=key, got an entry without '=' ({position})")]
    NoName {
        source_name: &'static str,
        position: String,
    },
    #[error("{source_name}: key name {name:?} must be letters, digits, '-', '_' or '.'")]
    BadName {
        source_name: &'static str,
        name: String,
    },
    #[error("{source_name}: the key of {name:?} is shorter than {MIN_KEY_LEN} characters")]
    TooShort {
        source_name: &'static str,
        name: String,
    },
    #[error("{source_name}: the sha256 of {name:?} must be 64 hex digits")]
    BadDigest {
        source_name: &'static str,
        name: String,
    },
    #[error("key name {0:?} is defined twice")]
    Duplicate(String),
    #[error("ADMIN_KEYS names {0:?}, which is not a key of API_KEYS or API_KEYS_FILE")]
    UnknownAdmin(String),
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No key is configured: everyone sees everything.
    Anonymous,
    Key {
        name: String,
        admin: bool,
    },
}

impl Caller {
    /// The name recorded as the owner of the jobs this caller submits.
    pub fn owner(&self) -> Option<String> {
        match self {
            Caller::Anonymous => None,
            Caller::Key { name, .. } => Some(name.clone()),
        }
    }

    /// Whether the caller may see a job owned by `owner`.
    /// Whether the caller may see how the service handled any job (dead letters): an admin
    /// key, or anyone when the API has no keys.
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Anonymous | Caller::Key { admin: true, .. })
    }

    pub fn may_see(&self, owner: Option<&str>) -> bool {
        match self {
            Caller::Anonymous | Caller::Key { admin: true, .. } => true,
            Caller::Key { name, .. } => owner == Some(name.as_str()),
        }
    }
}

impl ApiKeys {
    /// Reads API_KEYS (`inline`), the contents of API_KEYS_FILE (`file`) and ADMIN_KEYS.
    pub fn parse(
        inline: Option<&str>,
        file: Option<&str>,
        admins: Option<&str>,
    ) -> Result<Self, KeysError> {
        let mut keys: Vec<ApiKey> = Vec::new();
        let entries = inline
            .into_iter()
            .flat_map(|text| text.split(','))
            .map(|entry| ("API_KEYS", entry));
        let lines = file
            .into_iter()
            .flat_map(str::lines)
            .filter(|line| !line.trim_start().starts_with('#'))
            .map(|line| ("API_KEYS_FILE", line));
        for (index, (source_name, entry)) in entries.chain(lines).enumerate() {
            if entry.trim().is_empty() {
                continue;
            }
            let key = parse_entry(source_name, entry, index + 1)?;
            if keys.iter().any(|known| known.name == key.name) {
                return Err(KeysError::Duplicate(key.name));
            }
            keys.push(key);
        }
        for admin in admins.into_iter().flat_map(|text| text.split(',')) {
            let admin = admin.trim();
            if admin.is_empty() {
                continue;
            }
            let key = keys.iter_mut().find(|key| key.name == admin);
            key.ok_or_else(|| KeysError::UnknownAdmin(admin.to_owned()))?
                .admin = true;
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The caller a presented key belongs to: `Anonymous` when no key is configured, `None`
    /// when the key is not one of them. Every configured key is compared, in constant time.
    pub fn identify(&self, presented: Option<&str>) -> Option<Caller> {
        if self.keys.is_empty() {
            return Some(Caller::Anonymous);
        }
        let digest: [u8; 32] = Sha256::digest(presented?.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(Caller::Key {
                    name: key.name.clone(),
                    admin: key.admin,
                });
            }
        }
        found
    }
}

fn parse_entry(
    source_name: &'static str,
    entry: &str,
    position: usize,
) -> Result<ApiKey, KeysError> {
    let (name, secret) = entry.split_once('=').ok_or_else(|| KeysError::NoName {
        source_name,
        position: format!("entry {position}"),
    })?;
    let (name, secret) = (name.trim(), secret.trim());
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid_name {
        let name = name.to_owned();
        return Err(KeysError::BadName { source_name, name });
    }
    let name = name.to_owned();
    let digest = match secret.strip_prefix("sha256:") {
        Some(hex) if source_name == "API_KEYS_FILE" => {
            parse_digest(hex).ok_or_else(|| KeysError::BadDigest {
                source_name,
                name: name.clone(),
            })?
        }
        _ if secret.len() < MIN_KEY_LEN => {
            return Err(KeysError::TooShort { source_name, name });
        }
        _ => Sha256::digest(secret.as_bytes()).into(),
    };
    Ok(ApiKey {
        name,
        digest,
        admin: false,
    })
}

/// 64 hex digits → 32 bytes.
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

/// The key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
fn presented_key(request: &Request) -> Option<&str> {
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let api_key = headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok());
    bearer.or(api_key).map(str::trim)
}

/// Paths anyone may call: health checks come from load balancers without keys; the pages (the
/// web page, Swagger UI, the document) hold no secret, and ask for the key themselves.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/openapi.json" | "/docs" | "/" | "/web/app.js" | "/web/style.css"
    )
}

/// Puts the [`Caller`] in the request (for handlers to read as `Data<&Caller>`), or answers 401.
pub async fn authenticate<E: Endpoint>(
    endpoint: E,
    mut request: Request,
    keys: ApiKeys,
) -> poem::Result<Response> {
    let caller = if is_public(request.uri().path()) {
        Some(Caller::Anonymous)
    } else {
        keys.identify(presented_key(&request))
    };
    let Some(caller) = caller else {
        let detail = match presented_key(&request) {
            None => "API key missing: send Authorization: Bearer <key> or X-API-Key: <key>",
            Some(_) => "API key not valid",
        };
        // A client that writes its whole body before reading would see a broken pipe, not 401.
        crate::discard_body(request.take_body()).await;
        let mut response = json_response(StatusCode::UNAUTHORIZED, &ErrorBody { detail });
        let headers = response.headers_mut();
        headers.insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("a header"),
        );
        // What is left of the body is not read: the connection cannot carry another request.
        headers.insert(header::CONNECTION, "close".parse().expect("a header"));
        return Ok(response);
    };
    request.extensions_mut().insert(caller);
    Ok(endpoint.call(request).await?.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "alice-key-0123456789";
    const BOB: &str = "bob-key-9876543210ab";

    fn sha256_hex(key: &str) -> String {
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    #[test]
    fn keys_come_inline_or_from_a_file_as_keys_or_their_hashes() {
        let file = format!(
            "# operators\nroot=sha256:{}\n\ncarol={BOB}x\n",
            sha256_hex(BOB)
        );
        let keys = ApiKeys::parse(Some(&format!("alice={ALICE}")), Some(&file), Some("root"))
            .expect("valid");
        let who = |key: &str| keys.identify(Some(key));
        let alice = Caller::Key {
            name: "alice".into(),
            admin: false,
        };
        let root = Caller::Key {
            name: "root".into(),
            admin: true,
        };
        assert_eq!(who(ALICE), Some(alice));
        assert_eq!(who(BOB), Some(root));
        assert!(who(&format!("{BOB}x")).is_some());
        assert_eq!(who("alice"), None);
        assert_eq!(keys.identify(None), None);
        assert!(!format!("{keys:?}").contains(ALICE));
    }

    #[test]
    fn a_bad_definition_is_refused_without_showing_the_key() {
        let cases = [
            ("alice", "API_KEYS: expected name=key"),
            ("al ice=0123456789abcdef", "must be letters, digits"),
            ("alice=tiny", "shorter than 16 characters"),
            ("alice=sha256:00", "shorter than 16 characters"),
            (
                "alice=0123456789abcdef,alice=fedcba9876543210",
                "defined twice",
            ),
        ];
        for (inline, expected) in cases {
            let err = ApiKeys::parse(Some(inline), None, None).expect_err(inline);
            let text = err.to_string();
            assert!(text.contains(expected), "{inline}: {text}");
            assert!(
                !text.contains("0123456789abcdef") && !text.contains("tiny"),
                "{text}"
            );
        }
        let bad_hash = ApiKeys::parse(None, Some("root=sha256:xyz"), None).expect_err("hash");
        assert!(bad_hash.to_string().contains("64 hex digits"), "{bad_hash}");
        let admin = ApiKeys::parse(Some(&format!("alice={ALICE}")), None, Some("bob"));
        assert_eq!(
            admin.expect_err("admin"),
            KeysError::UnknownAdmin("bob".into())
        );
    }

    #[test]
    fn without_keys_everyone_is_anonymous_and_sees_everything() {
        let keys = ApiKeys::parse(None, None, None).expect("empty");
        assert!(keys.is_empty());
        assert_eq!(keys.identify(None), Some(Caller::Anonymous));
        assert!(Caller::Anonymous.may_see(Some("alice")));
    }

    #[test]
    fn a_job_is_seen_by_its_owner_and_admins_only() {
        let key = |name: &str, admin| Caller::Key {
            name: name.into(),
            admin,
        };
        let cases = [
            (key("alice", false), Some("alice"), true),
            (key("bob", false), Some("alice"), false),
            (key("bob", false), None, false),
            (key("root", true), Some("alice"), true),
            (key("root", true), None, true),
        ];
        for (caller, owner, visible) in cases {
            assert_eq!(caller.may_see(owner), visible, "{caller:?} {owner:?}");
        }
    }
}
