//! [`TestApp`]: `jetscribe` processes (one `up`, or one per part) with their own nats-server and
//! data folder, driven through HTTP as a user would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use jetscribe_nats::{LocalNatsServer, Pipeline, PipelineSettings};

use crate::reference::repo_root;
use crate::wait::{JOB_TIMEOUT, wait_for};

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

/// Running `jetscribe` processes with their own nats-server and data folder.
pub struct TestApp {
    pub base_url: String,
    pub nats_url: String,
    pub http: reqwest::Client,
    /// Each process by the part it runs (`up`, `api`, `transcriber` …).
    children: Vec<(String, Child)>,
    /// The command each process is started through (with its arguments), if any.
    launcher: Vec<String>,
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

    /// Starts one process per part in `parts` (one of them `up` or `api`), and waits until
    /// `/health` answers 200. The API listens on a port the system picks, read back from
    /// API_ADDR_FILE.
    pub async fn spawn_parts(parts: &[&str], extra_env: &[(&str, &str)]) -> TestApp {
        Self::spawn_through(Vec::new(), parts, extra_env).await
    }

    /// [`spawn_parts`](Self::spawn_parts), each process without the privilege to ignore file
    /// permissions when the tests run as root (setpriv drops CAP_DAC_OVERRIDE and
    /// CAP_DAC_READ_SEARCH): a folder made unreadable is then unreadable to them, as to any
    /// service deployed under its own user.
    pub async fn spawn_parts_unprivileged(parts: &[&str], extra_env: &[(&str, &str)]) -> TestApp {
        Self::spawn_through(unprivileged_launcher(), parts, extra_env).await
    }

