//! Reaching NATS as a production deployment does: a list of servers, a password, a token, a
//! `.creds` file (decentralized JWT authentication), TLS with a client certificate; and a refused credential or certificate that stops a process at once
//! with one clear line, instead of being retried as if the server were down.

use std::path::Path;
use std::process::Command;

use jetscribe_nats::LocalNatsServer;
use jetscribe_tests::app::jetscribe_binary;
use jetscribe_tests::{TestApp, fixture};

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Two certificate authorities, and certificates signed by the first: the server's (for
/// 127.0.0.1) and a client's.
struct Certificates(tempfile::TempDir);

impl Certificates {
    fn make() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = dir.path();
        for ca in ["ca", "other-ca"] {
            let (key, pem, subject) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN={ca}"),
            );
            openssl(
                at,
                &[
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ]
                .into_iter()
                .chain(["-keyout", &key, "-out", &pem, "-subj", &subject])
                .collect::<Vec<_>>(),
            );
        }
        std::fs::write(at.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
        std::fs::write(at.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
        for (name, subject) in [("server", "/CN=127.0.0.1"), ("client", "/CN=jetscribe")] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            openssl(
                at,
                &[
                    "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                    subject,
                ],
            );
            openssl(
                at,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-out",
                    &pem,
                    "-extfile",
                    &ext,
                ],
            );
        }
        Self(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.path().join(name).display().to_string()
    }
}

/// A loopback address where nothing listens.
fn dead_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("bound").port();
    format!("nats://127.0.0.1:{port}")
}

