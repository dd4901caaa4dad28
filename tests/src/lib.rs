//! The harness of the black-box tests: the real `jetscribe` binary started as child processes
//! against a private nats-server ([`TestApp`]), local HTTP receivers for webhooks and traces
//! ([`receivers`]), a three-node NATS cluster ([`NatsCluster`]), a real S3 server ([`S3Server`]), deadline-based waiting ([`wait`]), media made with the real ffmpeg
//! ([`media`]), reference transcripts with word error rate ([`reference`](mod@reference)) and
//! `/metrics` read by Prometheus's reference parser ([`prometheus`]).
//! Nothing here is mocked; every server listens on a port the system picked, read back once
//! bound, except those that must be named before they start ([`ports`]).

pub mod app;
pub mod cluster;
pub mod media;
pub mod ports;
pub mod prometheus;
pub mod receivers;
pub mod reference;
pub mod s3;
pub mod wait;

pub use app::TestApp;
pub use cluster::NatsCluster;
pub use receivers::{ScriptedAnswer, TraceCollector, Tripwire, WebhookDelivery, WebhookReceiver};
pub use reference::{JFK_REFERENCE, assert_refused, fixture, word_error_rate};
pub use s3::S3Server;
pub use wait::{JOB_TIMEOUT, wait_for};

use jetscribe_nats::{LocalNatsServer, Pipeline, PipelineSettings};

/// A private nats-server and the pipeline set up on it, with `configure`d settings.
pub async fn private_pipeline(
    configure: impl FnOnce(&mut PipelineSettings),
) -> (LocalNatsServer, Pipeline) {
    let server = LocalNatsServer::start_temporary().expect("nats-server starts");
    let mut settings = PipelineSettings::new(server.url());
    configure(&mut settings);
    let pipeline = Pipeline::connect(settings).await.expect("pipeline set up");
    (server, pipeline)
}

/// Regular files under `dir`, at any depth (none when it does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// Peak resident memory (VmHWM) of process `pid`, in bytes, from /proc.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
