//! One typed settings struct, read from the environment with the variable names of the service
//! jetscribe replaces. A bad value stops start-up with one line naming the variable and what it
//! expects.

use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jetscribe_transcriber::{DecodingOptions, VadSettings};
use proto_msgs::ModelName;

/// A variable holds a value jetscribe cannot use.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}={value:?}: expected {expected}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub value: String,
    pub expected: String,
}

/// Everything jetscribe reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// NATS_URL: one server or several, comma-separated; `None`: `up` starts a local
    /// nats-server.
    pub nats_url: Option<String>,
    /// NATS_REPLICAS (1 to 5): copies of every stream, consumer and bucket in a NATS cluster;
    /// unset: new ones get 1 and existing ones keep theirs.
    pub nats_replicas: Option<usize>,
    /// NATS_CREDS, NATS_USER and NATS_PASSWORD, NATS_TOKEN, NATS_CA, NATS_CERT and NATS_KEY:
    /// how the processes prove themselves to the servers of NATS_URL.
    pub nats_auth: jetscribe_nats::NatsAuth,
    /// DATA_DIR (default `./data`), absolute.
    pub data_dir: PathBuf,
    /// OBJECT_STORE_URL (default `file://$DATA_DIR/blobs`).
    pub object_store_url: String,
    /// The Whisper models a transcriber serves, each its own pool: WHISPER_MODELS, or the one
    /// model of WHISPER_MODEL (default `models/whisper-base`).
    pub whisper_models: Vec<WhisperModel>,
    /// WHISPER_DEFAULT_MODEL: the model of a job that names none (default: the first of
    /// `whisper_models`).
    pub whisper_default_model: ModelName,
    /// WHISPER_THREADS (default: all cores).
    pub whisper_threads: usize,
    /// WHISPER_BATCH_SIZE (default 4).
    pub whisper_batch_size: usize,
    /// How windows are decoded: WHISPER_BEAM_SIZE (default 5), WHISPER_BEST_OF (5),
    /// WHISPER_TEMPERATURES (0,0.2,0.4,0.6,0.8,1.0), WHISPER_COMPRESSION_RATIO_THRESHOLD (2.4),
    /// WHISPER_LOG_PROB_THRESHOLD (-1), WHISPER_NO_SPEECH_THRESHOLD (0.6; each threshold `off`
    /// to disable), WHISPER_CONDITION_ON_PREVIOUS_TEXT (false, as faster-whisper's batched mode),
    /// WHISPER_PROMPT_RESET_ON_TEMPERATURE (0.5): faster-whisper's defaults.
    pub whisper_decoding: DecodingOptions,
    /// The voice activity detector: ONNXRUNTIME_LIB (default
    /// `vendor/onnxruntime/lib/libonnxruntime.so.1.31.1`), VAD_MODEL (default
    /// `models/silero-vad/silero_vad.onnx`), VAD_MIN_SILENCE_MS (default 2000: the silence that
    /// ends a chunk of speech), all relative to the working folder unless absolute.
    pub vad: VadSettings,
    /// FFMPEG_PATH (default `ffmpeg` from PATH).
    pub ffmpeg_path: PathBuf,
    /// FFPROBE_PATH (default: `ffprobe` beside FFMPEG_PATH, else from PATH).
    pub ffprobe_path: PathBuf,
    /// PROBE_TIMEOUT in seconds (default 60): ffprobe still running after it is killed and the
    /// job fails.
    pub probe_timeout: Duration,
    /// BIND_ADDR (default `0.0.0.0:8000` with API keys, `127.0.0.1:8000` without); port 0 lets
    /// the system pick one.
    pub bind_addr: String,
    /// API_KEYS, API_KEYS_FILE and ADMIN_KEYS; none: the API is open to whoever reaches it.
    pub api_keys: jetscribe_api::ApiKeys,
    /// ALLOW_ANONYMOUS (default false): serve without keys on a non-loopback BIND_ADDR.
    pub allow_anonymous: bool,
    /// API_ADDR_FILE: where the API writes the address it listens on, once it does.
    pub api_addr_file: Option<PathBuf>,
    /// MAX_CONCURRENT_JOBS per stage and process (default 2).
    pub max_concurrent_jobs: usize,
    /// JOB_CLEANUP_DAYS (default 7; fractions allowed, `0.5` is 12 h): how long a finished job's
    /// record, events and files are kept.
    pub job_cleanup: Duration,
    /// WEBHOOK_TIMEOUT in seconds (default 30).
    pub webhook_timeout: Duration,
    /// WEBHOOK_MAX_RETRIES (default 3).
    pub webhook_max_retries: u32,
    /// WEBHOOK_RETRY_DELAY in seconds (default 5): before the first retry; doubles after.
    pub webhook_retry_delay: Duration,
    /// WEBHOOK_SECRET (`whsec_<base64 key>`): webhooks are signed when set.
    pub webhook_secret: Option<jetscribe_notifier::WebhookSecret>,
    /// WEBHOOK_ALLOW_PRIVATE (default false): allow webhooks to loopback, private and link-local
    /// addresses.
    pub webhook_allow_private: bool,
    /// SYNC_TIMEOUT in seconds (default 300): how long `/process-audio` and `/process-video`
    /// wait for the job before answering 504 with its id.
    pub sync_timeout: Duration,
    /// MAX_FILE_SIZE in bytes (default 20G; accepts K, M, G, T suffixes).
    pub max_file_size: u64,
    /// MAX_DURATION (default 12h; `90m`, `3600s` or seconds): longer media fails its job.
    pub max_duration: Duration,
    /// RATE_LIMIT (default `60/min`; `off`): submissions per key, or per address without keys.
    pub rate_limit: Option<jetscribe_api::RateLimit>,
    /// MAX_CONCURRENT_UPLOADS (default 32): uploads received at once; past it, 503.
    pub max_concurrent_uploads: usize,
    /// MAX_EVENT_STREAMS (default 1000): `/events` streams and synchronous waits at once.
    pub max_event_streams: usize,
    /// MIN_FREE_SPACE in bytes (default 2G; 0: not checked): below it, a local store refuses
    /// uploads (507) and the decoder fails jobs rather than fill the disk.
    pub min_free_space: u64,
    /// MAX_CONNECTIONS (default 10000), HEADER_READ_TIMEOUT (default 10 s) and IDLE_TIMEOUT
    /// (default 60 s).
    pub connections: jetscribe_api::ConnectionLimits,
    /// JOB_ACK_WAIT in seconds (default 60): how long a stage may go silent before its message
    /// is handed to another process.
    pub ack_wait: Duration,
    /// STAGE_TIMEOUT in seconds (default 600): the least time one try of a stage may run on a
    /// job; longer media get more (the decoder a second per MB, the transcriber three times the
    /// media's length). A try past it is stopped and counts as failed.
    pub stage_timeout: Duration,
    /// SHUTDOWN_GRACE in seconds (default 20): on SIGTERM a stage stops pulling and its running
    /// tries may finish within it (the rest are handed back, not counted as failed); the API
    /// stops accepting connections and finishes the requests in flight within it.
    pub shutdown_grace: Duration,
    /// JOB_MAX_ATTEMPTS (default 5): failed tries of one stage (errors, panics, a process that
    /// died on the job) before the job fails and its message is kept as a dead letter.
    pub max_attempts: u32,
    /// LOG_FORMAT: `json` or `text` (default).
    pub log_json: bool,
    /// METRICS_ADDR: where `GET /metrics` is served alone, without keys (any process); unset:
    /// only the API serves it, on BIND_ADDR, behind its keys.
    pub metrics_addr: Option<String>,
    /// OTEL_EXPORTER_OTLP_ENDPOINT: traces are exported when set.
    pub otlp_endpoint: Option<String>,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let vars = Vars(&lookup);
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let data_dir = absolute(&cwd, &vars.text_or("DATA_DIR", "data"));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let api_keys = api_keys(&vars)?;
        // Without keys, whoever reaches the API reads every transcript: loopback unless told.
        let default_bind = match api_keys.is_empty() {
            true => "127.0.0.1:8000",
            false => "0.0.0.0:8000",
        };
        Ok(Self {
            nats_url: nats_url(&vars)?,
            nats_replicas: match vars.text("NATS_REPLICAS") {
                Some(_) => Some(vars.number("NATS_REPLICAS", 1, 1..=5, "replicas")?),
                None => None,
            },
            nats_auth: nats_auth(&vars)?,
            object_store_url: vars
                .text("OBJECT_STORE_URL")
                .unwrap_or_else(|| format!("file://{}", data_dir.join("blobs").display())),
            whisper_models: whisper_models(&vars, &cwd)?,
            whisper_default_model: default_model(&vars, &cwd)?,
            whisper_threads: vars.number("WHISPER_THREADS", cores, 1..=4096, "threads")?,
            whisper_batch_size: vars.number("WHISPER_BATCH_SIZE", 4, 1..=32, "30 s windows")?,
            whisper_decoding: decoding_options(&vars)?,
            vad: vad_settings(&vars, &cwd)?,
            ffprobe_path: default_ffprobe(vars.text("FFPROBE_PATH"), vars.text("FFMPEG_PATH")),
            ffmpeg_path: PathBuf::from(vars.text_or("FFMPEG_PATH", "ffmpeg")),
            probe_timeout: vars.seconds("PROBE_TIMEOUT", 60.0)?,
            bind_addr: vars.socket_addr("BIND_ADDR", default_bind)?,
            api_keys,
            allow_anonymous: vars.boolean("ALLOW_ANONYMOUS", false)?,
            api_addr_file: vars.text("API_ADDR_FILE").map(|file| absolute(&cwd, &file)),
            max_concurrent_jobs: vars.number("MAX_CONCURRENT_JOBS", 2, 1..=10_000, "jobs")?,
            job_cleanup: vars.days("JOB_CLEANUP_DAYS", 7.0)?,
            webhook_timeout: vars.seconds("WEBHOOK_TIMEOUT", 30.0)?,
            webhook_max_retries: vars.number("WEBHOOK_MAX_RETRIES", 3, 0..=100, "retries")?,
            webhook_retry_delay: vars.seconds("WEBHOOK_RETRY_DELAY", 5.0)?,
            webhook_secret: webhook_secret(vars.text("WEBHOOK_SECRET"))?,
            webhook_allow_private: vars.boolean("WEBHOOK_ALLOW_PRIVATE", false)?,
            sync_timeout: vars.seconds("SYNC_TIMEOUT", 300.0)?,
            max_file_size: vars.size("MAX_FILE_SIZE", 20 << 30)?,
            ack_wait: vars.seconds("JOB_ACK_WAIT", 60.0)?,
            max_attempts: vars.number("JOB_MAX_ATTEMPTS", 5, 1..=100, "attempts")?,
            stage_timeout: vars.seconds("STAGE_TIMEOUT", 600.0)?,
            shutdown_grace: vars.seconds("SHUTDOWN_GRACE", 20.0)?,
            rate_limit: vars.rate_limit("RATE_LIMIT", "60/min")?,
            max_concurrent_uploads: vars.number(
                "MAX_CONCURRENT_UPLOADS",
                32,
                1..=100_000,
                "uploads",
            )?,
            max_event_streams: vars.number("MAX_EVENT_STREAMS", 1000, 1..=1_000_000, "streams")?,
            min_free_space: vars.size_or_zero("MIN_FREE_SPACE", 2 << 30)?,
            connections: jetscribe_api::ConnectionLimits {
                max_connections: vars.number(
                    "MAX_CONNECTIONS",
                    10_000,
                    1..=1_000_000,
                    "connections",
                )?,
                header_read_timeout: vars.seconds("HEADER_READ_TIMEOUT", 10.0)?,
                idle_timeout: vars.seconds("IDLE_TIMEOUT", 60.0)?,
            },
            max_duration: vars.length("MAX_DURATION", Duration::from_secs(12 * 3600))?,
            log_json: vars.choice("LOG_FORMAT", &[("text", false), ("json", true)], false)?,
            otlp_endpoint: vars.text("OTEL_EXPORTER_OTLP_ENDPOINT"),
            metrics_addr: match vars.text("METRICS_ADDR") {
                Some(_) => Some(vars.socket_addr("METRICS_ADDR", "")?),
                None => None,
            },
            data_dir,
        })
    }
}

