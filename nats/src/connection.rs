//! How a process reaches NATS: the servers NATS_URL lists, the credentials and TLS it proves
//! itself with, and the first connection, retried while the servers come up but never on an
//! address that does not parse or a credential the server refuses.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::{ConnectError, ConnectErrorKind, ConnectOptions, ServerAddr};
use tracing::warn;

use crate::{ErrorChain, PipelineError, PipelineSettings, redact_url};

/// Credentials and TLS for the NATS connection; all optional, any combination the server's
/// configuration asks for. Secrets never appear in `Debug`.
#[derive(Clone, Default)]
pub struct NatsAuth {
    /// NATS_CREDS: a `.creds` file (a user JWT and its NKey seed).
    pub creds_file: Option<PathBuf>,
    /// NATS_USER and NATS_PASSWORD.
    pub user_password: Option<(String, String)>,
    /// NATS_TOKEN.
    pub token: Option<String>,
    /// NATS_CA: the certificate authority the servers' certificates are checked against.
    pub ca_file: Option<PathBuf>,
    /// NATS_CERT and NATS_KEY: a client certificate, for servers that verify clients.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl NatsAuth {
    /// Whether the connection must be TLS: a CA or a client certificate was given (a `tls://`
    /// URL asks for it as well).
    pub fn requires_tls(&self) -> bool {
        self.ca_file.is_some() || self.client_cert.is_some()
    }

    async fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, PipelineError> {
        // A `tls://` URL, or a server that requires TLS, needs one even without a CA here.
        use_one_crypto_provider();
        if let Some(file) = &self.creds_file {
            options = options.credentials_file(file).await.map_err(|err| {
                PipelineError::Config(format!("NATS_CREDS {}: {err}", file.display()))
            })?;
        }
        if let Some((user, password)) = &self.user_password {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(ca_file) = &self.ca_file {
            options = options.add_root_certificates(ca_file.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.requires_tls()))
    }
}

/// Makes ring the process's TLS crypto provider unless one is chosen: the binary links two
/// (ring for NATS, aws-lc-rs for S3), and rustls then refuses to pick one by itself.
fn use_one_crypto_provider() {
    use async_nats::rustls::crypto::{CryptoProvider, ring};
    if CryptoProvider::get_default().is_none() {
        // Another thread may have installed one meanwhile; either will do.
        drop(ring::default_provider().install_default());
    }
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsAuth")
            .field("creds_file", &self.creds_file)
            .field("user", &self.user_password.as_ref().map(|(user, _)| user))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

/// The servers of NATS_URL: one URL, or several separated by commas (the client connects to
/// one of them and moves to another when it fails). The error names the entry at fault,
/// without its credentials.
pub fn parse_servers(list: &str) -> Result<Vec<ServerAddr>, String> {
    let entries: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    if entries.is_empty() {
        return Err("names no server".to_owned());
    }
    entries
        .into_iter()
        .map(|entry| {
            entry
                .parse::<ServerAddr>()
                .map_err(|err| format!("{:?}: {err}", redact_url(entry)))
        })
        .collect()
}

/// Whether a first connection that failed with `error` may succeed later: the servers are
/// still starting or out of reach. A refused credential, a certificate that does not verify or
/// an address that does not parse fails the same way every time (a failed TLS handshake comes
/// as an I/O error of invalid data).
fn worth_retrying(error: &ConnectError) -> bool {
    let unreachable = matches!(
        error.kind(),
        ConnectErrorKind::Io
            | ConnectErrorKind::TimedOut
            | ConnectErrorKind::Dns
            | ConnectErrorKind::MaxReconnects
    );
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
        {
            return false;
        }
        cause = error.source();
    }
    unreachable
}

/// An event callback that counts every connection after the first
/// (`jetscribe_nats_reconnects_total`).
fn count_reconnects()
-> impl Fn(async_nats::Event) -> futures::future::Ready<()> + Send + Sync + 'static {
    let connected_before = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    move |event| {
        if matches!(event, async_nats::Event::Connected)
            && connected_before.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            jetscribe_metrics::metrics().nats_reconnects.inc();
        }
        futures::future::ready(())
    }
}

/// Connects to one of the servers of `settings.nats_url`, retrying with backoff until
/// `connect_timeout` while none can be reached.
pub(crate) async fn connect_with_retry(
    settings: &PipelineSettings,
) -> Result<async_nats::Client, PipelineError> {
    let servers = parse_servers(&settings.nats_url)
        .map_err(|reason| PipelineError::Config(format!("NATS_URL {reason}")))?;
    let url = redact_url(&settings.nats_url);
    let deadline = tokio::time::Instant::now() + settings.connect_timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        let options = ConnectOptions::new()
            .name(&settings.client_name)
            .connection_timeout(Duration::from_secs(5))
            // Once connected, the client reconnects on its own; this bounds its backoff.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100 * 2u64.pow(attempts.min(6) as u32)).min(5_000))
            })
            .event_callback(count_reconnects());
        let options = settings.auth.apply(options).await?;
        match options.connect(servers.clone()).await {
            Ok(client) => return Ok(client),
            Err(err) if worth_retrying(&err) && tokio::time::Instant::now() + delay < deadline => {
                let (error, retry_in_ms) = (ErrorChain(&err), delay.as_millis() as u64);
                warn!(%url, %error, retry_in_ms, "NATS not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(err) => return Err(PipelineError::Connect { url, source: err }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_url_takes_a_list_and_names_the_entry_it_cannot_read() {
        let cases: [(&str, Result<usize, &str>); 6] = [
            ("nats://127.0.0.1:4222", Ok(1)),
            ("nats://n1:4222,nats://n2:4222, nats://n3:4222", Ok(3)),
            ("tls://nats.example.org", Ok(1)),
            ("nats://n1:4222,,", Ok(1)),
            ("", Err("names no server")),
            (
                "nats://u:secret@n1:4222,nats://n2:port",
                Err("\"nats://n2:port\": NATS server URL is invalid: invalid port number"),
            ),
        ];
        for (list, expected) in cases {
            let parsed = parse_servers(list).map(|servers| servers.len());
            assert_eq!(parsed, expected.map_err(str::to_owned), "{list:?}");
        }
        let refused = parse_servers("nats://u:secret@n1:x").expect_err("bad port");
        assert!(!refused.contains("secret"), "{refused}");
    }

    #[test]
    fn only_failures_that_time_can_mend_are_retried() {
        use std::io::{Error, ErrorKind};
        let io =
            |kind: ErrorKind| ConnectError::with_source(ConnectErrorKind::Io, Error::from(kind));
        let certificate = Error::new(ErrorKind::InvalidData, "invalid peer certificate");
        let cases = [
            (io(ErrorKind::ConnectionRefused), true),
            (ConnectError::new(ConnectErrorKind::TimedOut), true),
            (
                ConnectError::with_source(ConnectErrorKind::Io, certificate),
                false,
            ),
            (
                ConnectError::new(ConnectErrorKind::AuthorizationViolation),
                false,
            ),
            (ConnectError::new(ConnectErrorKind::Tls), false),
            (ConnectError::new(ConnectErrorKind::ServerParse), false),
        ];
        for (error, retried) in cases {
            assert_eq!(worth_retrying(&error), retried, "{error:?}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let auth = NatsAuth {
            user_password: Some(("jetscribe".into(), "hunter2".into())),
            token: Some("t0ken".into()),
            ..Default::default()
        };
        let shown = format!("{auth:?}");
        assert!(shown.contains("jetscribe"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("t0ken"),
            "{shown}"
        );
    }
}
