//! Decode stage: turns any uploaded media (audio or video) into 16 kHz mono signed 16-bit PCM with
//! ffmpeg (through ffmpeg-sidecar, which never downloads ffmpeg: PATH or FFMPEG_PATH), streamed to
//! the object store in bounded memory, with progress from ffmpeg's clock against the duration.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel};
use jetscribe_blobstore::{BlobError, BlobStore, BlobWriter};
use jetscribe_nats::{JobContext, Outcome, StageError, StageHandler};
use proto_msgs::{DecodeRequest, JobBlobs, pcm};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

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

impl ProbeError {
    /// What the job fails with (`filename` as the client named the upload), or retries on.
    fn into_stage_error(self, filename: &str) -> StageError {
        match self {
            ProbeError::Unreadable(reason) => {
                StageError::Permanent(format!("cannot decode {filename}: {reason}"))
            }
            ProbeError::NoAudio => StageError::Permanent(format!("no audio stream in {filename}")),
            ProbeError::Run(err) => StageError::transient("running ffprobe", err),
        }
    }
}

/// Finds the audio stream to decode and the duration, before any decoding.
async fn probe(ffprobe: &Path, media: &Path) -> Result<Probe, ProbeError> {
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

impl StageHandler for Decoder {
    type Input = DecodeRequest;

    async fn handle(&self, input: DecodeRequest, job: &JobContext) -> Result<Outcome, StageError> {
        let media = self.media_file(&input.input_blob).await?;
        let probe = probe(&self.settings.ffprobe, media.path())
            .await
            .map_err(|err| err.into_stage_error(&input.filename))?;
        debug!(stream = probe.audio_stream, duration_s = ?probe.duration_s, "probed");
        let audio_blob = JobBlobs::audio_path(input.job_id);
        let pcm_bytes = match self.decode(&media, &probe, &audio_blob, job).await? {
            Decoded::Audio(bytes) => bytes,
            Decoded::Refused(reason) => {
                return Err(StageError::Permanent(format!(
                    "cannot decode {}: {reason}",
                    input.filename
                )));
            }
        };
        if pcm_bytes == 0 {
            return Err(StageError::Permanent(format!(
                "no audio in {}: the audio stream is empty",
                input.filename
            )));
        }
        let duration_s = pcm::seconds_in_bytes(pcm_bytes);
        info!(duration_s, pcm_bytes, "decoded");
        job.update("recording the audio blob", |record| {
            record.blobs.audio = Some(audio_blob.clone());
            record.duration_s = Some(duration_s);
        })
        .await?;
        Ok(Outcome::Forward)
    }
}

/// The upload as a local file ffmpeg can read (and seek in).
struct MediaFile {
    path: PathBuf,
    /// The folder of a staged copy, removed when this is dropped.
    _staging: Option<tempfile::TempDir>,
}

impl MediaFile {
    fn path(&self) -> &Path {
        &self.path
    }
}

/// How ffmpeg's run ended.
enum Decoded {
    /// The PCM is stored: its size in bytes.
    Audio(u64),
    /// ffmpeg could not decode the file: its reason, for users.
    Refused(String),
}

impl Decoder {
    /// A local store's blob is read in place; from S3 the upload is first copied to a local
    /// file, because ffmpeg needs to seek in some inputs (mp4 with its index at the end).
    async fn media_file(&self, blob: &str) -> Result<MediaFile, StageError> {
        if let Some(path) = self.blobs.local_file(blob) {
            return Ok(MediaFile {
                path,
                _staging: None,
            });
        }
        std::fs::create_dir_all(&self.settings.work_dir)
            .map_err(|err| StageError::transient("creating the work dir", err))?;
        let staging = tempfile::tempdir_in(&self.settings.work_dir)
            .map_err(|err| StageError::transient("creating a staging dir", err))?;
        let path = staging.path().join("input");
        let size = self
            .blobs
            .download_to(blob, &path)
            .await
            .map_err(|err| StageError::transient("staging the upload", err))?;
        debug!(size, "upload staged");
        Ok(MediaFile {
            path,
            _staging: Some(staging),
        })
    }

    /// Runs ffmpeg on the probed audio stream and streams its PCM to `audio_blob`, reporting
    /// progress on the way. Nothing is left in the store unless the whole audio is.
    async fn decode(
        &self,
        media: &MediaFile,
        probe: &Probe,
        audio_blob: &str,
        job: &JobContext,
    ) -> Result<Decoded, StageError> {
        let (reports, received) = mpsc::channel::<FfmpegReport>(16);
        let (ffmpeg, path, stream) = (
            self.settings.ffmpeg.clone(),
            media.path.clone(),
            probe.audio_stream,
        );
        let ffmpeg_task =
            tokio::task::spawn_blocking(move || run_ffmpeg(&ffmpeg, &path, stream, reports));
        let mut writer = self
            .blobs
            .writer(audio_blob)
            .await
            .map_err(|err| StageError::transient("opening the audio blob", err))?;
        let write_error = store_reports(received, &mut writer, probe.duration_s, job).await;
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
            let reason = end.last_error.unwrap_or_else(|| "ffmpeg failed".to_owned());
            return Ok(Decoded::Refused(reason));
        }
        let pcm_bytes = writer
            .finish()
            .await
            .map_err(|err| StageError::transient("finishing the audio blob", err))?;
        Ok(Decoded::Audio(pcm_bytes))
    }
}

