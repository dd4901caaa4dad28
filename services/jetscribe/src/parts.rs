//! The table of parts: everything the binary can run. `jetscribe <part>` runs one of them;
//! `jetscribe up` runs them all in one process. Adding a stage adds one row here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use jetscribe_analyzer::Analyzer;
use jetscribe_api::{ApiServer, ApiSettings, ApiState, JanitorSettings};
use jetscribe_blobstore::BlobStore;
use jetscribe_decoder::{Decoder, DecoderSettings};
use jetscribe_nats::{Pipeline, StageHandler, StageLoopSettings, run_stage};
use jetscribe_notifier::{Notifier, WebhookSettings};
use jetscribe_transcriber::{Transcriber, TranscriberSettings};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Settings;

/// What every part is started with.
#[derive(Clone)]
pub struct Shared {
    pub settings: Arc<Settings>,
    pub pipeline: Pipeline,
    pub blobs: BlobStore,
    pub shutdown: CancellationToken,
}

/// A part of jetscribe: its command name, a line for the usage text, and how it runs (until
/// shutdown, or an error).
pub struct Part {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(Shared) -> BoxFuture<'static, anyhow::Result<()>>,
}

/// Every part, in the order `up` starts them.
pub const PARTS: &[Part] = &[
    Part::new("api", "the HTTP API", |shared| Box::pin(api(shared))),
    Part::new("decoder", "the decode stage (ffmpeg)", |shared| {
        Box::pin(decoder(shared))
    }),
    Part::new("transcriber", "the transcribe stage (Whisper)", |shared| {
        Box::pin(transcriber(shared))
    }),
    Part::new(
        "analyzer",
        "the analyze stage (language, topics, stats)",
        |shared| Box::pin(analyzer(shared)),
    ),
    Part::new(
        "notifier",
        "the notify stage (completion, webhooks)",
        |shared| Box::pin(notifier(shared)),
    ),
];

impl Part {
    const fn new(
        name: &'static str,
        about: &'static str,
        run: fn(Shared) -> BoxFuture<'static, anyhow::Result<()>>,
    ) -> Self {
        Self { name, about, run }
    }
}

/// The part called `name`.
pub fn part(name: &str) -> Option<&'static Part> {
    PARTS.iter().find(|part| part.name == name)
}

impl Shared {
    /// Runs a stage's loop with `handler` until shutdown.
    async fn run_stage<S: StageHandler>(&self, handler: S) -> anyhow::Result<()> {
        let settings = StageLoopSettings {
            concurrency: self.settings.max_concurrent_jobs,
            try_timeout: self.settings.stage_timeout,
            shutdown_grace: self.settings.shutdown_grace,
            ..Default::default()
        };
        let stage = <S::Input as proto_msgs::PipelineMessage>::STAGE;
        run_stage(
            self.pipeline.clone(),
            Arc::new(handler),
            settings,
            self.shutdown.clone(),
        )
        .await
        .with_context(|| format!("running the {stage} stage"))
    }
}

async fn api(shared: Shared) -> anyhow::Result<()> {
    let settings = &shared.settings;
    let server = ApiServer::bind(&settings.bind_addr)
        .await
        .with_context(|| format!("listening on {} (BIND_ADDR)", settings.bind_addr))?;
    if let Some(file) = &settings.api_addr_file {
        write_atomically(file, &server.local_addr().to_string())
            .with_context(|| format!("writing API_ADDR_FILE {}", file.display()))?;
    }
    let janitor = JanitorSettings {
        retention: settings.job_cleanup,
        lost_after: settings.ack_wait * 2,
    };
    tokio::spawn(jetscribe_api::run_janitor(
        shared.pipeline.clone(),
        shared.blobs.clone(),
        janitor,
        shared.shutdown.clone(),
    ));
    let api_settings = ApiSettings {
        max_file_size: settings.max_file_size,
        webhook_allow_private: settings.webhook_allow_private,
        sync_timeout: settings.sync_timeout,
        keys: settings.api_keys.clone(),
        rate_limit: settings.rate_limit,
        max_concurrent_uploads: settings.max_concurrent_uploads,
        max_event_streams: settings.max_event_streams,
        min_free_space: settings.min_free_space,
        connections: settings.connections,
        shutdown_grace: settings.shutdown_grace,
    };
    let state = ApiState::new(shared.pipeline.clone(), shared.blobs.clone(), api_settings);
    server
        .run(state, shared.shutdown.clone())
        .await
        .context("serving HTTP")
}

