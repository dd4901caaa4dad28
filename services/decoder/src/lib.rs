//! Decode stage: turns any uploaded media (audio or video) into 16 kHz mono signed 16-bit PCM with
//! ffmpeg (through ffmpeg-sidecar, which never downloads ffmpeg: PATH or FFMPEG_PATH), streamed to
//! the object store in bounded memory, with progress from ffmpeg's clock against the duration.
//! With channels=split, each channel becomes its own mono audio ([`split`]).
//! [`probe`](mod@probe) looks first, through an allow-list of container formats and local files only, and
//! refuses media longer than MAX_DURATION; [`ffmpeg`] decodes through the same allow-list and
//! stops at MAX_DURATION whatever the header said.

pub mod ffmpeg;
pub mod probe;
pub mod split;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jetscribe_blobstore::{BlobError, BlobStore, BlobWriter};
use jetscribe_nats::{JobContext, Outcome, StageError, StageHandler};
use proto_msgs::{Channels, DecodeRequest, JobBlobs, pcm};
use tokio::sync::mpsc;
use tracing::{debug, info};
use uuid::Uuid;

use ffmpeg::{FfmpegReport, run_ffmpeg};
use probe::{Probe, output_channels, probe, ran_past, short_of_space, too_long};
use split::ChannelSplitter;

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
    /// The longest media decoded (MAX_DURATION).
    pub max_duration: Duration,
    /// Free bytes the decoded audio must leave on a local store's disk (MIN_FREE_SPACE).
    pub min_free_space: u64,
    /// How long ffprobe may look at an upload (PROBE_TIMEOUT).
    pub probe_timeout: Duration,
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

impl StageHandler for Decoder {
    type Input = DecodeRequest;

    async fn handle(&self, input: DecodeRequest, job: &JobContext) -> Result<Outcome, StageError> {
        let media = self.media_file(&input.input_blob).await?;
        let probe = probe(
            &self.settings.ffprobe,
            media.path(),
            self.settings.probe_timeout,
        )
        .await
        .map_err(|err| err.into_stage_error(&input.filename))?;
        let (format, seconds) = (&probe.format, probe.duration_s);
        debug!(%format, stream = probe.audio_stream, duration_s = ?seconds, "probed");
        if let Some(refused) =
            seconds.and_then(|seconds| too_long(&input.filename, seconds, self.max_duration()))
        {
            return Err(refused);
        }
        let channels = output_channels(&input.filename, input.channels, probe.channels)?;
        let free = self.blobs.free_space();
        let min_free = self.settings.min_free_space;
        if let Some(refused) = short_of_space(&input.filename, seconds, channels, free, min_free) {
            return Err(refused);
        }
        let audio_blobs = audio_blobs(input.job_id, input.channels, channels);
        let pcm_bytes = self
            .decode(&media, &probe, &audio_blobs, &input.filename, job)
            .await?;
        if pcm_bytes == 0 {
            return Err(StageError::Permanent(format!(
                "no audio in {}: the audio stream is empty",
                input.filename
            )));
        }
        let duration_s = pcm::seconds_in_bytes(pcm_bytes);
        info!(duration_s, pcm_bytes, channels, "decoded");
        job.update("recording the audio blob", |record| {
            record.blobs.audio = audio_blobs.first().cloned();
            if input.channels == Channels::Split {
                record.blobs.channel_audio = audio_blobs.clone();
            }
            record.duration_s = Some(duration_s);
        })
        .await?;
        Ok(Outcome::Forward)
    }
}