/// Writes the PCM ffmpeg reports to `writer` and turns its clock into progress (once a second),
/// until ffmpeg's thread ends. After a failed write it keeps draining, so that the thread ends;
/// returns that write's error.
async fn store_reports(
    mut received: mpsc::Receiver<FfmpegReport>,
    writer: &mut BlobWriter,
    probed_duration: Option<f64>,
    job: &JobContext,
) -> Option<BlobError> {
    let mut duration = probed_duration;
    let mut last_report = Instant::now();
    let mut write_error = None;
    while let Some(report) = received.recv().await {
        match report {
            FfmpegReport::Pcm(chunk) => {
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
                    && last_report.elapsed() >= PROGRESS_EVERY
                {
                    last_report = Instant::now();
                    job.progress(seconds / total).await;
                }
            }
        }
    }
    write_error
}

/// How often progress is reported while decoding.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Runs ffmpeg on `media` (blocking: ffmpeg-sidecar's iterator blocks) and sends PCM chunks and
/// timing to `reports`. The channel is bounded, so a slow upload slows ffmpeg instead of filling
/// memory.
fn run_ffmpeg(
    ffmpeg: &Path,
    media: &Path,
    audio_stream: u32,
    reports: mpsc::Sender<FfmpegReport>,
) -> std::io::Result<FfmpegEnd> {
    let mut child = FfmpegCommand::new_with_path(ffmpeg)
        .hide_banner()
        .input(media)
        // The probed audio stream only: no video, subtitles or data.
        .args(["-map", &format!("0:{audio_stream}"), "-vn", "-sn", "-dn"])
        .args(["-ac", &pcm::CHANNELS.to_string()])
        .args([
            "-ar",
            &pcm::SAMPLE_RATE.to_string(),
            "-f",
            pcm::FFMPEG_FORMAT,
        ])
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
            if let Err(err) = child.kill() {
                warn!(error = %err, "cannot stop ffmpeg");
            }
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
    fn a_probe_failure_names_the_upload_and_only_a_missing_ffprobe_is_retried() {
        let cases = [
            (
                ProbeError::Unreadable("Invalid data found".into()),
                Some("cannot decode talk.mp3: Invalid data found"),
            ),
            (ProbeError::NoAudio, Some("no audio stream in talk.mp3")),
            (ProbeError::Run(std::io::Error::other("not found")), None),
        ];
        for (error, permanent) in cases {
            match (error.into_stage_error("talk.mp3"), permanent) {
                (StageError::Permanent(reason), Some(expected)) => assert_eq!(reason, expected),
                (StageError::Transient { context, .. }, None) => {
                    assert_eq!(context, "running ffprobe")
                }
                (other, expected) => panic!("{other:?} instead of {expected:?}"),
            }
        }
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