async fn decoder(shared: Shared) -> anyhow::Result<()> {
    let settings = DecoderSettings {
        ffmpeg: shared.settings.ffmpeg_path.clone(),
        ffprobe: shared.settings.ffprobe_path.clone(),
        work_dir: shared.settings.data_dir.join("work"),
        max_duration: shared.settings.max_duration,
        min_free_space: shared.settings.min_free_space,
        probe_timeout: shared.settings.probe_timeout,
    };
    tokio::spawn(sweep_work_dir(
        settings.work_dir.clone(),
        shared.shutdown.clone(),
    ));
    shared
        .run_stage(Decoder::new(shared.blobs.clone(), settings))
        .await
}

/// No decode takes this long: a staging copy older than this belongs to a decoder that died.
const STAGING_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Removes staging copies left in the decoder's work folder by a process that died, at start
/// and then every hour, until `shutdown`.
async fn sweep_work_dir(work_dir: PathBuf, shutdown: CancellationToken) {
    let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every_hour.tick() => {}
        }
        let dir = work_dir.clone();
        let sweep = move || jetscribe_blobstore::remove_stale_entries(&dir, STAGING_MAX_AGE);
        match tokio::task::spawn_blocking(sweep).await {
            Ok(0) => {}
            Ok(removed) => info!(removed, "stale staging copies removed"),
            Err(err) => warn!(error = %err, "work folder sweep panicked"),
        }
    }
}

/// One loop per model served (WHISPER_MODELS), each taking the jobs of its model's pool.
async fn transcriber(shared: Shared) -> anyhow::Result<()> {
    let mut pools = tokio::task::JoinSet::new();
    for model in &shared.settings.whisper_models {
        let settings = TranscriberSettings {
            model: model.name.clone(),
            model_dir: model.dir.clone(),
            threads: shared.settings.whisper_threads,
            batch_size: shared.settings.whisper_batch_size,
            decoding: shared.settings.whisper_decoding.clone(),
            vad: shared.settings.vad.clone(),
        };
        let blobs = shared.blobs.clone();
        // Seconds of blocking work: not on the async threads.
        let transcriber = tokio::task::spawn_blocking(move || Transcriber::new(blobs, &settings))
            .await?
            .with_context(|| {
                let (name, dir) = (&model.name, model.dir.display());
                format!("loading the Whisper model {name} from {dir} (WHISPER_MODELS) and the VAD")
            })?;
        let shared = shared.clone();
        pools.spawn(async move { shared.run_stage(transcriber).await });
    }
    // A pool that fails stops the process: the others are shut down (their tries finish within
    // SHUTDOWN_GRACE or are handed back), and the first failure is reported.
    let mut first_failure = None;
    while let Some(ended) = pools.join_next().await {
        let outcome = ended
            .map_err(anyhow::Error::from)
            .and_then(|outcome| outcome);
        if let Err(failure) = outcome
            && first_failure.is_none()
        {
            shared.shutdown.cancel();
            first_failure = Some(failure);
        }
    }
    first_failure.map_or(Ok(()), Err)
}

async fn analyzer(shared: Shared) -> anyhow::Result<()> {
    shared.run_stage(Analyzer::new(shared.blobs.clone())).await
}

async fn notifier(shared: Shared) -> anyhow::Result<()> {
    let settings = &shared.settings;
    let webhooks = WebhookSettings {
        timeout: settings.webhook_timeout,
        max_retries: settings.webhook_max_retries,
        retry_delay: settings.webhook_retry_delay,
        secret: settings.webhook_secret.clone(),
        allow_private: settings.webhook_allow_private,
    };
    let notifier =
        Notifier::new(shared.blobs.clone(), webhooks).context("creating the webhook client")?;
    shared.run_stage(notifier).await
}

/// Writes `contents` to `file` so that a reader never sees it half written.
fn write_atomically(file: &std::path::Path, contents: &str) -> std::io::Result<()> {
    let partial = file.with_extension("partial");
    std::fs::write(&partial, contents)?;
    std::fs::rename(&partial, file)?;
    info!(file = %file.display(), contents, "address written");
    Ok(())
}