/// A Whisper model served by the transcriber: its name (its pool) and its CTranslate2 folder.
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperModel {
    pub name: ModelName,
    pub dir: PathBuf,
}

/// The decoding settings; every default is faster-whisper's.
/// ONNXRUNTIME_LIB, VAD_MODEL (relative to `cwd` unless absolute) and VAD_MIN_SILENCE_MS.
fn vad_settings(vars: &Vars, cwd: &Path) -> Result<VadSettings, SettingsError> {
    Ok(VadSettings {
        library: absolute(
            cwd,
            &vars.text_or("ONNXRUNTIME_LIB", DEFAULT_ONNXRUNTIME_LIB),
        ),
        model: absolute(cwd, &vars.text_or("VAD_MODEL", DEFAULT_VAD_MODEL)),
        min_silence_ms: vars.number("VAD_MIN_SILENCE_MS", 2000, 100..=60_000, "ms")?,
    })
}

fn decoding_options(vars: &Vars) -> Result<DecodingOptions, SettingsError> {
    let defaults = DecodingOptions::default();
    let threshold = |variable: &'static str, default: Option<f64>, range: RangeInclusive<f64>| {
        let expected = || {
            let (low, high) = (range.start(), range.end());
            format!("a number from {low} to {high}, or off")
        };
        let parse = |text: &str| match text.to_ascii_lowercase().as_str() {
            "off" | "none" => Some(None),
            number => number
                .parse::<f64>()
                .ok()
                .filter(|value| range.contains(value))
                .map(Some),
        };
        vars.parsed(variable, default, expected, parse)
    };
    let temperatures = vars.parsed(
        "WHISPER_TEMPERATURES",
        defaults.temperatures,
        || "rising temperatures from 0 to 2, separated by commas (e.g. 0,0.2,0.4)".to_owned(),
        parse_temperatures,
    )?;
    Ok(DecodingOptions {
        beam_size: vars.number("WHISPER_BEAM_SIZE", 5, 1..=10, "beams")?,
        best_of: vars.number("WHISPER_BEST_OF", 5, 1..=10, "samples")?,
        temperatures,
        compression_ratio_threshold: threshold(
            "WHISPER_COMPRESSION_RATIO_THRESHOLD",
            defaults.compression_ratio_threshold,
            1.0..=100.0,
        )?,
        log_prob_threshold: threshold(
            "WHISPER_LOG_PROB_THRESHOLD",
            defaults.log_prob_threshold,
            -100.0..=0.0,
        )?,
        no_speech_threshold: threshold(
            "WHISPER_NO_SPEECH_THRESHOLD",
            defaults.no_speech_threshold,
            0.0..=1.0,
        )?,
        condition_on_previous_text: vars.boolean(
            "WHISPER_CONDITION_ON_PREVIOUS_TEXT",
            defaults.condition_on_previous_text,
        )?,
        prompt_reset_on_temperature: vars.parsed(
            "WHISPER_PROMPT_RESET_ON_TEMPERATURE",
            defaults.prompt_reset_on_temperature,
            || "a temperature from 0 to 2".to_owned(),
            |text| text.parse::<f32>().ok().filter(|t| (0.0..=2.0).contains(t)),
        )?,
    })
}

