//! Decode stage: turns any uploaded media (audio or video) into 16 kHz mono signed 16-bit PCM with
//! ffmpeg (through ffmpeg-sidecar, which never downloads ffmpeg: PATH or FFMPEG_PATH), streamed to
//! the object store in bounded memory, with progress from ffmpeg's clock against the duration.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel};
use jetscribe_blobstore::BlobStore;
use jetscribe_nats::{JobContext, Outcome, Stage, StageError};
use proto_msgs::{DecodeRequest, JobBlobs, TranscribeRequest};
use tokio::sync::mpsc;
use tracing::{debug, info};

/// Sample rate of the PCM the decoder produces and the transcriber reads.
pub const SAMPLE_RATE: u32 = 16_000;
/// Bytes per PCM sample (s16le, mono).
pub const BYTES_PER_SAMPLE: u64 = 2;

/// Settings of the decode stage.
#[derive(Debug, Clone)]
pub struct DecoderSettings {
    /// The ffmpeg binary (FFMPEG_PATH, default `ffmpeg` from PATH).
    pub ffmpeg: PathBuf,
    /// The ffprobe binary (FFPROBE_PATH, default: beside FFMPEG_PATH, or `ffprobe` from PATH).
    pub ffprobe: PathBuf,
    /// Where uploads from a remote store (S3) are staged while ffmpeg reads them (ffmpeg needs a
    /// seekable file for inputs such as mp4 with the index at the end).
    pub work_dir: PathBuf,
}

/// The decode stage.
pub struct Decoder {
    blobs: BlobStore,
    settings: DecoderSettings,
}

impl Decoder {
    pub fn new(blobs: BlobStore, settings: DecoderSettings) -> Self {
        Self { blobs, settings }
    }
}

/// What the blocking ffmpeg thread reports to the async side.
enum FfmpegReport {
    Duration(f64),
    Progress(f64),
    Pcm(Vec<u8>),
}

/// How ffmpeg ended.
struct FfmpegEnd {
    success: bool,
    last_error: Option<String>,
}

/// What ffprobe found in the upload.
#[derive(Debug, Clone, PartialEq)]
struct Probe {
    /// Index of the audio stream to decode: the default one, else the first.
    audio_stream: u32,
    duration_s: Option<f64>,
}

#[derive(Debug)]
enum ProbeError {
    /// ffprobe could not read the file: not media, or damaged. Its reason, on one line.
    Unreadable(String),
    NoAudio,
    /// ffprobe itself could not be run.
    Run(std::io::Error),
}

/// Finds the audio stream to decode and the duration, before any decoding.
async fn probe(ffprobe: &std::path::Path, media: &std::path::Path) -> Result<Probe, ProbeError> {
    let output = tokio::process::Command::new(ffprobe)
        .args(["-v", "error", "-of", "json"])
        .args([
            "-show_entries",
            "stream=index,codec_type:stream_disposition=default:format=duration",
        ])
        .arg(media)
        .output()
        .await
        .map_err(ProbeError::Run)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .map(clean_ffmpeg_line)
            .unwrap_or_else(|| "not a media file ffmpeg can read".to_owned());
        return Err(ProbeError::Unreadable(reason));
    }
    parse_probe(&output.stdout)
}

fn parse_probe(json: &[u8]) -> Result<Probe, ProbeError> {
    #[derive(serde::Deserialize)]
    struct Output {
        #[serde(default)]
        streams: Vec<Stream>,
        format: Option<Format>,
    }
    #[derive(serde::Deserialize)]
    struct Stream {
        index: u32,
        codec_type: Option<String>,
        disposition: Option<Disposition>,
    }
    #[derive(serde::Deserialize)]
    struct Disposition {
        #[serde(default)]
        default: u8,
    }
    #[derive(serde::Deserialize)]
    struct Format {
        duration: Option<String>,
    }
    let output: Output = serde_json::from_slice(json)
        .map_err(|err| ProbeError::Unreadable(format!("unexpected ffprobe output: {err}")))?;
    let audio: Vec<&Stream> = output
        .streams
        .iter()
        .filter(|stream| stream.codec_type.as_deref() == Some("audio"))
        .collect();
    let chosen = audio
        .iter()
        .find(|stream| stream.disposition.as_ref().is_some_and(|d| d.default == 1))
        .or(audio.first())
        .ok_or(ProbeError::NoAudio)?;
    let duration_s = output
        .format
        .and_then(|format| format.duration)
        .and_then(|duration| duration.parse::<f64>().ok())
        .filter(|duration| duration.is_finite() && *duration > 0.0);
    Ok(Probe {
        audio_stream: chosen.index,
        duration_s,
    })
}