    async fn spawn_through(
        launcher: Vec<String>,
        parts: &[&str],
        extra_env: &[(&str, &str)],
    ) -> TestApp {
        let nats = LocalNatsServer::start_temporary().expect("nats-server starts");
        let data_dir = tempfile::tempdir().expect("tempdir");
        let addr_file = data_dir.path().join("api.addr");
        let model = repo_root().join("models/whisper-base");
        assert!(
            model.join("model.bin").is_file(),
            "{} is missing: run `make models`",
            model.display()
        );
        let mut env: Vec<(String, String)> = vec![
            ("NATS_URL".into(), nats.url().into()),
            ("DATA_DIR".into(), data_dir.path().display().to_string()),
            ("BIND_ADDR".into(), "127.0.0.1:0".into()),
            ("API_ADDR_FILE".into(), addr_file.display().to_string()),
            ("WHISPER_MODEL".into(), model.display().to_string()),
            (
                "ONNXRUNTIME_LIB".into(),
                repo_root()
                    .join("vendor/onnxruntime/lib/libonnxruntime.so.1.31.1")
                    .display()
                    .to_string(),
            ),
            (
                "VAD_MODEL".into(),
                repo_root()
                    .join("models/silero-vad/silero_vad.onnx")
                    .display()
                    .to_string(),
            ),
            ("WEBHOOK_RETRY_DELAY".into(), "0.2".into()),
            // Test receivers listen on 127.0.0.1.
            ("WEBHOOK_ALLOW_PRIVATE".into(), "true".into()),
            (
                "RUST_LOG".into(),
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
        ];
        env.extend(extra_env.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        let mut app = TestApp {
            base_url: String::new(),
            nats_url: nats.url().to_owned(),
            http: reqwest::Client::new(),
            children: Vec::new(),
            launcher,
            env,
            nats,
            data_dir,
        };
        for part in parts {
            app.start_part(part);
        }
        let addr = wait_for("API_ADDR_FILE", Duration::from_secs(120), || {
            let written = std::fs::read_to_string(&addr_file).ok();
            async move { written }
        })
        .await;
        app.base_url = format!("http://{addr}");
        let health = app.url("/health");
        wait_for("jetscribe /health", Duration::from_secs(120), || {
            let request = app.http.get(&health).send();
            async move { request.await.ok().filter(|r| r.status() == 200) }
        })
        .await;
        app
    }

    /// Starts one more process running `part`; returns its pid.
    pub fn start_part(&mut self, part: &str) -> u32 {
        self.start_part_with(part, &[])
    }

    /// [`start_part`](Self::start_part) with `extra_env` added to (or replacing) this app's
    /// environment for that process alone.
    pub fn start_part_with(&mut self, part: &str, extra_env: &[(&str, &str)]) -> u32 {
        let mut command = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(jetscribe_binary());
                command
            }
            None => Command::new(jetscribe_binary()),
        };
        // S3 settings come from the test alone, never from the environment it runs in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        // The launcher execs the binary: the pid is the process's own.
        let child = command
            .arg(part)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_env.iter().copied())
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
            child.kill().expect("the process can be killed");
            child.wait().expect("the process ends");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// POSTs `file` as the multipart field `file`, after the form fields `fields`, to `path`
    /// (which may carry a query string).
    pub async fn post_file(
        &self,
        path: &str,
        file: &Path,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let bytes = tokio::fs::read(file).await.expect("file readable");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut form = reqwest::multipart::Form::new();
        for (field, value) in fields {
            form = form.text((*field).to_owned(), (*value).to_owned());
        }
        let form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name),
        );
        self.post_form(path, form).await
    }

    /// POSTs `form` to `path`.
    pub async fn post_form(&self, path: &str, form: reqwest::multipart::Form) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .multipart(form)
            .send()
            .await
            .expect("POST")
    }

    /// A `POST /process` whose file (`big.bin`) is `chunks`, streamed as they come: a client
    /// that sends its upload at its own pace.
    pub fn post_streamed_file<S>(&self, chunks: S) -> reqwest::RequestBuilder
    where
        S: futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
    {
        use futures::StreamExt;
        const BOUNDARY: &str = "jetscribe-streamed-upload";
        let head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{BOUNDARY}--\r\n");
        let body = futures::stream::iter([Ok(head.into_bytes())])
            .chain(chunks)
            .chain(futures::stream::iter([Ok(tail.into_bytes())]));
        self.http
            .post(self.url("/process"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(reqwest::Body::wrap_stream(body))
    }

    /// Uploads `file` to `/process` with `query` appended; returns the response.
    pub async fn submit(&self, file: &Path, query: &str) -> reqwest::Response {
        self.post_file(&format!("/process{query}"), file, &[]).await
    }

    /// [`submit`](Self::submit), expecting 202; returns the job id.
    pub async fn submit_job(&self, file: &Path, query: &str) -> String {
        let response = self.submit(file, query).await;
        assert_eq!(response.status(), 202, "{}", file.display());
        let accepted: serde_json::Value = response.json().await.expect("json");
        accepted["job_id"].as_str().expect("job_id").to_owned()
    }

    /// Polls `/status` until the job ends; returns the last body and every progress value seen.
    pub async fn follow_status(&self, job_id: &str) -> (serde_json::Value, Vec<u64>) {
        self.follow_status_for(job_id, JOB_TIMEOUT).await
    }

    /// [`follow_status`](Self::follow_status) with a deadline of `timeout`.
    pub async fn follow_status_for(
        &self,
        job_id: &str,
        timeout: Duration,
    ) -> (serde_json::Value, Vec<u64>) {
        let mut seen = Vec::new();
        let deadline = Instant::now() + timeout;
        loop {
            let (code, body) = self.get_json(&format!("/status/{job_id}")).await;
            assert_eq!(code, 200, "{body}");
            seen.push(body["progress"].as_u64().expect("progress is a number"));
            if matches!(
                body["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return (body, seen);
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} did not end in {timeout:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The `/status` body once the job has ended.
    pub async fn wait_until_ended(&self, job_id: &str) -> serde_json::Value {
        self.follow_status(job_id).await.0
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

    /// Sends `key` (as `Authorization: Bearer`) with every request from now on; `None`: none.
    pub fn set_api_key(&mut self, key: Option<&str>) {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key {
            let value = format!("Bearer {key}").parse().expect("a header value");
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        self.http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("an HTTP client");
    }

    /// A client of the app's JetStream, to read what the app stored.
    pub async fn pipeline(&self) -> Pipeline {
        Pipeline::connect(PipelineSettings::new(self.nats_url.clone()))
            .await
            .expect("the app's NATS answers")
    }

    /// GETs `path`, expecting `status` with a `detail` that contains `detail`; returns the body.
    pub async fn get_refused(&self, path: &str, status: u16, detail: &str) -> serde_json::Value {
        let (code, body) = self.get_json(path).await;
        assert_eq!(code, status, "GET {path}: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(detail)),
            "GET {path}: {body}"
        );
        body
    }

    /// Kills the app's nats-server (SIGKILL) and starts it again on the same port and store.
    pub fn restart_nats(&mut self) {
        self.nats.kill_and_restart().expect("nats-server restarts");
    }

    /// Sends SIGTERM to the newest process running `part` and waits (30 s at most) for it to
    /// exit; returns how it exited.
    pub fn terminate_part(&mut self, part: &str) -> ExitStatus {
        self.send_sigterm(part);
        self.wait_for_exit(part, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{part} did not exit within 30 s of SIGTERM"))
    }

    /// Sends SIGTERM to the newest process running `part`, without waiting.
    pub fn send_sigterm(&self, part: &str) {
        let (_, child) = self
            .children
            .iter()
            .rev()
            .find(|(name, _)| name == part)
            .expect("a process runs that part");
        send_sigterm(child);
    }

    /// Waits (`timeout` at most) for the newest process running `part` to exit, and forgets
    /// it; returns how it exited, or `None` (and kills it) if it did not.
    pub fn wait_for_exit(&mut self, part: &str, timeout: Duration) -> Option<ExitStatus> {
        let index = self
            .children
            .iter()
            .rposition(|(name, _)| name == part)
            .expect("a process runs that part");
        let (_, mut child) = self.children.remove(index);
        exit_status_by(&mut child, Instant::now() + timeout)
    }

    /// The parts whose processes have exited without the test stopping them.
    pub fn exited_parts(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(part, child)| match child.try_wait() {
                Ok(Some(_)) => Some(part.clone()),
                _ => None,
            })
            .collect()
    }

    /// Stops the app's nats-server (to see how the app copes).
    pub fn stop_nats(&mut self) {
        self.nats.stop();
    }

    /// Sends SIGTERM to every process and waits (at most `timeout` in all) for them to exit;
    /// returns the exit status of the first one (the `up` or `api` process), or `None` on time-out.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        for (_, child) in &self.children {
            send_sigterm(child);
        }
        let deadline = Instant::now() + timeout;
        let mut first = None;
        for (index, (_, mut child)) in std::mem::take(&mut self.children).into_iter().enumerate() {
            let status = exit_status_by(&mut child, deadline);
            if index == 0 {
                first = status;
            }
        }
        first
    }
}

fn send_sigterm(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "SIGTERM to {}", child.id());
}

/// How `child` exited, once it has; `None` if it still runs at `deadline`, and is then killed
/// (a process must not outlive its test).
fn exit_status_by(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            drop(child.kill());
            drop(child.wait());
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `setpriv` dropping the capabilities that let root ignore file permissions, when the tests
/// run as root; nothing otherwise.
pub fn unprivileged_launcher() -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0);
    if !root {
        return Vec::new();
    }
    [
        "setpriv",
        "--bounding-set=-dac_override,-dac_read_search",
        "--",
    ]
    .map(str::to_owned)
    .to_vec()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            // Already ended, or ending: nothing to report from a destructor.
            drop(child.kill());
            drop(child.wait());
        }
    }
}