/// `0,0.2,0.4`: one or more temperatures from 0 to 2, rising.
fn parse_temperatures(text: &str) -> Option<Vec<f32>> {
    let temperatures = text
        .split(',')
        .map(|part| part.trim().parse::<f32>().ok())
        .collect::<Option<Vec<f32>>>()?;
    let valid = !temperatures.is_empty()
        && temperatures.len() <= 20
        && temperatures.iter().all(|t| (0.0..=2.0).contains(t))
        && temperatures.windows(2).all(|pair| pair[0] < pair[1]);
    valid.then_some(temperatures)
}

/// WHISPER_MODELS: `name=folder` or just `name` (the folder `models/whisper-<name>`), separated
/// by commas, e.g. `base=models/whisper-base,tiny.en`. Unset: the one model of WHISPER_MODEL,
/// named WHISPER_DEFAULT_MODEL or after its folder (`whisper-` left out).
fn whisper_models(vars: &Vars, cwd: &Path) -> Result<Vec<WhisperModel>, SettingsError> {
    let Some(list) = vars.text("WHISPER_MODELS") else {
        let dir = absolute(cwd, &vars.text_or("WHISPER_MODEL", DEFAULT_MODEL_DIR));
        let name = match vars.text("WHISPER_DEFAULT_MODEL") {
            Some(name) => model_name("WHISPER_DEFAULT_MODEL", &name)?,
            None => name_of_folder(&dir),
        };
        return Ok(vec![WhisperModel { name, dir }]);
    };
    let mut models: Vec<WhisperModel> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, dir) = match entry.split_once('=') {
            Some((name, dir)) => (name.trim(), dir.trim().to_owned()),
            None => (entry, format!("models/whisper-{entry}")),
        };
        let name = model_name("WHISPER_MODELS", name)?;
        if models.iter().any(|model| model.name == name) {
            return Err(SettingsError {
                variable: "WHISPER_MODELS",
                value: list.clone(),
                expected: format!("each model once; {name} is named twice"),
            });
        }
        let dir = absolute(cwd, &dir);
        models.push(WhisperModel { name, dir });
    }
    Ok(models)
}

