//! One typed settings struct, read from the environment with the variable names of the service
//! jetscribe replaces. A bad value stops start-up with one line naming the variable and what it
//! expects.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A variable holds a value jetscribe cannot use.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}={value:?}: expected {expected}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// Everything jetscribe reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// NATS_URL; `None`: `up` starts a local nats-server.
    pub nats_url: Option<String>,
    /// DATA_DIR (default `./data`), absolute.
    pub data_dir: PathBuf,
    /// OBJECT_STORE_URL (default `file://$DATA_DIR/blobs`).
    pub object_store_url: String,
    /// WHISPER_MODEL (default `models/whisper-base`).
    pub whisper_model: PathBuf,
    /// WHISPER_THREADS (default: all cores).
    pub whisper_threads: usize,
    /// WHISPER_BATCH_SIZE (default 4).
    pub whisper_batch_size: usize,
    /// WHISPER_BEAM_SIZE (default 5).
    pub whisper_beam_size: usize,
    /// FFMPEG_PATH (default `ffmpeg` from PATH).
    pub ffmpeg_path: PathBuf,
    /// FFPROBE_PATH (default: `ffprobe` beside FFMPEG_PATH, else from PATH).
    pub ffprobe_path: PathBuf,
    /// BIND_ADDR (default `0.0.0.0:8000`).
    pub bind_addr: String,
    /// MAX_CONCURRENT_JOBS per stage and process (default 2).
    pub max_concurrent_jobs: usize,
    /// JOB_CLEANUP_DAYS (default 7): how long job records and events are kept.
    pub job_cleanup_days: u32,
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
    /// JOB_ACK_WAIT in seconds (default 60): how long a stage may go silent before its message
    /// is handed to another process.
    pub ack_wait: Duration,
    /// LOG_FORMAT: `json` or `text` (default).
    pub log_json: bool,
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
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let data_dir = absolute(&cwd, &get("DATA_DIR").unwrap_or_else(|| "data".to_owned()));
        let object_store_url = get("OBJECT_STORE_URL")
            .unwrap_or_else(|| format!("file://{}", data_dir.join("blobs").display()));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            nats_url: get("NATS_URL"),
            object_store_url,
            whisper_model: absolute(
                &cwd,
                &get("WHISPER_MODEL").unwrap_or_else(|| "models/whisper-base".to_owned()),
            ),
            whisper_threads: parse(&get, "WHISPER_THREADS", cores, "a positive number of threads", positive)?,
            whisper_batch_size: parse(&get, "WHISPER_BATCH_SIZE", 4, "a number of 30 s windows from 1 to 32", |n: &usize| (1..=32).contains(n))?,
            whisper_beam_size: parse(&get, "WHISPER_BEAM_SIZE", 5, "a beam width from 1 to 10", |n: &usize| (1..=10).contains(n))?,
            ffmpeg_path: PathBuf::from(get("FFMPEG_PATH").unwrap_or_else(|| "ffmpeg".to_owned())),
            ffprobe_path: get("FFPROBE_PATH").map(PathBuf::from).unwrap_or_else(|| {
                match get("FFMPEG_PATH").map(PathBuf::from) {
                    Some(ffmpeg) if ffmpeg.parent().is_some_and(|dir| !dir.as_os_str().is_empty()) => {
                        ffmpeg.with_file_name("ffprobe")
                    }
                    _ => PathBuf::from("ffprobe"),
                }
            }),
            bind_addr: match get("BIND_ADDR") {
                Some(addr) if addr.parse::<std::net::SocketAddr>().is_ok() => addr,
                Some(addr) => {
                    return Err(SettingsError {
                        variable: "BIND_ADDR",
                        value: addr,
                        expected: "an address and port such as 0.0.0.0:8000",
                    });
                }
                None => "0.0.0.0:8000".to_owned(),
            },
            max_concurrent_jobs: parse(&get, "MAX_CONCURRENT_JOBS", 2, "a positive number of jobs", positive)?,
            job_cleanup_days: parse(&get, "JOB_CLEANUP_DAYS", 7, "a positive number of days", |n: &u32| *n > 0)?,
            webhook_timeout: seconds(&get, "WEBHOOK_TIMEOUT", 30.0)?,
            webhook_max_retries: parse(&get, "WEBHOOK_MAX_RETRIES", 3, "a number of retries from 0 to 100", |n: &u32| *n <= 100)?,
            webhook_retry_delay: seconds(&get, "WEBHOOK_RETRY_DELAY", 5.0)?,
            webhook_secret: match get("WEBHOOK_SECRET") {
                Some(secret) => Some(jetscribe_notifier::WebhookSecret::parse(&secret).map_err(|_| SettingsError {
                    variable: "WEBHOOK_SECRET",
                    // A secret, even a malformed one, is not printed.
                    value: "(hidden)".to_owned(),
                    expected: "whsec_ followed by a base64 key",
                })?),
                None => None,
            },
            webhook_allow_private: boolean(&get, "WEBHOOK_ALLOW_PRIVATE", false)?,
            sync_timeout: seconds(&get, "SYNC_TIMEOUT", 300.0)?,
            max_file_size: match get("MAX_FILE_SIZE") {
                Some(value) => parse_size(&value).ok_or(SettingsError {
                    variable: "MAX_FILE_SIZE",
                    value,
                    expected: "a size in bytes, optionally with a K, M, G or T suffix (e.g. 500M, 20G)",
                })?,
                None => 20 * 1024 * 1024 * 1024,
            },
            ack_wait: seconds(&get, "JOB_ACK_WAIT", 60.0)?,
            log_json: match get("LOG_FORMAT").as_deref().map(str::to_lowercase).as_deref() {
                None | Some("text") => false,
                Some("json") => true,
                Some(_) => {
                    return Err(SettingsError {
                        variable: "LOG_FORMAT",
                        value: get("LOG_FORMAT").unwrap_or_default(),
                        expected: "json or text",
                    });
                }
            },
            otlp_endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            data_dir,
        })
    }
}