impl Stage for Decoder {
    type Input = DecodeRequest;

    async fn handle(&self, input: DecodeRequest, job: &JobContext) -> Result<Outcome, StageError> {
        // A local store's blob is read in place; from S3 the upload is first copied to a local
        // file, because ffmpeg needs to seek in some inputs (mp4 with its index at the end).
        let (media, _staging) = match self.blobs.local_file(&input.input_blob) {
            Some(file) => (file, None),
            None => {
                std::fs::create_dir_all(&self.settings.work_dir)
                    .map_err(|err| StageError::transient("creating the work dir", err))?;
                let staging = tempfile::tempdir_in(&self.settings.work_dir)
                    .map_err(|err| StageError::transient("creating a staging dir", err))?;
                let media = staging.path().join("input");
                let size = self
                    .blobs
                    .download_to(&input.input_blob, &media)
                    .await
                    .map_err(|err| StageError::transient("staging the upload", err))?;
                debug!(size, "upload staged");
                (media, Some(staging))
            }
        };

        let probe = probe(&self.settings.ffprobe, &media)
            .await
            .map_err(|err| match err {
                ProbeError::Unreadable(reason) => {
                    StageError::Permanent(format!("cannot decode {}: {reason}", input.filename))
                }
                ProbeError::NoAudio => {
                    StageError::Permanent(format!("no audio stream in {}", input.filename))
                }
                ProbeError::Run(err) => StageError::transient("running ffprobe", err),
            })?;
        debug!(stream = probe.audio_stream, duration_s = ?probe.duration_s, "probed");

        let (reports, mut received) = mpsc::channel::<FfmpegReport>(16);
        let ffmpeg = self.settings.ffmpeg.clone();
        let stream = probe.audio_stream;
        let ffmpeg_task =
            tokio::task::spawn_blocking(move || run_ffmpeg(&ffmpeg, &media, stream, reports));

        let audio_blob = JobBlobs::audio_path(input.job_id);
        let mut writer = self
            .blobs
            .writer(&audio_blob)
            .await
            .map_err(|err| StageError::transient("opening the audio blob", err))?;
        let mut duration = probe.duration_s;
        let mut last_report = Instant::now();
        let mut write_error = None;
        while let Some(report) = received.recv().await {
            match report {
                FfmpegReport::Pcm(chunk) => {
                    // After a failed write, keep draining so that ffmpeg's thread ends.
                    if write_error.is_none()
                        && let Err(err) = writer.write(Bytes::from(chunk)).await
                    {
                        write_error = Some(err);
                    }
                }
                FfmpegReport::Duration(seconds) => {
                    duration.get_or_insert(seconds);
                }
                FfmpegReport::Progress(seconds) => {
                    if let Some(total) = duration.filter(|total| *total > 0.0)
                        && last_report.elapsed() >= Duration::from_secs(1)
                    {
                        last_report = Instant::now();
                        job.progress(seconds / total).await;
                    }
                }
            }
        }
        let end = ffmpeg_task
            .await
            .map_err(|err| StageError::transient("ffmpeg thread", err))?
            .map_err(|err| StageError::transient("starting ffmpeg", err))?;
        if let Some(err) = write_error {
            writer.abort().await;
            return Err(StageError::transient("writing the audio blob", err));
        }
        if !end.success {
            writer.abort().await;
            return Err(StageError::Permanent(format!(
                "cannot decode {}: {}",
                input.filename,
                end.last_error.unwrap_or_else(|| "ffmpeg failed".to_owned())
            )));
        }
        let pcm_bytes = writer
            .finish()
            .await
            .map_err(|err| StageError::transient("finishing the audio blob", err))?;
        if pcm_bytes == 0 {
            return Err(StageError::Permanent(format!(
                "no audio in {}: the audio stream is empty",
                input.filename
            )));
        }
        let duration_s = pcm_bytes as f64 / BYTES_PER_SAMPLE as f64 / f64::from(SAMPLE_RATE);
        info!(duration_s, pcm_bytes, "decoded");

        let record = job
            .jobs()
            .update(input.job_id, |record| {
                record.blobs.audio = Some(audio_blob.clone());
                record.duration_s = Some(duration_s);
            })
            .await
            .map_err(|err| StageError::transient("recording the audio blob", err))?;
        Outcome::forward(&TranscribeRequest {
            job_id: input.job_id,
            audio_blob,
            duration_s,
            language: record.language,
            word_timestamps: record.word_timestamps,
        })
    }
}