/// Runs `jetscribe decoder` with `env` until it gives up; returns its exit success and what it
/// printed.
fn run_decoder(env: &[(&str, &str)]) -> (bool, String) {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(jetscribe_binary())
        .arg("decoder")
        .env("DATA_DIR", data_dir.path())
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .output()
        .expect("jetscribe runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

#[tokio::test]
async fn a_job_runs_over_a_server_list_whose_first_server_is_down_with_a_password() {
    let nats =
        LocalNatsServer::start_temporary_with(&["--user", "jetscribe", "--pass", "s3cret-pass"])
            .expect("nats-server starts");
    let servers = format!("{},{}", dead_server(), nats.url());
    let app = TestApp::spawn(&[
        ("NATS_URL", &servers),
        ("NATS_USER", "jetscribe"),
        ("NATS_PASSWORD", "s3cret-pass"),
    ])
    .await;
    let job_id = app.submit_job(&fixture("jfk.flac"), "").await;
    let ended = app.wait_until_ended(&job_id).await;
    assert_eq!(ended["status"], "completed", "{ended}");
}

#[tokio::test]
async fn a_job_runs_with_a_token() {
    let nats = LocalNatsServer::start_temporary_with(&["--auth", "t0ken-for-jetscribe"])
        .expect("nats-server starts");
    let app = TestApp::spawn(&[
        ("NATS_URL", nats.url()),
        ("NATS_TOKEN", "t0ken-for-jetscribe"),
    ])
    .await;
    let job_id = app.submit_job(&fixture("jfk.flac"), "").await;
    let ended = app.wait_until_ended(&job_id).await;
    assert_eq!(ended["status"], "completed", "{ended}");
}

#[test]
fn a_refused_password_stops_the_process_at_once_with_one_clear_line() {
    let nats =
        LocalNatsServer::start_temporary_with(&["--user", "jetscribe", "--pass", "s3cret-pass"])
            .expect("nats-server starts");
    let (succeeded, printed) = run_decoder(&[
        ("NATS_URL", nats.url()),
        ("NATS_USER", "jetscribe"),
        ("NATS_PASSWORD", "wrong-guess"),
    ]);
    assert!(!succeeded, "{printed}");
    assert!(printed.contains("authorization violation"), "{printed}");
    // Not taken for a server that is still starting.
    assert!(!printed.contains("NATS not reachable yet"), "{printed}");
    assert!(!printed.contains("wrong-guess"), "{printed}");
}

#[test]
fn a_server_list_that_does_not_parse_is_refused_before_any_connection() {
    let (succeeded, printed) = run_decoder(&[("NATS_URL", "nats://n1:4222,nats://n2:port")]);
    assert!(!succeeded, "{printed}");
    let line = printed.lines().last().unwrap_or_default();
    assert!(
        line.contains("NATS_URL") && line.contains("\"nats://n2:port\""),
        "{printed}"
    );
}

#[tokio::test]
async fn a_job_runs_over_tls_with_a_client_certificate_and_a_server_of_another_ca_is_refused() {
    let certs = Certificates::make();
    let (cert, key, ca) = (
        certs.path("server.pem"),
        certs.path("server.key"),
        certs.path("ca.pem"),
    );
    let nats = LocalNatsServer::start_temporary_with(&[
        "--tlsverify",
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
        "--tlscacert",
        &ca,
    ])
    .expect("nats-server starts");
    let (client_cert, client_key) = (certs.path("client.pem"), certs.path("client.key"));
    let app = TestApp::spawn(&[
        ("NATS_URL", nats.url()),
        ("NATS_CA", &ca),
        ("NATS_CERT", &client_cert),
        ("NATS_KEY", &client_key),
    ])
    .await;
    let job_id = app.submit_job(&fixture("jfk.flac"), "").await;
    let ended = app.wait_until_ended(&job_id).await;
    assert_eq!(ended["status"], "completed", "{ended}");

    // A client that trusts another authority refuses the server's certificate, and stops.
    let other_ca = certs.path("other-ca.pem");
    let (succeeded, printed) = run_decoder(&[
        ("NATS_URL", nats.url()),
        ("NATS_CA", &other_ca),
        ("NATS_CERT", &client_cert),
        ("NATS_KEY", &client_key),
    ]);
    assert!(!succeeded, "{printed}");
    assert!(printed.contains("certificate"), "{printed}");
    assert!(!printed.contains("NATS not reachable yet"), "{printed}");
}

/// A JWT as NATS's decentralized authentication signs it: ed25519 by the issuer's NKey.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let claims = serde_json::json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        encode(header.to_string().as_bytes()),
        encode(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("signed");
    format!("{signed}.{}", encode(&signature))
}

/// An operator, an account with JetStream and a user of it: the server's config (operator
/// mode, the account preloaded) and the user's `.creds` file, as `nsc` would write them.
fn decentralized_auth(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let operator = nkeys::KeyPair::new_operator();
    // JetStream needs a system account in operator mode.
    let system = nkeys::KeyPair::new_account();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "jetscribe-operator",
        serde_json::json!({
            "type": "operator", "version": 2, "system_account": system.public_key(),
        }),
    );
    let system_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "jetscribe",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let user_jwt = nats_jwt(
        &account,
        &user.public_key(),
        "jetscribe-stages",
        serde_json::json!({
            "type": "user", "version": 2, "pub": {}, "sub": {},
            "subs": -1, "data": -1, "payload": -1,
        }),
    );
    let config = dir.join("operator.conf");
    let (system_key, account_key) = (system.public_key(), account.public_key());
    std::fs::write(
        &config,
        format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {system_key}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {system_key}: \"{system_jwt}\"\n  \
             {account_key}: \"{account_jwt}\"\n}}\n"
        ),
    )
    .expect("config written");
    let creds = dir.join("jetscribe.creds");
    let seed = user.seed().expect("a seed");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ),
    )
    .expect("creds written");
    (config, creds)
}

#[tokio::test]
async fn a_job_runs_with_a_creds_file_on_a_server_in_operator_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, creds) = decentralized_auth(dir.path());
    let config = config.display().to_string();
    let nats = LocalNatsServer::start_temporary_with(&["-c", &config]).expect("nats-server starts");
    let creds = creds.display().to_string();
    let app = TestApp::spawn(&[("NATS_URL", nats.url()), ("NATS_CREDS", &creds)]).await;
    let job_id = app.submit_job(&fixture("jfk.flac"), "").await;
    let ended = app.wait_until_ended(&job_id).await;
    assert_eq!(ended["status"], "completed", "{ended}");

    // Another user's creds, signed by no account the server knows: refused at once.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let (_, stranger) = decentralized_auth(elsewhere.path());
    let stranger = stranger.display().to_string();
    let (succeeded, printed) = run_decoder(&[("NATS_URL", nats.url()), ("NATS_CREDS", &stranger)]);
    assert!(!succeeded, "{printed}");
    assert!(printed.contains("authorization violation"), "{printed}");
}
