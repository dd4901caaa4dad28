//! Helpers for the black-box tests: the real `jetscribe` binary started as a child process
//! against a private nats-server, a local webhook receiver, deadline-based waiting, and word
//! error rate. Nothing here is mocked.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use jetscribe_nats::LocalNatsServer;
use poem::web::Data;
use poem::{EndpointExt, Route, Server, handler, post};
use tokio::sync::mpsc;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// `target/<profile>/jetscribe`, built by `make build` / `make test` (the test executable lives
/// in `target/<profile>/deps/`).
pub fn jetscribe_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("jetscribe");
    assert!(
        binary.is_file(),
        "{} is missing: run `make test` (it builds the binary first)",
        binary.display()
    );
    binary
}

/// A free loopback port (bound and released; the OS does not hand it out again at once).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

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

/// Running `jetscribe` processes (one `up`, or one process per part) with their own nats-server
/// and data folder.
pub struct TestApp {
    pub base_url: String,
    pub nats_url: String,
    pub http: reqwest::Client,
    /// Each process by the command it runs (`up`, `api`, `transcriber` …).
    children: Vec<(String, Child)>,
    env: Vec<(String, String)>,
    nats: LocalNatsServer,
    pub data_dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts `jetscribe up` with the default model (models/whisper-base) and `extra_env`, and
    /// waits until `/health` answers 200.
    pub async fn spawn(extra_env: &[(&str, &str)]) -> TestApp {
        Self::spawn_parts(&["up"], extra_env).await
    }

    /// Starts one process per command in `parts` (one of them `up` or `api`), and waits until
    /// `/health` answers 200.
    pub async fn spawn_parts(parts: &[&str], extra_env: &[(&str, &str)]) -> TestApp {
        let nats = LocalNatsServer::start_temporary().expect("nats-server starts");
        let data_dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let model = repo_root().join("models/whisper-base");
        assert!(
            model.join("model.bin").is_file(),
            "{} is missing: run `make models`",
            model.display()
        );
        let mut env: Vec<(String, String)> = vec![
            ("NATS_URL".into(), nats.url().into()),
            ("DATA_DIR".into(), data_dir.path().display().to_string()),
            ("BIND_ADDR".into(), format!("127.0.0.1:{port}")),
            ("WHISPER_MODEL".into(), model.display().to_string()),
            ("WEBHOOK_RETRY_DELAY".into(), "0.2".into()),
            // Test receivers listen on 127.0.0.1.
            ("WEBHOOK_ALLOW_PRIVATE".into(), "true".into()),
            (
                "RUST_LOG".into(),
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
        ];
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut app = TestApp {
            base_url: format!("http://127.0.0.1:{port}"),
            nats_url: nats.url().to_owned(),
            http: reqwest::Client::new(),
            children: Vec::new(),
            env,
            nats,
            data_dir,
        };
        for part in parts {
            app.start_part(part);
        }
        let health = format!("{}/health", app.base_url);
        wait_for("jetscribe /health", Duration::from_secs(120), || {
            let request = app.http.get(&health).send();
            async move { request.await.ok().filter(|r| r.status() == 200) }
        })
        .await;
        app
    }

    /// Starts one more process running `part`; returns its pid.
    pub fn start_part(&mut self, part: &str) -> u32 {
        let child = Command::new(jetscribe_binary())
            .arg(part)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .spawn()
            .expect("jetscribe starts");
        let pid = child.id();
        self.children.push((part.to_owned(), child));
        pid
    }

    /// The pid of the newest process running `part`.
    pub fn pid_of(&self, part: &str) -> Option<u32> {
        self.children
            .iter()
            .rev()
            .find(|(name, _)| name == part)
            .map(|(_, child)| child.id())
    }

    /// Kills (SIGKILL: no chance to clean up) the newest process running `part`.
    pub fn kill_part(&mut self, part: &str) {
        if let Some(index) = self.children.iter().rposition(|(name, _)| name == part) {
            let (_, mut child) = self.children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Uploads `file` to `/process` with `query` appended; returns the response.
    pub async fn submit(&self, file: &Path, query: &str) -> reqwest::Response {
        let bytes = tokio::fs::read(file).await.expect("fixture readable");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name),
        );
        self.http
            .post(self.url(&format!("/process{query}")))
            .multipart(form)
            .send()
            .await
            .expect("POST /process")
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// GET `path`, expecting 200 with a text body.
    pub async fn get_text(&self, path: &str) -> String {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), 200, "GET {path}");
        response.text().await.expect("text body")
    }

    /// Stops the app's nats-server (to see how the app copes).
    pub fn stop_nats(&mut self) {
        self.nats.stop();
    }

    /// Sends SIGTERM to every process and waits (at most `timeout` in all) for them to exit;
    /// returns the exit status of the first one (the `up` or `api` process), or `None` on time-out.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        for (_, child) in &self.children {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + timeout;
        let mut first = None;
        for (index, (_, mut child)) in std::mem::take(&mut self.children).into_iter().enumerate() {
            let status = loop {
                if let Ok(Some(status)) = child.try_wait() {
                    break Some(status);
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if index == 0 {
                first = status;
            }
        }
        first
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Checks that `response` refused the request with `status` and a `detail` naming `field`;
/// returns the body.
pub async fn assert_refused(
    response: reqwest::Response,
    status: u16,
    field: &str,
) -> serde_json::Value {
    assert_eq!(response.status(), status);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains(field)),
        "{body}"
    );
    body
}

/// Peak resident memory (VmHWM) of process `pid`, in bytes, from /proc.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A local HTTP server that records every webhook POSTed to it, and answers with scripted
/// statuses (then 200).
pub struct WebhookReceiver {
    pub url: String,
    received: mpsc::UnboundedReceiver<WebhookDelivery>,
}

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    /// Header names in lower case.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body exactly as sent.
    pub raw_body: Vec<u8>,
    pub body: serde_json::Value,
    pub arrived: Instant,
    /// The status the receiver answered.
    pub answered: u16,
}