fn boolean(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: bool,
) -> Result<bool, SettingsError> {
    let Some(value) = get(variable) else {
        return Ok(default);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(SettingsError {
            variable,
            value,
            expected: "true or false",
        }),
    }
}

fn positive(n: &usize) -> bool {
    *n > 0
}

fn absolute(cwd: &Path, path: &str) -> PathBuf {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        path
    } else {
        cwd.join(path)
    }
}

fn parse<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
    expected: &'static str,
    valid: impl Fn(&T) -> bool,
) -> Result<T, SettingsError> {
    let Some(value) = get(variable) else {
        return Ok(default);
    };
    match value.trim().parse::<T>() {
        Ok(parsed) if valid(&parsed) => Ok(parsed),
        _ => Err(SettingsError {
            variable,
            value,
            expected,
        }),
    }
}

fn seconds(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: f64,
) -> Result<Duration, SettingsError> {
    let value = parse(
        get,
        variable,
        default,
        "a positive number of seconds",
        |s: &f64| s.is_finite() && *s > 0.0 && *s < 1e9,
    )?;
    Ok(Duration::from_secs_f64(value))
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
        assert_eq!(s.bind_addr, "0.0.0.0:8000");
        assert_eq!(s.job_cleanup_days, 7);
        assert_eq!(s.webhook_timeout, Duration::from_secs(30));
        assert_eq!(s.webhook_max_retries, 3);
        assert_eq!(s.webhook_retry_delay, Duration::from_secs(5));
        assert_eq!(s.max_file_size, 20 << 30);
        assert!(s.object_store_url.starts_with("file:///"));
        assert!(s.object_store_url.ends_with("/data/blobs"));
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
        let err = settings(&[("MAX_FILE_SIZE", "big")]).expect_err("must fail");
        assert!(err.to_string().contains("MAX_FILE_SIZE"));
        assert!(settings(&[("MAX_CONCURRENT_JOBS", "0")]).is_err());
        assert!(settings(&[("BIND_ADDR", "localhost")]).is_err());
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
