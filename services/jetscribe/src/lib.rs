//! The jetscribe service as a library: settings, telemetry, and what the binary runs: `up` runs
//! every part in one process (with its own nats-server when NATS_URL is unset); a part's name
//! (`api`, `decoder`, `transcriber`, `analyzer`, `notifier`) runs that part alone, so that each
//! scales by starting more processes ([`parts`]). `main.rs` only parses the command line and the
//! environment and calls [`run`]; or, for `submit`, `status`, `result`, `watch`, `jobs` and
//! `cancel`, the [`client`] of a running server.

pub mod client;
pub mod parts;
pub mod settings;
pub mod telemetry;

use std::sync::Arc;

use anyhow::Context as _;
use jetscribe_blobstore::BlobStore;
use jetscribe_nats::{LocalNatsServer, Pipeline, PipelineSettings};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use parts::{PARTS, Part, Shared};
pub use settings::Settings;

/// What the binary runs.
#[derive(Clone, Copy)]
pub enum Command {
    /// Every part in one process.
    Up,
    /// One part.
    Part(&'static Part),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Command {
    /// `up`, or the name of a part.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "up" => Some(Command::Up),
            name => parts::part(name).map(Command::Part),
        }
    }

    /// Whether the command serves the HTTP API.
    pub fn runs_api(self) -> bool {
        self.parts().iter().any(|part| part.name == "api")
    }

    pub fn name(self) -> &'static str {
        match self {
            Command::Up => "up",
            Command::Part(part) => part.name,
        }
    }

    fn parts(self) -> Vec<&'static Part> {
        match self {
            Command::Up => PARTS.iter().collect(),
            Command::Part(part) => vec![part],
        }
    }
}

/// Runs `command` until `shutdown` is cancelled (or a part fails).
pub async fn run(
    command: Command,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // With no NATS_URL, `up` brings its own server, kept until everything else has stopped.
    let local_server = match (&settings.nats_url, command) {
        (None, Command::Up) => Some(start_local_nats(&settings).await?),
        (None, _) => anyhow::bail!(
            "NATS_URL is required for `{}` (only `up` starts its own server)",
            command.name()
        ),
        (Some(_), _) => None,
    };
    let nats_url = match &local_server {
        Some(server) => server.url().to_owned(),
        None => settings.nats_url.clone().unwrap_or_default(),
    };
    let pipeline = Pipeline::connect(pipeline_settings(&settings, nats_url, command))
        .await
        .context("connecting to NATS")?;
    let blobs = BlobStore::open(&settings.object_store_url).context("opening the object store")?;
    let shared = Shared {
        settings: Arc::new(settings),
        pipeline: pipeline.clone(),
        blobs,
        shutdown: shutdown.clone(),
    };
    let mut running = JoinSet::new();
    if let Some(addr) = shared.settings.metrics_addr.clone() {
        let serving =
            jetscribe_api::metrics_server(addr.clone(), pipeline.clone(), shutdown.clone());
        running.spawn(async move {
            let served = serving.await;
            (
                "metrics",
                served.with_context(|| format!("serving METRICS_ADDR {addr}")),
            )
        });
    }
    for part in command.parts() {
        let shared = shared.clone();
        running.spawn(async move { (part.name, (part.run)(shared).await) });
    }
    info!(?command, "jetscribe running");
    let outcome = wait_for_parts(running, &shutdown).await;
    // With the server gone, a flush would wait for it forever: the process must still stop.
    match tokio::time::timeout(FLUSH_TIMEOUT, pipeline.client().flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => error!(error = %err, "pending NATS messages not flushed"),
        Err(_) => error!(
            timeout_s = FLUSH_TIMEOUT.as_secs(),
            "pending NATS messages not flushed: no server answered"
        ),
    }
    drop(pipeline);
    if let Some(mut server) = local_server {
        tokio::task::spawn_blocking(move || server.stop()).await?;
    }
    info!("jetscribe stopped");
    outcome
}

/// How long a stopping process waits for NATS to take its last messages.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A nats-server child storing its data in `$DATA_DIR/nats`.
async fn start_local_nats(settings: &Settings) -> anyhow::Result<LocalNatsServer> {
    let store = settings.data_dir.join("nats");
    let server = tokio::task::spawn_blocking(move || LocalNatsServer::start(&store))
        .await?
        .context("starting the local nats-server (NATS_URL is unset)")?;
    info!(url = server.url(), "local nats-server started");
    Ok(server)
}

fn pipeline_settings(settings: &Settings, nats_url: String, command: Command) -> PipelineSettings {
    let mut pipeline = PipelineSettings::new(nats_url);
    pipeline.client_name = format!("jetscribe-{}", command.name());
    pipeline.ack_wait = settings.ack_wait;
    pipeline.max_attempts = settings.max_attempts;
    pipeline.retention = settings.job_cleanup;
    pipeline.models = settings
        .whisper_models
        .iter()
        .map(|model| model.name.clone())
        .collect();
    pipeline.default_model = settings.whisper_default_model.clone();
    // A local nats-server (`up` without NATS_URL) is one node and asks for no credentials.
    if settings.nats_url.is_some() {
        pipeline.replicas = settings.nats_replicas;
        pipeline.auth = settings.nats_auth.clone();
    }
    pipeline
}

/// Waits for every part to end; the first to end (failure, or shutdown) stops the others.
/// Returns the first failure.
async fn wait_for_parts(
    mut running: JoinSet<(&'static str, anyhow::Result<()>)>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut outcome = Ok(());
    while let Some(joined) = running.join_next().await {
        let (part, result) = joined.context("a part of jetscribe panicked")?;
        if let Err(err) = result {
            error!(part, error = format!("{err:#}"), "stopped on error");
            if outcome.is_ok() {
                outcome = Err(err.context(format!("{part} failed")));
            }
        }
        shutdown.cancel();
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_is_a_command_and_up_runs_them_all() {
        for part in PARTS {
            let command = Command::parse(part.name).expect("a command");
            assert_eq!(command.name(), part.name);
            assert_eq!(command.parts().len(), 1);
        }
        let up = Command::parse("up").expect("up");
        assert_eq!(up.parts().len(), PARTS.len());
        assert!(Command::parse("transcribe").is_none());
        // One part per stage, besides the API.
        assert_eq!(PARTS.len(), proto_msgs::Stage::ALL.len() + 1);
    }
}
