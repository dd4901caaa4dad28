//! Decode stage: turns any uploaded media (audio or video) into 16 kHz mono signed 16-bit PCM with
//! ffmpeg (through ffmpeg-sidecar, which never downloads ffmpeg: PATH or FFMPEG_PATH), streamed to
//! the object store in bounded memory, with progress from ffmpeg's clock against the duration.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel, StreamTypeSpecificData};
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
    /// Where uploads are staged while ffmpeg reads them (ffmpeg needs a seekable file for inputs
    /// such as mp4 with the index at the end).
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
    saw_audio_input: bool,
    last_error: Option<String>,
}

impl Stage for Decoder {
    type Input = DecodeRequest;

    async fn handle(&self, input: DecodeRequest, job: &JobContext) -> Result<Outcome, StageError> {
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

        let (reports, mut received) = mpsc::channel::<FfmpegReport>(16);
        let ffmpeg = self.settings.ffmpeg.clone();
        let ffmpeg_task = tokio::task::spawn_blocking(move || run_ffmpeg(&ffmpeg, &media, reports));

        let audio_blob = JobBlobs::audio_path(input.job_id);
        let mut writer = self
            .blobs
            .writer(&audio_blob)
            .await
            .map_err(|err| StageError::transient("opening the audio blob", err))?;
        let mut duration = None;
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
                FfmpegReport::Duration(seconds) => duration = Some(seconds),
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
            return Err(StageError::Permanent(if end.saw_audio_input {
                format!(
                    "cannot decode {}: {}",
                    input.filename,
                    end.last_error.unwrap_or_else(|| "ffmpeg failed".to_owned())
                )
            } else {
                match end.last_error {
                    Some(reason) if !reason.contains("matches no streams") => {
                        format!("cannot decode {}: {reason}", input.filename)
                    }
                    _ => format!("no audio stream in {}", input.filename),
                }
            }));
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
        })
    }
}

/// Runs ffmpeg on `media` (blocking: ffmpeg-sidecar's iterator blocks) and sends PCM chunks and
/// timing to `reports`. The channel is bounded, so a slow upload slows ffmpeg instead of filling
/// memory.
fn run_ffmpeg(
    ffmpeg: &std::path::Path,
    media: &std::path::Path,
    reports: mpsc::Sender<FfmpegReport>,
) -> std::io::Result<FfmpegEnd> {
    let mut child = FfmpegCommand::new_with_path(ffmpeg)
        .hide_banner()
        .input(media)
        // The first audio stream (ffmpeg's default choice for video files is the same), no video.
        .args(["-map", "0:a:0", "-vn", "-sn", "-dn"])
        .args(["-ac", "1", "-ar", &SAMPLE_RATE.to_string(), "-f", "s16le"])
        .output("pipe:1")
        .spawn()?;
    let mut end = FfmpegEnd {
        success: false,
        saw_audio_input: false,
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
            FfmpegEvent::ParsedInputStream(stream) => {
                if matches!(stream.type_specific_data, StreamTypeSpecificData::Audio(_)) {
                    end.saw_audio_input = true;
                }
                None
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