/// WHISPER_DEFAULT_MODEL, or the first model served.
fn default_model(vars: &Vars, cwd: &Path) -> Result<ModelName, SettingsError> {
    match vars.text("WHISPER_DEFAULT_MODEL") {
        Some(name) => model_name("WHISPER_DEFAULT_MODEL", &name),
        None => match whisper_models(vars, cwd)?.into_iter().next() {
            Some(first) => Ok(first.name),
            None => Err(SettingsError {
                variable: "WHISPER_MODELS",
                value: String::new(),
                expected: "at least one model, name=folder".to_owned(),
            }),
        },
    }
}

fn model_name(variable: &'static str, name: &str) -> Result<ModelName, SettingsError> {
    ModelName::parse(name.trim()).map_err(|why| SettingsError {
        variable,
        value: name.to_owned(),
        expected: why.to_string(),
    })
}

/// A model's name from its folder: `models/whisper-tiny.en` is `tiny.en`; a folder whose name
/// is no model name serves as `default`.
fn name_of_folder(dir: &Path) -> ModelName {
    let folder = dir.file_name().unwrap_or_default().to_string_lossy();
    let name = folder.strip_prefix("whisper-").unwrap_or(&folder);
    ModelName::parse(name).unwrap_or_else(|_| ModelName::parse("default").expect("valid"))
}

/// The default model's folder.
const DEFAULT_MODEL_DIR: &str = "models/whisper-base";
/// Where `make ct2` puts the ONNX Runtime library, and `make models` the VAD model.
const DEFAULT_ONNXRUNTIME_LIB: &str = "vendor/onnxruntime/lib/libonnxruntime.so.1.31.1";
const DEFAULT_VAD_MODEL: &str = "models/silero-vad/silero_vad.onnx";

/// NATS_URL, checked: every server of the list must parse (the error names the one at fault,
/// without credentials).
fn nats_url(vars: &Vars) -> Result<Option<String>, SettingsError> {
    let Some(list) = vars.text("NATS_URL") else {
        return Ok(None);
    };
    match jetscribe_nats::parse_servers(&list) {
        Ok(_) => Ok(Some(list)),
        Err(reason) => Err(SettingsError {
            variable: "NATS_URL",
            value: jetscribe_nats::redact_url(&list),
            expected: format!("nats://host:port, or several separated by commas; {reason}"),
        }),
    }
}

/// The NATS credentials and TLS files: each file must exist, and the variables that go in
/// pairs are set together. A password or token never appears in an error.
fn nats_auth(vars: &Vars) -> Result<jetscribe_nats::NatsAuth, SettingsError> {
    let file = |variable: &'static str| match vars.text(variable) {
        None => Ok(None),
        Some(path) if Path::new(&path).is_file() => Ok(Some(PathBuf::from(path))),
        Some(path) => Err(SettingsError {
            variable,
            value: path,
            expected: "a file that exists".to_owned(),
        }),
    };
    let pair = |first: &'static str, second: &'static str| {
        let missing = |variable, other: &str| SettingsError {
            variable,
            value: String::new(),
            expected: format!("a value, as {other} is set"),
        };
        match (vars.text(first), vars.text(second)) {
            (Some(one), Some(two)) => Ok(Some((one, two))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(missing(second, first)),
            (None, Some(_)) => Err(missing(first, second)),
        }
    };
    let client_cert = match pair("NATS_CERT", "NATS_KEY")? {
        Some(_) => file("NATS_CERT")?.zip(file("NATS_KEY")?),
        None => None,
    };
    Ok(jetscribe_nats::NatsAuth {
        creds_file: file("NATS_CREDS")?,
        user_password: pair("NATS_USER", "NATS_PASSWORD")?,
        token: vars.text("NATS_TOKEN"),
        ca_file: file("NATS_CA")?,
        client_cert,
    })
}

/// FFPROBE_PATH, else `ffprobe` beside FFMPEG_PATH when that is a path, else from PATH.
fn default_ffprobe(ffprobe: Option<String>, ffmpeg: Option<String>) -> PathBuf {
    if let Some(ffprobe) = ffprobe {
        return PathBuf::from(ffprobe);
    }
    match ffmpeg.map(PathBuf::from) {
        Some(ffmpeg)
            if ffmpeg
                .parent()
                .is_some_and(|dir| !dir.as_os_str().is_empty()) =>
        {
            ffmpeg.with_file_name("ffprobe")
        }
        _ => PathBuf::from("ffprobe"),
    }
}

