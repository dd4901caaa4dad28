//! A private `nats-server` with JetStream, run as a child process: `jetscribe up` uses one when
//! NATS_URL is unset, and every test starts its own (random port, temporary store).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tracing::warn;

/// The local server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start nats-server (is it installed? `make deps` installs it): {0}")]
    Spawn(std::io::Error),
    #[error("nats-server exited during start-up ({0}); is the store dir {1} usable?")]
    Exited(std::process::ExitStatus, PathBuf),
    #[error("nats-server did not report its port within {0:?}")]
    Timeout(Duration),
    #[error("nats-server: {0}")]
    Io(#[from] std::io::Error),
}

/// A running `nats-server -js` on a free loopback port. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct LocalNatsServer {
    child: Child,
    url: String,
    store_dir: PathBuf,
    /// Options given on the command line besides those of every local server.
    options: Vec<String>,
    // Keeps a temporary store alive as long as the server.
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for LocalNatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNatsServer")
            .field("url", &self.url)
            .finish()
    }
}

const START_TIMEOUT: Duration = Duration::from_secs(20);

impl LocalNatsServer {
    /// Starts a server that keeps its JetStream data in `store_dir`.
    pub fn start(store_dir: &Path) -> Result<Self, ServerError> {
        Self::start_in(store_dir, Vec::new(), None)
    }

    /// Starts a server whose data lives in a temporary folder removed on drop (for tests).
    pub fn start_temporary() -> Result<Self, ServerError> {
        Self::start_temporary_with(&[])
    }

    /// [`start_temporary`](Self::start_temporary) with more command-line `options` (for tests
    /// of credentials and TLS: `--user`, `--pass`, `--auth`, `--tls` …).
    pub fn start_temporary_with(options: &[&str]) -> Result<Self, ServerError> {
        let temp = tempfile::tempdir()?;
        let store = temp.path().join("store");
        let options = options.iter().map(|option| (*option).to_owned()).collect();
        Self::start_in(&store, options, Some(temp))
    }

    fn start_in(
        store_dir: &Path,
        options: Vec<String>,
        temp: Option<tempfile::TempDir>,
    ) -> Result<Self, ServerError> {
        std::fs::create_dir_all(store_dir)?;
        let (child, url) = spawn_server(store_dir, None, &options)?;
        Ok(Self {
            child,
            url,
            store_dir: store_dir.to_owned(),
            options,
            _temp: temp,
        })
    }

    /// Kills the server (SIGKILL, as in a crash) and starts it again on the same port with the
    /// same store, for clients to reconnect to (tests of the service's recovery).
    pub fn kill_and_restart(&mut self) -> Result<(), ServerError> {
        kill_and_reap(&mut self.child);
        let port = self
            .url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok());
        let (child, url) = spawn_server(&self.store_dir, port, &self.options)?;
        self.child = child;
        self.url = url;
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server: SIGTERM lets it flush its store; SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        if let Err(err) = kill(pid, Signal::SIGTERM) {
            warn!(pid = self.child.id(), error = %err, "cannot send SIGTERM to nats-server");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        warn!(
            pid = self.child.id(),
            "nats-server ignored SIGTERM for 5 s; killing it"
        );
        kill_and_reap(&mut self.child);
    }
}

/// Starts `nats-server -js` on `port` (one the system picks when `None`) with its store in
/// `store_dir` and `options`; returns the child and its client URL once it listens.
fn spawn_server(
    store_dir: &Path,
    port: Option<u16>,
    options: &[String],
) -> Result<(Child, String), ServerError> {
    // nats-server writes `nats-server_<pid>.ports` (JSON with its client URLs) here once it
    // listens: the only race-free way to learn the port it picked.
    let ports_dir = tempfile::tempdir()?;
    let mut child =
        Command::new(std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned()))
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(port.map_or_else(|| "-1".to_owned(), |port| port.to_string()))
            .arg("-sd")
            .arg(store_dir)
            .arg("--ports_file_dir")
            .arg(ports_dir.path())
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(ServerError::Spawn)?;
    let ports_file = ports_dir
        .path()
        .join(format!("nats-server_{}.ports", child.id()));
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(ServerError::Exited(status, store_dir.to_owned()));
        }
        if let Some(url) = read_client_url(&ports_file) {
            return Ok((child, url));
        }
        if started.elapsed() > START_TIMEOUT {
            kill_and_reap(&mut child);
            return Err(ServerError::Timeout(START_TIMEOUT));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL, then wait for the exit so that no zombie is left.
fn kill_and_reap(child: &mut Child) {
    if let Err(err) = child.kill().and_then(|()| child.wait().map(drop)) {
        warn!(pid = child.id(), error = %err, "cannot kill nats-server");
    }
}

impl Drop for LocalNatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_client_url(ports_file: &Path) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Ports {
        nats: Vec<String>,
    }
    let text = std::fs::read_to_string(ports_file).ok()?;
    let ports: Ports = serde_json::from_str(&text).ok()?;
    ports.nats.into_iter().next()
}
