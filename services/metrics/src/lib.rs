//! Prometheus metrics of every jetscribe process: one registry per process ([`metrics`]), the
//! families each part records into, and their text exposition ([`encode`]) that the API serves
//! on `/metrics` and a stage process on METRICS_ADDR. Names follow Prometheus's conventions:
//! `jetscribe_` first, the unit last (`_seconds`, `_bytes`), counters end in `_total`.
//!
//! What is recorded where:
//! - the stage loop: each try's duration by stage and outcome, tries running now;
//! - every process on a scrape: each queue's depth and messages in progress (read from
//!   JetStream: an autoscaler sees the same figures a KEDA scaler reads);
//! - the API: jobs by state (at each janitor sweep), submissions, bytes uploaded;
//! - the transcriber: real-time factor and media seconds per model;
//! - the notifier: webhook attempts by outcome;
//! - the NATS connection: reconnects.

use std::sync::OnceLock;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`encode`]'s text (OpenMetrics 1.0, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A stage.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
}

/// A stage's try and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TryLabels {
    pub stage: String,
    /// `forwarded`, `finished`, `retried`, `failed`, `waiting` (an outage), `rescheduled`,
    /// `too_early`, `handed_back`, `cancelled`.
    pub outcome: String,
}

/// One queue: a stage, and the model pool for the transcriber (empty for other stages).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub stage: String,
    pub model: String,
}

/// A Whisper model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

/// A job state (`pending`, `processing`, `completed`, `failed`, `cancelled`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// How a webhook attempt ended (`delivered`, `retry`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// A gauge per label set.
pub type GaugeFamily<L> = Family<L, Gauge>;

/// Histogram families are made per label set by a plain function.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of a process.
pub struct Metrics {
    /// `jetscribe_jobs{state}`: jobs by state, as of the API janitor's last sweep.
    pub jobs: Family<StateLabel, Gauge>,
    /// `jetscribe_jobs_submitted_total`: jobs accepted by this API process.
    pub jobs_submitted: Counter,
    /// `jetscribe_uploaded_bytes_total`: bytes of accepted uploads.
    pub uploaded_bytes: Counter,
    /// `jetscribe_stage_duration_seconds{stage,outcome}`: one observation per try.
    pub stage_duration: Histograms<TryLabels>,
    /// `jetscribe_stage_tries_running{stage}`: tries this process runs now.
    pub tries_running: Family<StageLabel, Gauge>,
    /// `jetscribe_queue_messages{stage,model}`: jobs waiting for a worker of the queue.
    pub queue_waiting: GaugeFamily<QueueLabels>,
    /// `jetscribe_queue_in_progress{stage,model}`: jobs delivered to a worker and not done.
    pub queue_in_progress: GaugeFamily<QueueLabels>,
    /// `jetscribe_queue_idle_workers{stage,model}`: workers waiting for a job now.
    pub queue_idle_workers: GaugeFamily<QueueLabels>,
    /// `jetscribe_transcribe_real_time_factor{model}`: seconds of transcription per second of
    /// media, one observation per job (below 1: faster than real time).
    pub real_time_factor: Histograms<ModelLabel>,
    /// `jetscribe_transcribed_media_seconds_total{model}`.
    pub transcribed_media: Family<ModelLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// `jetscribe_webhook_attempts_total{outcome}`.
    pub webhook_attempts: Family<OutcomeLabel, Counter>,
    /// `jetscribe_nats_reconnects_total`: connections made again after one was lost.
    pub nats_reconnects: Counter,
    registry: Registry,
}

fn duration_buckets() -> Histogram {
    // 10 ms to about 5.8 hours.
    Histogram::new(exponential_buckets(0.01, 3.0, 13))
}

fn factor_buckets() -> Histogram {
    Histogram::new([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0])
}

impl Metrics {
    fn new() -> Self {
        let metrics = Self {
            jobs: Family::default(),
            jobs_submitted: Counter::default(),
            uploaded_bytes: Counter::default(),
            stage_duration: Family::new_with_constructor(duration_buckets as fn() -> Histogram),
            tries_running: Family::default(),
            queue_waiting: Family::default(),
            queue_in_progress: Family::default(),
            queue_idle_workers: Family::default(),
            real_time_factor: Family::new_with_constructor(factor_buckets as fn() -> Histogram),
            transcribed_media: Family::default(),
            webhook_attempts: Family::default(),
            nats_reconnects: Counter::default(),
            registry: Registry::with_prefix("jetscribe"),
        };
        metrics.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "jobs",
            "Jobs by state, as of the last janitor sweep",
            self.jobs.clone(),
        );
        r.register(
            "jobs_submitted",
            "Jobs accepted by this API process",
            self.jobs_submitted.clone(),
        );
        r.register_with_unit(
            "uploaded",
            "Bytes of accepted uploads",
            Unit::Bytes,
            self.uploaded_bytes.clone(),
        );
        r.register_with_unit(
            "stage_duration",
            "Duration of each stage try, by how it ended",
            Unit::Seconds,
            self.stage_duration.clone(),
        );
        r.register(
            "stage_tries_running",
            "Stage tries this process runs now",
            self.tries_running.clone(),
        );
        r.register(
            "queue_messages",
            "Jobs waiting in a queue for a worker",
            self.queue_waiting.clone(),
        );
        r.register(
            "queue_in_progress",
            "Jobs delivered to a worker of a queue and not yet done",
            self.queue_in_progress.clone(),
        );
        r.register(
            "queue_idle_workers",
            "Workers of a queue waiting for a job now",
            self.queue_idle_workers.clone(),
        );
        r.register(
            "transcribe_real_time_factor",
            "Seconds of transcription per second of media, per job",
            self.real_time_factor.clone(),
        );
        r.register_with_unit(
            "transcribed_media",
            "Media transcribed",
            Unit::Seconds,
            self.transcribed_media.clone(),
        );
        r.register(
            "webhook_attempts",
            "Webhook attempts by outcome",
            self.webhook_attempts.clone(),
        );
        r.register(
            "nats_reconnects",
            "NATS connections made again after one was lost",
            self.nats_reconnects.clone(),
        );
        self
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Every metric of this process in the text exposition format ([`CONTENT_TYPE`]).
pub fn encode() -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics().registry)
        .expect("writing to a String does not fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = metrics();
        m.jobs_submitted.inc();
        m.uploaded_bytes.inc_by(10);
        let labels = TryLabels {
            stage: "decode".into(),
            outcome: "forwarded".into(),
        };
        m.stage_duration.get_or_create(&labels).observe(0.5);
        let text = encode();
        for line in [
            "# TYPE jetscribe_jobs_submitted counter",
            "jetscribe_jobs_submitted_total 1",
            "# UNIT jetscribe_uploaded_bytes bytes",
            "jetscribe_uploaded_bytes_total 10",
            "# TYPE jetscribe_stage_duration_seconds histogram",
            "jetscribe_stage_duration_seconds_count{stage=\"decode\",outcome=\"forwarded\"} 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