/// The API keys, from API_KEYS, the file API_KEYS_FILE names, and ADMIN_KEYS. A key never
/// appears in the error.
fn api_keys(vars: &Vars) -> Result<jetscribe_api::ApiKeys, SettingsError> {
    let file = match vars.text("API_KEYS_FILE") {
        Some(path) => Some(std::fs::read_to_string(&path).map_err(|err| SettingsError {
            variable: "API_KEYS_FILE",
            value: path,
            expected: format!("a readable file of name=key lines ({err})"),
        })?),
        None => None,
    };
    let inline = vars.text("API_KEYS");
    let admins = vars.text("ADMIN_KEYS");
    jetscribe_api::ApiKeys::parse(inline.as_deref(), file.as_deref(), admins.as_deref()).map_err(
        |err| SettingsError {
            variable: "API_KEYS",
            value: "(hidden)".to_owned(),
            expected: err.to_string(),
        },
    )
}

impl Settings {
    /// Refuses to serve the API without keys on an address other hosts can reach, unless
    /// ALLOW_ANONYMOUS says so.
    pub fn check_exposure(&self) -> Result<(), SettingsError> {
        let loopback = self
            .bind_addr
            .parse::<SocketAddr>()
            .is_ok_and(|addr| addr.ip().is_loopback());
        if loopback || !self.api_keys.is_empty() || self.allow_anonymous {
            return Ok(());
        }
        Err(SettingsError {
            variable: "BIND_ADDR",
            value: self.bind_addr.clone(),
            expected: "a loopback address when no API key is set: set API_KEYS or API_KEYS_FILE, or ALLOW_ANONYMOUS=true to serve every job to whoever reaches it".to_owned(),
        })
    }
}

fn webhook_secret(
    raw: Option<String>,
) -> Result<Option<jetscribe_notifier::WebhookSecret>, SettingsError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    jetscribe_notifier::WebhookSecret::parse(&raw)
        .map(Some)
        .map_err(|_| SettingsError {
            variable: "WEBHOOK_SECRET",
            // A secret, even a malformed one, is not printed.
            value: "(hidden)".to_owned(),
            expected: "whsec_ followed by a base64 key".to_owned(),
        })
}

/// The environment, read variable by variable; an empty value counts as unset.
struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    fn text(&self, variable: &str) -> Option<String> {
        (self.0)(variable).filter(|value| !value.trim().is_empty())
    }

    fn text_or(&self, variable: &str, default: &str) -> String {
        self.text(variable).unwrap_or_else(|| default.to_owned())
    }

    /// `variable` parsed by `parse`, or `default` when unset; `expected` says what is wanted.
    fn parsed<T>(
        &self,
        variable: &'static str,
        default: T,
        expected: impl Fn() -> String,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, SettingsError> {
        let Some(value) = self.text(variable) else {
            return Ok(default);
        };
        parse(value.trim()).ok_or_else(|| SettingsError {
            variable,
            value,
            expected: expected(),
        })
    }

    /// A whole number in `range` (`unit` names what it counts).
    fn number<T>(
        &self,
        variable: &'static str,
        default: T,
        range: RangeInclusive<T>,
        unit: &str,
    ) -> Result<T, SettingsError>
    where
        T: FromStr + PartialOrd + Display,
    {
        let expected = || {
            format!(
                "a number of {unit} from {} to {}",
                range.start(),
                range.end()
            )
        };
        let parse = |text: &str| text.parse::<T>().ok().filter(|n| range.contains(n));
        self.parsed(variable, default, expected, parse)
    }

    fn seconds(&self, variable: &'static str, default: f64) -> Result<Duration, SettingsError> {
        let expected = || "a positive number of seconds".to_owned();
        let parse = |text: &str| {
            let seconds = text.parse::<f64>().ok()?;
            (seconds.is_finite() && seconds > 0.0 && seconds < 1e9).then_some(seconds)
        };
        let seconds = self.parsed(variable, default, expected, parse)?;
        Ok(Duration::from_secs_f64(seconds))
    }

    /// A number of days, fractions allowed, at most 100 years.
    fn days(&self, variable: &'static str, default: f64) -> Result<Duration, SettingsError> {
        let expected = || "a positive number of days (fractions allowed), at most 36500".to_owned();
        let parse = |text: &str| {
            let days = text.parse::<f64>().ok()?;
            (days.is_finite() && days > 0.0 && days <= 36_500.0).then_some(days)
        };
        let days = self.parsed(variable, default, expected, parse)?;
        Ok(Duration::from_secs_f64(days * 86_400.0))
    }

    /// A length of time: `12h`, `90m`, `45s`, or seconds.
    fn length(&self, variable: &'static str, default: Duration) -> Result<Duration, SettingsError> {
        let expected = || "a duration such as 12h, 90m or 3600s".to_owned();
        self.parsed(variable, default, expected, parse_length)
    }

    fn boolean(&self, variable: &'static str, default: bool) -> Result<bool, SettingsError> {
        let choices = [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("on", true),
            ("false", false),
            ("0", false),
            ("no", false),
            ("off", false),
        ];
        let expected = || "true or false".to_owned();
        self.parsed(variable, default, expected, |text| choose(&choices, text))
    }

    /// One of `choices`, by name (case does not matter).
    fn choice<T: Copy>(
        &self,
        variable: &'static str,
        choices: &[(&str, T)],
        default: T,
    ) -> Result<T, SettingsError> {
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let expected = || format!("one of {}", names.join(", "));
        self.parsed(variable, default, expected, |text| choose(choices, text))
    }

    fn size(&self, variable: &'static str, default: u64) -> Result<u64, SettingsError> {
        let expected =
            || "a size in bytes, optionally with a K, M, G or T suffix (e.g. 500M, 20G)".to_owned();
        self.parsed(variable, default, expected, parse_size)
    }

    /// A size, or 0 for none.
    fn size_or_zero(&self, variable: &'static str, default: u64) -> Result<u64, SettingsError> {
        let expected =
            || "0, or a size in bytes with an optional K, M, G or T suffix (e.g. 2G)".to_owned();
        let parse = |text: &str| match text {
            "0" => Some(0),
            _ => parse_size(text),
        };
        self.parsed(variable, default, expected, parse)
    }

    fn rate_limit(
        &self,
        variable: &'static str,
        default: &str,
    ) -> Result<Option<jetscribe_api::RateLimit>, SettingsError> {
        let raw = self.text_or(variable, default);
        jetscribe_api::RateLimit::parse(&raw).map_err(|expected| SettingsError {
            variable,
            value: raw,
            expected: expected.to_owned(),
        })
    }

    /// An address and port; kept as text, as the listener takes it.
    fn socket_addr(&self, variable: &'static str, default: &str) -> Result<String, SettingsError> {
        let expected = || "an address and port such as 0.0.0.0:8000".to_owned();
        let parse = |text: &str| text.parse::<SocketAddr>().is_ok().then(|| text.to_owned());
        self.parsed(variable, default.to_owned(), expected, parse)
    }
}

