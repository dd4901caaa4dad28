//! Reaching NATS as a production deployment does: a list of servers, a password, TLS with a
//! client certificate; and a refused credential or certificate that stops a process at once
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