/// A scripted answer: status and optional Retry-After seconds.
#[derive(Debug, Clone, Copy)]
pub struct ScriptedAnswer {
    pub status: u16,
    pub retry_after_s: Option<u64>,
}

struct ReceiverState {
    sender: mpsc::UnboundedSender<WebhookDelivery>,
    script: std::sync::Mutex<std::collections::VecDeque<ScriptedAnswer>>,
}

#[handler]
async fn receive(
    request: &poem::Request,
    body: Vec<u8>,
    Data(state): Data<&std::sync::Arc<ReceiverState>>,
) -> poem::Response {
    let answer = state
        .script
        .lock()
        .ok()
        .and_then(|mut script| script.pop_front())
        .unwrap_or(ScriptedAnswer {
            status: 200,
            retry_after_s: None,
        });
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let _ = state.sender.send(WebhookDelivery {
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        raw_body: body,
        arrived: Instant::now(),
        answered: answer.status,
    });
    let mut response = poem::Response::builder()
        .status(poem::http::StatusCode::from_u16(answer.status).expect("a valid status"));
    if let Some(seconds) = answer.retry_after_s {
        response = response.header("retry-after", seconds.to_string());
    }
    response.body("ok")
}

impl WebhookReceiver {
    /// A receiver that answers 200 to everything.
    pub async fn start() -> WebhookReceiver {
        Self::scripted(&[]).await
    }

    /// A receiver that answers `script` in order, then 200.
    pub async fn scripted(script: &[ScriptedAnswer]) -> WebhookReceiver {
        let port = free_port();
        let (sender, received) = mpsc::unbounded_channel();
        let state = std::sync::Arc::new(ReceiverState {
            sender,
            script: std::sync::Mutex::new(script.iter().copied().collect()),
        });
        let app = Route::new().at("/hook", post(receive)).data(state);
        let listener = poem::listener::TcpListener::bind(format!("127.0.0.1:{port}"));
        tokio::spawn(Server::new(listener).run(app));
        let url = format!("http://127.0.0.1:{port}/hook");
        // Ready once it answers.
        let http = reqwest::Client::new();
        wait_for("webhook receiver", Duration::from_secs(10), || {
            let request = http.get(&url).send();
            async move { request.await.ok() }
        })
        .await;
        WebhookReceiver { url, received }
    }

    /// The next webhook body, waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> serde_json::Value {
        self.next_delivery(timeout).await.body
    }

    /// The next webhook with its headers and arrival time, waiting at most `timeout`.
    pub async fn next_delivery(&mut self, timeout: Duration) -> WebhookDelivery {
        tokio::time::timeout(timeout, self.received.recv())
            .await
            .expect("a webhook arrives in time")
            .expect("receiver open")
    }

    /// A webhook that arrives within `timeout`, if any.
    pub async fn try_next(&mut self, timeout: Duration) -> Option<WebhookDelivery> {
        tokio::time::timeout(timeout, self.received.recv())
            .await
            .ok()
            .flatten()
    }
}

/// A local OTLP/HTTP endpoint that records every trace export (protobuf bodies).
pub struct TraceCollector {
    /// Base URL for OTEL_EXPORTER_OTLP_ENDPOINT.
    pub endpoint: String,
    received: mpsc::UnboundedReceiver<Vec<u8>>,
}

#[handler]
async fn collect_traces(
    body: Vec<u8>,
    Data(sender): Data<&mpsc::UnboundedSender<Vec<u8>>>,
) -> &'static str {
    let _ = sender.send(body);
    ""
}

impl TraceCollector {
    pub async fn start() -> TraceCollector {
        let port = free_port();
        let (sender, received) = mpsc::unbounded_channel();
        let app = Route::new()
            .at("/v1/traces", post(collect_traces))
            .data(sender);
        let listener = poem::listener::TcpListener::bind(format!("127.0.0.1:{port}"));
        tokio::spawn(Server::new(listener).run(app));
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let probe = format!("{endpoint}/v1/traces");
        wait_for("trace collector", Duration::from_secs(10), || {
            let request = http.get(&probe).send();
            async move { request.await.ok() }
        })
        .await;
        TraceCollector { endpoint, received }
    }

    /// Every export body received so far.
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut bodies = Vec::new();
        while let Ok(body) = self.received.try_recv() {
            bodies.push(body);
        }
        bodies
    }
}

/// Word error rate of `hypothesis` against `reference`, after lower-casing and removing
/// punctuation: (substitutions + deletions + insertions) / reference words.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let words = |text: &str| -> Vec<String> {
        text.to_lowercase()
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let reference = words(reference);
    let hypothesis = words(hypothesis);
    if reference.is_empty() {
        return if hypothesis.is_empty() { 0.0 } else { 1.0 };
    }
    let mut previous: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut current = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            let substitution = previous[j] + usize::from(r != h);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[hypothesis.len()] as f64 / reference.len() as f64
}

#[cfg(test)]
mod tests {
    use super::word_error_rate;

    #[test]
    fn word_error_rate_counts_edits_per_reference_word() {
        assert_eq!(word_error_rate("Ask not, what!", "ask not what"), 0.0);
        assert_eq!(word_error_rate("a b c d", "a x c"), 0.5);
    }
}