fn choose<T: Copy>(choices: &[(&str, T)], text: &str) -> Option<T> {
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, value)| *value)
}

fn absolute(cwd: &Path, path: &str) -> PathBuf {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        path
    } else {
        cwd.join(path)
    }
}

/// `12h`, `90m`, `45s`, `1.5h` or plain seconds → a positive duration.
pub fn parse_length(raw: &str) -> Option<Duration> {
    let text = raw.trim().to_ascii_lowercase();
    let (number, unit) = match text.char_indices().last()? {
        (at, 'h') => (&text[..at], 3600.0),
        (at, 'm') => (&text[..at], 60.0),
        (at, 's') => (&text[..at], 1.0),
        _ => (text.as_str(), 1.0),
    };
    let seconds = number.trim().parse::<f64>().ok()? * unit;
    (seconds.is_finite() && seconds > 0.0 && seconds < 1e9)
        .then(|| Duration::from_secs_f64(seconds))
}

/// `1048576`, `500M`, `20G`, `1.5G`, `4GB`, `512KiB` → bytes (binary multiples).
pub fn parse_size(raw: &str) -> Option<u64> {
    let text = raw.trim().to_ascii_uppercase();
    let text = text
        .strip_suffix("IB")
        .or_else(|| text.strip_suffix('B'))
        .unwrap_or(&text);
    let (number, multiplier) = match text.chars().last()? {
        'K' => (&text[..text.len() - 1], 1u64 << 10),
        'M' => (&text[..text.len() - 1], 1 << 20),
        'G' => (&text[..text.len() - 1], 1 << 30),
        'T' => (&text[..text.len() - 1], 1 << 40),
        _ => (text, 1),
    };
    let number: f64 = number.trim().parse().ok()?;
    (number.is_finite() && number > 0.0).then_some((number * multiplier as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_original_service() {
        let s = settings(&[]).expect("defaults");
        // Without keys: loopback only.
        assert_eq!(s.bind_addr, "127.0.0.1:8000");
        assert!(s.api_keys.is_empty() && !s.allow_anonymous);
        assert_eq!(s.job_cleanup, Duration::from_secs(7 * 86_400));
        assert_eq!(s.webhook_timeout, Duration::from_secs(30));
        assert_eq!(s.webhook_max_retries, 3);
        assert_eq!(s.webhook_retry_delay, Duration::from_secs(5));
        assert_eq!(s.max_file_size, 20 << 30);
        assert!(s.object_store_url.starts_with("file:///"));
        assert!(s.object_store_url.ends_with("/data/blobs"));
        assert_eq!(s.api_addr_file, None);
        assert!(!s.log_json);
        let per_minute = jetscribe_api::RateLimit {
            requests: 60,
            per: Duration::from_secs(60),
        };
        assert_eq!(s.rate_limit, Some(per_minute));
        assert_eq!(s.min_free_space, 2 << 30);
        assert_eq!(s.connections.header_read_timeout, Duration::from_secs(10));
    }

    #[test]
    fn each_model_is_a_pool_named_in_whisper_models_or_after_its_folder() {
        let cwd = std::env::current_dir().expect("cwd");
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Pairs, Pairs, &str); 5] = [
            (&[], &[("base", "models/whisper-base")], "base"),
            (
                &[("WHISPER_MODEL", "/m/whisper-tiny.en")],
                &[("tiny.en", "/m/whisper-tiny.en")],
                "tiny.en",
            ),
            (
                &[
                    ("WHISPER_MODEL", "/m/my_model"),
                    ("WHISPER_DEFAULT_MODEL", "small"),
                ],
                &[("small", "/m/my_model")],
                "small",
            ),
            (
                &[("WHISPER_MODELS", "large-v3=/gpu/large, tiny.en")],
                &[
                    ("large-v3", "/gpu/large"),
                    ("tiny.en", "models/whisper-tiny.en"),
                ],
                "large-v3",
            ),
            (
                &[
                    ("WHISPER_MODELS", "tiny.en"),
                    ("WHISPER_DEFAULT_MODEL", "base"),
                ],
                &[("tiny.en", "models/whisper-tiny.en")],
                "base",
            ),
        ];
        for (vars, models, default) in cases {
            let s = settings(vars).expect("valid");
            let found: Vec<(String, PathBuf)> = s
                .whisper_models
                .iter()
                .map(|model| (model.name.to_string(), model.dir.clone()))
                .collect();
            let expected: Vec<(String, PathBuf)> = models
                .iter()
                .map(|(name, dir)| ((*name).to_owned(), cwd.join(dir)))
                .collect();
            assert_eq!(found, expected, "{vars:?}");
            assert_eq!(s.whisper_default_model.as_str(), default, "{vars:?}");
        }
        for (vars, variable) in [
            ([("WHISPER_MODELS", "tiny_en=/m/t")], "WHISPER_MODELS"),
            ([("WHISPER_MODELS", "base,base=/m/b")], "WHISPER_MODELS"),
            ([("WHISPER_DEFAULT_MODEL", "a b")], "WHISPER_DEFAULT_MODEL"),
        ] {
            let err = settings(&vars).expect_err("refused");
            assert_eq!(err.variable, variable, "{vars:?}");
        }
    }

    #[test]
    fn values_are_read_in_their_units() {
        let s = settings(&[
            ("WEBHOOK_RETRY_DELAY", "0.25"),
            ("MAX_FILE_SIZE", "500M"),
            ("LOG_FORMAT", "JSON"),
            ("WEBHOOK_ALLOW_PRIVATE", "yes"),
            ("BIND_ADDR", "127.0.0.1:0"),
            ("API_ADDR_FILE", "/run/jetscribe/api.addr"),
            ("WHISPER_BATCH_SIZE", "8"),
            ("RATE_LIMIT", "off"),
            ("MIN_FREE_SPACE", "0"),
            ("MAX_CONCURRENT_UPLOADS", "3"),
        ])
        .expect("valid");
        assert_eq!(s.rate_limit, None);
        assert_eq!(s.min_free_space, 0);
        assert_eq!(s.max_concurrent_uploads, 3);
        assert_eq!(s.webhook_retry_delay, Duration::from_millis(250));
        assert_eq!(s.max_file_size, 500 << 20);
        assert!(s.log_json && s.webhook_allow_private);
        assert_eq!(s.bind_addr, "127.0.0.1:0");
        assert_eq!(
            s.api_addr_file.as_deref(),
            Some(Path::new("/run/jetscribe/api.addr"))
        );
        assert_eq!(s.whisper_batch_size, 8);
    }

    #[test]
    fn the_vad_comes_from_the_fetched_files_unless_told_otherwise() {
        let s = settings(&[]).expect("valid");
        assert!(s.vad.library.is_absolute());
        assert!(s.vad.library.ends_with(DEFAULT_ONNXRUNTIME_LIB));
        assert!(s.vad.model.ends_with(DEFAULT_VAD_MODEL));
        assert_eq!(s.vad.min_silence_ms, 2000);
        let s = settings(&[("VAD_MODEL", "/m/vad.onnx"), ("VAD_MIN_SILENCE_MS", "500")])
            .expect("valid");
        assert_eq!(s.vad.model, Path::new("/m/vad.onnx"));
        assert_eq!(s.vad.min_silence_ms, 500);
        let err = settings(&[("VAD_MIN_SILENCE_MS", "5")]).expect_err("too short");
        assert_eq!(err.variable, "VAD_MIN_SILENCE_MS");
    }

    #[test]
    fn decoding_settings_default_to_faster_whispers_and_each_threshold_can_be_turned_off() {
        let s = settings(&[]).expect("valid");
        assert_eq!(s.whisper_decoding, DecodingOptions::default());
        let s = settings(&[
            ("WHISPER_TEMPERATURES", "0, 0.5,1"),
            ("WHISPER_NO_SPEECH_THRESHOLD", "off"),
            ("WHISPER_LOG_PROB_THRESHOLD", "-0.8"),
            ("WHISPER_CONDITION_ON_PREVIOUS_TEXT", "true"),
        ])
        .expect("valid");
        let decoding = &s.whisper_decoding;
        assert_eq!(decoding.temperatures, vec![0.0, 0.5, 1.0]);
        assert_eq!(decoding.no_speech_threshold, None);
        assert_eq!(decoding.log_prob_threshold, Some(-0.8));
        assert!(decoding.condition_on_previous_text);
        let refused = [
            ("WHISPER_TEMPERATURES", "0.4,0.2"),
            ("WHISPER_TEMPERATURES", "0,hot"),
            ("WHISPER_TEMPERATURES", "3"),
            ("WHISPER_LOG_PROB_THRESHOLD", "0.5"),
            ("WHISPER_COMPRESSION_RATIO_THRESHOLD", "NaN"),
            ("WHISPER_BEST_OF", "0"),
        ];
        for (variable, value) in refused {
            let err = settings(&[(variable, value)]).expect_err(value);
            assert!(err.to_string().contains(variable), "{err}");
        }
    }

    #[test]
    fn a_bad_value_names_the_variable_and_what_it_expects() {
        let err = settings(&[("WEBHOOK_TIMEOUT", "soon")]).expect_err("must fail");
        let line = err.to_string();
        assert!(line.contains("WEBHOOK_TIMEOUT"), "{line}");
        assert!(line.contains("seconds"), "{line}");
        let err = settings(&[("WEBHOOK_SECRET", "hunter2")]).expect_err("must fail");
        let line = err.to_string();
        assert!(
            line.contains("WEBHOOK_SECRET") && !line.contains("hunter2"),
            "{line}"
        );
        let err = settings(&[("WEBHOOK_ALLOW_PRIVATE", "perhaps")]).expect_err("must fail");
        assert!(err.to_string().contains("WEBHOOK_ALLOW_PRIVATE"), "{err}");
        let err = settings(&[("RATE_LIMIT", "lots")]).expect_err("must fail");
        assert!(err.to_string().contains("60/min"), "{err}");
        let err = settings(&[("MAX_FILE_SIZE", "big")]).expect_err("must fail");
        assert!(err.to_string().contains("MAX_FILE_SIZE"));
        assert!(settings(&[("MAX_CONCURRENT_JOBS", "0")]).is_err());
        let err = settings(&[("WHISPER_BATCH_SIZE", "33")]).expect_err("must fail");
        assert!(err.to_string().contains("from 1 to 32"), "{err}");
        let err = settings(&[("LOG_FORMAT", "xml")]).expect_err("must fail");
        assert!(err.to_string().contains("text, json"), "{err}");
        assert!(settings(&[("BIND_ADDR", "localhost")]).is_err());
    }

    #[test]
    fn nats_settings_take_a_server_list_and_credentials_in_their_pairs() {
        // Only its existence is checked here; the client reads it when it connects.
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let s = settings(&[
            ("NATS_URL", "nats://n1:4222,nats://n2:4222,nats://n3:4222"),
            ("NATS_REPLICAS", "3"),
            ("NATS_USER", "jetscribe"),
            ("NATS_PASSWORD", "hunter2"),
            ("NATS_CA", ca),
        ])
        .expect("valid");
        assert_eq!(s.nats_replicas, Some(3));
        let auth = &s.nats_auth;
        assert_eq!(
            auth.user_password,
            Some(("jetscribe".into(), "hunter2".into()))
        );
        assert!(auth.requires_tls() && auth.creds_file.is_none());
        assert_eq!(settings(&[]).expect("defaults").nats_replicas, None);

        let refused = [
            (
                vec![("NATS_URL", "nats://u:secret@n1:4222,nats://n2:port")],
                "NATS_URL",
                "\"nats://n2:port\": NATS server URL is invalid: invalid port number",
            ),
            (vec![("NATS_REPLICAS", "7")], "NATS_REPLICAS", "from 1 to 5"),
            (
                vec![("NATS_USER", "jetscribe")],
                "NATS_PASSWORD",
                "NATS_USER is set",
            ),
            (vec![("NATS_KEY", ca)], "NATS_CERT", "NATS_KEY is set"),
            (
                vec![("NATS_CREDS", "/nowhere/x.creds")],
                "NATS_CREDS",
                "exists",
            ),
        ];
        for (vars, variable, expected) in refused {
            let line = settings(&vars).expect_err("refused").to_string();
            assert!(line.contains(variable) && line.contains(expected), "{line}");
            assert!(!line.contains("secret"), "{line}");
        }
    }

    #[test]
    fn an_api_without_keys_is_served_on_loopback_only_unless_allowed() {
        let key = ("API_KEYS", "alice=0123456789abcdef");
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Vars, &str, bool); 5] = [
            (&[], "127.0.0.1:8000", true),
            (&[("BIND_ADDR", "0.0.0.0:8000")], "0.0.0.0:8000", false),
            (
                &[("BIND_ADDR", "[::]:8000"), ("ALLOW_ANONYMOUS", "true")],
                "[::]:8000",
                true,
            ),
            (&[key], "0.0.0.0:8000", true),
            (&[key, ("BIND_ADDR", "10.0.0.5:80")], "10.0.0.5:80", true),
        ];
        for (vars, bind, exposed_ok) in cases {
            let s = settings(vars).expect("valid");
            assert_eq!(s.bind_addr, bind, "{vars:?}");
            let checked = s.check_exposure();
            assert_eq!(checked.is_ok(), exposed_ok, "{vars:?}");
            if let Err(err) = checked {
                let line = err.to_string();
                assert!(
                    line.contains("API_KEYS") && line.contains("ALLOW_ANONYMOUS"),
                    "{line}"
                );
            }
        }
        let err = settings(&[("API_KEYS", "alice=tooshort")]).expect_err("short key");
        let line = err.to_string();
        assert!(
            line.contains("API_KEYS") && !line.contains("tooshort"),
            "{line}"
        );
    }

    #[test]
    fn lengths_accept_units() {
        let cases = [
            ("12h", Some(12 * 3600)),
            ("90m", Some(5400)),
            ("45s", Some(45)),
            ("3600", Some(3600)),
            ("1.5H", Some(5400)),
            ("0", None),
            ("-1h", None),
            ("soon", None),
        ];
        for (raw, seconds) in cases {
            assert_eq!(parse_length(raw), seconds.map(Duration::from_secs), "{raw}");
        }
    }

    #[test]
    fn sizes_accept_suffixes() {
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("4gb"), Some(4 << 30));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("1.5K"), Some(1536));
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("x"), None);
    }
}
