//! The jetscribe service as a library: settings, telemetry, and the commands of the binary (`up`
//! runs the API and every stage in one process; `api`, `decoder`, `transcriber`, `analyzer`,
//! `notifier` run one part, so that each scales by starting more processes). `main.rs` only parses
//! the command line and the environment and calls [`run`].

pub mod settings;
pub mod telemetry;

use std::sync::Arc;

use anyhow::Context as _;
use jetscribe_analyzer::Analyzer;
use jetscribe_api::{ApiSettings, ApiState};
use jetscribe_blobstore::BlobStore;
use jetscribe_decoder::{Decoder, DecoderSettings};
use jetscribe_nats::{
    LocalNatsServer, Pipeline, PipelineSettings, Stage, StageLoopSettings, run_stage,
};
use jetscribe_notifier::{Notifier, WebhookSettings};
use jetscribe_transcriber::{Transcriber, TranscriberSettings};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

pub use settings::Settings;

/// What the binary runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// API and all four stages in one process.
    Up,
    Api,
    Decoder,
    Transcriber,
    Analyzer,
    Notifier,
}

impl Command {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "up" => Command::Up,
            "api" => Command::Api,
            "decoder" => Command::Decoder,
            "transcriber" => Command::Transcriber,
            "analyzer" => Command::Analyzer,
            "notifier" => Command::Notifier,
            _ => return None,
        })
    }

    fn runs_api(self) -> bool {
        matches!(self, Command::Up | Command::Api)
    }

    fn runs(self, part: Command) -> bool {
        self == Command::Up || self == part
    }
}

/// Runs `command` until `shutdown` is cancelled (or a part fails).
pub async fn run(
    command: Command,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // With no NATS_URL, `up` brings its own server, kept until everything else has stopped.
    let mut local_server = None;
    let nats_url = match (&settings.nats_url, command) {
        (Some(url), _) => url.clone(),
        (None, Command::Up) => {
            let store = settings.data_dir.join("nats");
            let server = tokio::task::spawn_blocking(move || LocalNatsServer::start(&store))
                .await?
                .context("starting the local nats-server (NATS_URL is unset)")?;
            info!(url = server.url(), "local nats-server started");
            let url = server.url().to_owned();
            local_server = Some(server);
            url
        }
        (None, _) => anyhow::bail!(
            "NATS_URL is required for `{command:?}` (only `up` starts its own server)"
        ),
    };

    let mut pipeline_settings = PipelineSettings::new(nats_url);
    pipeline_settings.client_name = format!("jetscribe-{command:?}").to_lowercase();
    pipeline_settings.ack_wait = settings.ack_wait;
    pipeline_settings.retention =
        std::time::Duration::from_secs(u64::from(settings.job_cleanup_days) * 24 * 3600);
    let pipeline = Pipeline::connect(pipeline_settings)
        .await
        .context("connecting to NATS")?;
    let blobs = BlobStore::open(&settings.object_store_url).context("opening the object store")?;

    let mut parts = JoinSet::new();
    let loop_settings = StageLoopSettings {
        concurrency: settings.max_concurrent_jobs,
        ..Default::default()
    };
    if command.runs(Command::Decoder) {
        let decoder = Decoder::new(
            blobs.clone(),
            DecoderSettings {
                ffmpeg: settings.ffmpeg_path.clone(),
                ffprobe: settings.ffprobe_path.clone(),
                work_dir: settings.data_dir.join("work"),
            },
        );
        spawn_stage(
            &mut parts,
            "decoder",
            pipeline.clone(),
            decoder,
            loop_settings.clone(),
            shutdown.clone(),
        );
    }
    if command.runs(Command::Transcriber) {
        let transcriber_settings = TranscriberSettings {
            model_dir: settings.whisper_model.clone(),
            threads: settings.whisper_threads,
            batch_size: settings.whisper_batch_size,
            beam_size: settings.whisper_beam_size,
        };
        let store = blobs.clone();
        let transcriber =
            tokio::task::spawn_blocking(move || Transcriber::new(store, &transcriber_settings))
                .await?
                .context("loading the Whisper model (WHISPER_MODEL)")?;
        spawn_stage(
            &mut parts,
            "transcriber",
            pipeline.clone(),
            transcriber,
            loop_settings.clone(),
            shutdown.clone(),
        );
    }
    if command.runs(Command::Analyzer) {
        spawn_stage(
            &mut parts,
            "analyzer",
            pipeline.clone(),
            Analyzer::new(blobs.clone()),
            loop_settings.clone(),
            shutdown.clone(),
        );
    }
    if command.runs(Command::Notifier) {
        let notifier = Notifier::new(
            blobs.clone(),
            WebhookSettings {
                timeout: settings.webhook_timeout,
                max_retries: settings.webhook_max_retries,
                retry_delay: settings.webhook_retry_delay,
                secret: settings.webhook_secret.clone(),
                allow_private: settings.webhook_allow_private,
            },
        )
        .context("creating the webhook client")?;
        spawn_stage(
            &mut parts,
            "notifier",
            pipeline.clone(),
            notifier,
            loop_settings.clone(),
            shutdown.clone(),
        );
    }
    if command.runs_api() {
        let state = ApiState {
            pipeline: pipeline.clone(),
            blobs: blobs.clone(),
            settings: ApiSettings {
                max_file_size: settings.max_file_size,
                webhook_allow_private: settings.webhook_allow_private,
                sync_timeout: settings.sync_timeout,
            },
        };
        tokio::spawn(jetscribe_api::run_blob_cleanup(
            blobs.clone(),
            pipeline.settings().retention,
            shutdown.clone(),
        ));
        let bind_addr = settings.bind_addr.clone();
        let token = shutdown.clone();
        parts.spawn(async move {
            let result = jetscribe_api::serve(&bind_addr, state, token)
                .await
                .with_context(|| format!("serving HTTP on {bind_addr} (BIND_ADDR)"));
            ("api", result)
        });
    }
    info!(?command, "jetscribe running");

    // The first part to end (failure, or shutdown) stops the others.
    let mut outcome = Ok(());
    while let Some(joined) = parts.join_next().await {
        let (part, result) = joined.context("a part of jetscribe panicked")?;
        if let Err(err) = result {
            error!(part, error = format!("{err:#}"), "stopped on error");
            if outcome.is_ok() {
                outcome = Err(err.context(format!("{part} failed")));
            }
        }
        shutdown.cancel();
    }
    pipeline.client().flush().await.ok();
    drop(pipeline);
    if let Some(mut server) = local_server {
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .ok();
    }
    info!("jetscribe stopped");
    outcome
}

fn spawn_stage<S: Stage>(
    parts: &mut JoinSet<(&'static str, anyhow::Result<()>)>,
    name: &'static str,
    pipeline: Pipeline,
    stage: S,
    settings: StageLoopSettings,
    shutdown: CancellationToken,
) {
    parts.spawn(async move {
        let result = run_stage(pipeline, Arc::new(stage), settings, shutdown)
            .await
            .with_context(|| format!("running the {name} stage"));
        (name, result)
    });
}