/// Where the decoded audio goes: one blob of the mix, or one per channel.
fn audio_blobs(job_id: Uuid, requested: Channels, channels: u16) -> Vec<String> {
    match requested {
        Channels::Mix => vec![JobBlobs::audio_path(job_id)],
        Channels::Split => (0..channels)
            .map(|channel| JobBlobs::channel_audio_path(job_id, channel))
            .collect(),
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

impl Decoder {
    fn max_duration(&self) -> Duration {
        self.settings.max_duration
    }

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
            .map_err(|err| match err {
                // Writing the local copy failed (the work disk full): this upload's own size may
                // be why, so it counts against the job rather than waiting as an outage would.
                BlobError::Io { .. } => StageError::Transient {
                    context: "staging the upload",
                    source: err.into(),
                },
                err => StageError::transient("staging the upload", err),
            })?;
        debug!(size, "upload staged");
        Ok(MediaFile {
            path,
            _staging: Some(staging),
        })
    }

    /// Runs ffmpeg on the probed audio stream and streams its PCM to `audio_blobs` (the mix, or
    /// one blob per channel), reporting progress on the way; returns the size of each. A
    /// refusal leaves nothing in the store, and nothing is recorded on the job unless the whole
    /// audio is stored and no longer than MAX_DURATION (`filename` names the upload in the
    /// reason of a refusal). A store that fails to finish one channel's blob may leave the
    /// channels before it: the retry writes them again, and the job's folder goes with the job.
    async fn decode(
        &self,
        media: &MediaFile,
        probe: &Probe,
        audio_blobs: &[String],
        filename: &str,
        job: &JobContext,
    ) -> Result<u64, StageError> {
        let (reports, received) = mpsc::channel::<FfmpegReport>(16);
        let (ffmpeg, path, probed) = (
            self.settings.ffmpeg.clone(),
            media.path.clone(),
            probe.clone(),
        );
        // Past the limit (and its slack): enough to tell that the media is too long.
        let max_length = self.max_duration() + Duration::from_secs(2);
        let channels = audio_blobs.len() as u16;
        let ffmpeg_task = tokio::task::spawn_blocking(move || {
            run_ffmpeg(&ffmpeg, &path, &probed, channels, max_length, reports)
        });
        let mut writers = Vec::with_capacity(audio_blobs.len());
        for blob in audio_blobs {
            let writer = self.blobs.writer(blob).await;
            writers
                .push(writer.map_err(|err| StageError::transient("opening the audio blob", err))?);
        }
        let write_error = store_reports(received, &mut writers, probe.duration_s, job).await;
        let end = ffmpeg_task
            .await
            .map_err(|err| StageError::transient("ffmpeg thread", err))?
            .map_err(|err| StageError::transient("starting ffmpeg", err))?;
        if let Some(err) = write_error {
            abort_all(writers).await;
            return Err(StageError::transient("writing the audio blob", err));
        }
        let decoded_s = pcm::seconds_in_bytes(writers[0].written());
        // A header that said less (or nothing): ffmpeg stopped just past the limit.
        let refusal = match ran_past(filename, decoded_s, self.max_duration()) {
            Some(refused) => Some(refused),
            None if !end.success => {
                let reason = end.last_error.unwrap_or_else(|| "ffmpeg failed".to_owned());
                Some(StageError::Permanent(format!(
                    "cannot decode {filename}: {reason}"
                )))
            }
            None => None,
        };
        if let Some(refused) = refusal {
            abort_all(writers).await;
            return Err(refused);
        }
        let mut written = 0;
        for writer in writers {
            written = writer
                .finish()
                .await
                .map_err(|err| StageError::transient("finishing the audio blob", err))?;
        }
        Ok(written)
    }
}

async fn abort_all(writers: Vec<BlobWriter>) {
    for writer in writers {
        writer.abort().await;
    }
}

/// Writes the PCM ffmpeg reports to `writers` (one per channel it decodes) and turns its clock
/// into progress (once a second), until ffmpeg's thread ends. After a failed write it keeps
/// draining, so that the thread ends; returns that write's error.
async fn store_reports(
    mut received: mpsc::Receiver<FfmpegReport>,
    writers: &mut [BlobWriter],
    probed_duration: Option<f64>,
    job: &JobContext,
) -> Option<BlobError> {
    let mut duration = probed_duration;
    let mut last_report = Instant::now();
    let mut write_error = None;
    let mut splitter = ChannelSplitter::new(writers.len() as u16);
    while let Some(report) = received.recv().await {
        match report {
            FfmpegReport::Pcm(chunk) => {
                if write_error.is_some() {
                    continue;
                }
                for (writer, samples) in writers.iter_mut().zip(splitter.deinterleave(chunk)) {
                    if let Err(err) = writer.write(Bytes::from(samples)).await {
                        write_error = Some(err);
                        break;
                    }
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