/// Runs ffmpeg on `media` (blocking: ffmpeg-sidecar's iterator blocks) and sends PCM chunks and
/// timing to `reports`. The channel is bounded, so a slow upload slows ffmpeg instead of filling
/// memory.
fn run_ffmpeg(
    ffmpeg: &std::path::Path,
    media: &std::path::Path,
    audio_stream: u32,
    reports: mpsc::Sender<FfmpegReport>,
) -> std::io::Result<FfmpegEnd> {
    let mut child = FfmpegCommand::new_with_path(ffmpeg)
        .hide_banner()
        .input(media)
        // The probed audio stream only: no video, subtitles or data.
        .args(["-map", &format!("0:{audio_stream}"), "-vn", "-sn", "-dn"])
        .args(["-ac", "1", "-ar", &SAMPLE_RATE.to_string(), "-f", "s16le"])
        // To a pipe, ffmpeg flushes after every packet by default: 50 writes of 640 bytes per
        // second of audio. Letting it fill its buffer first cuts the decoder's time by a fifth.
        .args(["-flush_packets", "0"])
        .output("pipe:1")
        .spawn()?;
    let mut end = FfmpegEnd {
        success: false,
        last_error: None,
    };
    let events = child
        .iter()
        .map_err(|err| std::io::Error::other(err.to_string()))?;
    for event in events {
        let report = match event {
            FfmpegEvent::OutputChunk(chunk) => Some(FfmpegReport::Pcm(chunk)),
            FfmpegEvent::ParsedDuration(parsed) => Some(FfmpegReport::Duration(parsed.duration)),
            FfmpegEvent::Progress(progress) => {
                parse_clock(&progress.time).map(FfmpegReport::Progress)
            }
            FfmpegEvent::Log(LogLevel::Error | LogLevel::Fatal, line) => {
                end.last_error = Some(clean_ffmpeg_line(&line));
                None
            }
            _ => None,
        };
        if let Some(report) = report
            && reports.blocking_send(report).is_err()
        {
            // The async side is gone (job abandoned): stop ffmpeg.
            let _ = child.kill();
            break;
        }
    }
    end.success = child.wait()?.success();
    Ok(end)
}

/// `HH:MM:SS.ss` → seconds.
fn parse_clock(clock: &str) -> Option<f64> {
    let mut seconds = 0.0;
    for part in clock.split(':') {
        seconds = seconds * 60.0 + part.trim().parse::<f64>().ok()?;
    }
    (seconds >= 0.0).then_some(seconds)
}

/// ffmpeg error lines start with the component (`[in#0 @ 0x55…] `) and name the staged file:
/// keep the reason only, on one line.
fn clean_ffmpeg_line(line: &str) -> String {
    let mut text = line.trim();
    while let Some(rest) = text.strip_prefix('[') {
        match rest.find("] ") {
            Some(end) => text = rest[end + 2..].trim_start(),
            None => break,
        }
    }
    let text = match text.rfind(": ") {
        Some(index) if text[..index].contains('/') => &text[index + 2..],
        _ => text,
    };
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_audio_stream_of_a_video_is_chosen() {
        let probe = parse_probe(
            br#"{"streams":[{"index":0,"codec_type":"video","disposition":{"default":1}},
                {"index":1,"codec_type":"audio","disposition":{"default":0}},
                {"index":2,"codec_type":"audio","disposition":{"default":1}}],
                "format":{"duration":"12.5"}}"#,
        )
        .expect("probe");
        assert_eq!(
            probe,
            Probe {
                audio_stream: 2,
                duration_s: Some(12.5)
            }
        );
        assert!(matches!(
            parse_probe(br#"{"streams":[{"index":0,"codec_type":"video"}],"format":{}}"#),
            Err(ProbeError::NoAudio)
        ));
    }

    #[test]
    fn ffmpeg_clock_parses_to_seconds() {
        assert_eq!(parse_clock("00:01:02.50"), Some(62.5));
        assert_eq!(parse_clock("N/A"), None);
    }

    #[test]
    fn ffmpeg_error_lines_lose_their_prefix_and_path() {
        assert_eq!(
            clean_ffmpeg_line(
                "[in#0 @ 0x5555] /tmp/x/input: Invalid data found when processing input"
            ),
            "Invalid data found when processing input"
        );
        assert_eq!(
            clean_ffmpeg_line("Stream map '0:a:0' matches no streams."),
            "Stream map '0:a:0' matches no streams."
        );
    }
}
