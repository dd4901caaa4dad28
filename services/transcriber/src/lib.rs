//! Transcribe stage: Whisper (CTranslate2 through ct2rs, linked to the official CTranslate2
//! library, int8 on CPU). The decoded PCM is read from the object store as a stream and cut
//! into chunks of speech ([`vad`], on Silero's model: [`silero`]), packed into full 30 s windows
//! ([`packing`]) which
//! [`batcher`] hands out in batches so that memory does not grow with the length of the media;
//! each batch is encoded once ([`engine`], on [`features`] computed as Whisper's); the
//! [`transcript`] grows batch by batch in media time, with a checkpoint after each batch that a
//! later attempt resumes from.

pub mod batcher;
pub mod decoding;
pub mod engine;
pub mod features;
pub mod packing;
pub mod silero;
#[cfg(test)]
mod test_audio;
pub mod transcript;
pub mod vad;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use jetscribe_blobstore::{BlobError, BlobStore};
use jetscribe_nats::{JobContext, Outcome, StageError, StageHandler};
use proto_msgs::{JobBlobs, ModelName, Stage, TranscribeRequest, Transcript, pcm};
use tracing::{debug, info};

use batcher::AudioBatcher;
pub use decoding::DecodingOptions;
use engine::{BatchRequest, BatchTranscript, JobDecoding};
pub use engine::{EngineError, WhisperEngine};
use packing::Window;
use silero::SileroModel;
pub use silero::VadError;
use transcript::{
    Checkpoint, HeardChannel, ResumePoint, TranscriptBuilder, final_language, joined_text,
    merge_channels, resume_point,
};
use vad::{SpeechCutter, VadOptions};

/// Settings of the transcribe stage.
#[derive(Debug, Clone)]
pub struct TranscriberSettings {
    /// The model's name: the pool whose jobs this transcriber takes (WHISPER_MODELS).
    pub model: ModelName,
    /// CTranslate2 model folder (WHISPER_MODELS, WHISPER_MODEL).
    pub model_dir: PathBuf,
    /// CPU threads of the model (WHISPER_THREADS).
    pub threads: usize,
    /// 30 s windows encoded and decoded per CTranslate2 call (WHISPER_BATCH_SIZE).
    pub batch_size: usize,
    /// How windows are decoded: beam, temperatures, thresholds, prompts (WHISPER_BEAM_SIZE,
    /// WHISPER_TEMPERATURES, ...).
    pub decoding: DecodingOptions,
    pub vad: VadSettings,
}

/// Where the voice activity detector comes from, and how it cuts.
#[derive(Debug, Clone, PartialEq)]
pub struct VadSettings {
    /// The ONNX Runtime library (ONNXRUNTIME_LIB).
    pub library: PathBuf,
    /// Silero's ONNX model (VAD_MODEL).
    pub model: PathBuf,
    /// A silence this long ends a chunk of speech (VAD_MIN_SILENCE_MS).
    pub min_silence_ms: u64,
}

/// Why a transcriber could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Vad(#[from] VadError),
}

/// The transcribe stage for one model's pool. The model is loaded once and shared by every job
/// of the process.
pub struct Transcriber {
    model: ModelName,
    blobs: BlobStore,
    engine: Arc<WhisperEngine>,
    batch_size: usize,
    vad: SileroModel,
    vad_options: VadOptions,
}

impl Transcriber {
    /// Loads the model and warms it up on one batch of silence, and loads the VAD (seconds; do
    /// it once at start-up: blocking).
    pub fn new(blobs: BlobStore, settings: &TranscriberSettings) -> Result<Self, StartError> {
        let loading = Instant::now();
        let vad = SileroModel::load(&settings.vad.library, &settings.vad.model)?;
        let engine = WhisperEngine::load(
            &settings.model_dir,
            settings.threads,
            settings.decoding.clone(),
        )?;
        engine.warm_up(settings.batch_size)?;
        info!(
            model = %settings.model,
            folder = engine.name(),
            multilingual = engine.is_multilingual(),
            threads = settings.threads,
            seconds = loading.elapsed().as_secs_f64(),
            "Whisper model loaded and warmed up"
        );
        Ok(Self {
            model: settings.model.clone(),
            blobs,
            engine: Arc::new(engine),
            batch_size: settings.batch_size.max(1),
            vad,
            vad_options: VadOptions::faster_whisper(settings.vad.min_silence_ms)
                .cut_at_longest_pause(),
        })
    }
}

impl StageHandler for Transcriber {
    type Input = TranscribeRequest;

    fn model(&self) -> Option<&ModelName> {
        Some(&self.model)
    }

    async fn handle(
        &self,
        input: TranscribeRequest,
        job: &JobContext,
    ) -> Result<Outcome, StageError> {
        let started = Instant::now();
        let decoding = self
            .engine
            .job_decoding(&input.decoding)
            .map_err(|err| StageError::Permanent(err.to_string()))?;
        let requested = input
            .language
            .clone()
            .filter(|_| self.engine.is_multilingual());
        let channels = channels_of(&input);
        let mut progress = ProgressReporter::new(input.duration_s * channels.len() as f64);
        let mut job_audio = JobAudio {
            requested: requested.clone(),
            word_timestamps: input.word_timestamps,
            decoding: Arc::new(decoding),
            checkpoint_blob: String::new(),
            done_before_s: 0.0,
        };
        let (mut heard, mut media_s) = (Vec::new(), 0.0);
        for (index, channel) in channels.into_iter().enumerate() {
            job_audio.checkpoint_blob = channel.checkpoint_blob;
            job_audio.done_before_s = index as f64 * input.duration_s;
            let (transcript, resumed_s) = self
                .transcribe_channel(&channel.audio_blob, &job_audio, &mut progress, job)
                .await?;
            media_s += input.duration_s - resumed_s;
            let (segments, language) = transcript.finish();
            // The other channels are decoded in the language the first one with speech was
            // detected in: a side that only says "mm-hmm" is too little to detect it from.
            if job_audio.requested.is_none() {
                job_audio.requested = language.as_ref().map(|found| found.code.clone());
            }
            heard.push(HeardChannel {
                channel: channel.channel,
                segments,
                language,
            });
        }
        let (segments, detected) = merge_channels(heard);
        let language = final_language(
            self.engine.is_multilingual(),
            requested.as_deref(),
            detected.as_ref(),
        );
        let transcript = Transcript {
            text: joined_text(&segments),
            segments,
            language,
            duration_s: input.duration_s,
            model: self.engine.name().to_owned(),
            task: job_audio.decoding.task,
        };
        self.store_transcript(&transcript, job).await?;
        self.record_speed(media_s, started.elapsed());
        Ok(Outcome::Forward)
    }
}

/// One audio of a job: the mix, or a channel of channels=split.
struct ChannelAudio {
    audio_blob: String,
    checkpoint_blob: String,
    /// Which channel (`None`: the mix).
    channel: Option<u16>,
}

/// The audio a job's transcript is made of, in order.
fn channels_of(input: &TranscribeRequest) -> Vec<ChannelAudio> {
    if input.channel_blobs.is_empty() {
        return vec![ChannelAudio {
            audio_blob: input.audio_blob.clone(),
            checkpoint_blob: JobBlobs::transcribe_checkpoint_path(input.job_id),
            channel: None,
        }];
    }
    (0..)
        .zip(&input.channel_blobs)
        .map(|(channel, blob)| ChannelAudio {
            audio_blob: blob.clone(),
            checkpoint_blob: JobBlobs::channel_checkpoint_path(input.job_id, channel),
            channel: Some(channel),
        })
        .collect()
}

/// What every batch of one audio of a job is transcribed with.
struct JobAudio {
    /// The language the client asked for (on a multilingual model).
    requested: Option<String>,
    word_timestamps: bool,
    decoding: Arc<JobDecoding>,
    checkpoint_blob: String,
    /// Seconds of audio of the job before this one (the channels before it).
    done_before_s: f64,
}

/// What a batch of one job is transcribed with (owned: it goes to a blocking thread).
struct JobBatch {
    language: Option<String>,
    word_timestamps: bool,
    /// The text before the batch, as tokens.
    prompt: Vec<String>,
    decoding: Arc<JobDecoding>,
}

/// A stream of PCM bytes from the store.
type PcmStream = Pin<Box<dyn Stream<Item = Result<Bytes, BlobError>> + Send>>;

impl Transcriber {
    /// Counts `media_s` seconds transcribed in `took` (this try's share of the media, when it
    /// resumed from a checkpoint) in the model's real-time factor and media seconds.
    fn record_speed(&self, media_s: f64, took: Duration) {
        if !(media_s.is_finite() && media_s > 0.0) {
            return;
        }
        let label = jetscribe_metrics::ModelLabel {
            model: self.model.to_string(),
        };
        let metrics = jetscribe_metrics::metrics();
        let factor = metrics.real_time_factor.get_or_create(&label);
        factor.observe(took.as_secs_f64() / media_s);
        metrics
            .transcribed_media
            .get_or_create(&label)
            .inc_by(media_s);
    }

    async fn load_checkpoint(&self, path: &str) -> Result<Checkpoint, StageError> {
        match self.blobs.get_json::<Checkpoint>(path).await {
            Ok(checkpoint) => Ok(checkpoint),
            Err(BlobError::NotFound { .. }) => Ok(Checkpoint::default()),
            // An unreadable checkpoint only costs the work it saved.
            Err(BlobError::Json { .. }) => Ok(Checkpoint::default()),
            Err(err) => Err(StageError::transient("reading the checkpoint", err)),
        }
    }

    /// The audio from byte `from` on (nothing, if that is its end).
    async fn pcm_from(&self, blob: &str, from: u64, size: u64) -> Result<PcmStream, StageError> {
        if from >= size {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let stream = self
            .blobs
            .get_stream_from(blob, from)
            .await
            .map_err(|err| StageError::transient("opening the audio", err))?;
        Ok(Box::pin(stream))
    }

    /// Transcribes one audio of the job, from its checkpoint on; returns its transcript and the
    /// second it resumed from.
    async fn transcribe_channel(
        &self,
        audio_blob: &str,
        audio: &JobAudio,
        progress: &mut ProgressReporter,
        job: &JobContext,
    ) -> Result<(TranscriptBuilder, f64), StageError> {
        let checkpoint = self.load_checkpoint(&audio.checkpoint_blob).await?;
        let audio_bytes = self
            .blobs
            .size(audio_blob)
            .await
            .map_err(|err| StageError::transient("opening the audio", err))?;
        let resume = resume_point(&checkpoint, audio_bytes);
        record_resume(job, resume).await?;
        let mut transcript = TranscriptBuilder::from_checkpoint(checkpoint);
        let pcm = self.pcm_from(audio_blob, resume.byte, audio_bytes).await?;
        let cutter = SpeechCutter::new(self.vad.stream(), self.vad_options, resume.byte / 2);
        let batches = BatchReader::new(pcm, AudioBatcher::new(cutter, self.batch_size));
        let resumed_s = pcm::seconds_in_bytes(resume.byte);
        progress.skip(resumed_s);
        self.transcribe_batches(batches, audio, &mut transcript, progress, job)
            .await?;
        Ok((transcript, resumed_s))
    }

    /// Transcribes the audio batch by batch into `transcript`, storing a checkpoint and
    /// reporting progress after each batch.
    async fn transcribe_batches(
        &self,
        mut batches: BatchReader,
        audio: &JobAudio,
        transcript: &mut TranscriptBuilder,
        progress: &mut ProgressReporter,
        job: &JobContext,
    ) -> Result<(), StageError> {
        let decoding = &audio.decoding;
        // The text so far, as the prompt of the next windows (condition_on_previous_text).
        let mut prompt = decoding.initial_prompt.clone();
        while let Some(batch) = batches.next().await? {
            let language = audio
                .requested
                .clone()
                .or_else(|| transcript.language().map(|d| d.code.clone()));
            let job_batch = JobBatch {
                language,
                word_timestamps: audio.word_timestamps,
                prompt,
                decoding: decoding.clone(),
            };
            let (windows, decoded) = self.run_batch(batch, job_batch).await?;
            // Unconditioned, every window gets the job's prompt (as faster-whisper's batches do).
            prompt = match decoding.options.condition_on_previous_text {
                true => decoded.next_prompt,
                false => decoding.initial_prompt.clone(),
            };
            transcript.add_batch(decoded.language, windows.into_iter().zip(decoded.windows));
            let checkpoint = transcript.checkpoint(batches.resume_sample());
            self.blobs
                .put_json(&audio.checkpoint_blob, &checkpoint)
                .await
                .map_err(|err| StageError::transient("storing the checkpoint", err))?;
            let done_s = pcm::sample_to_seconds(checkpoint.resume_sample);
            progress.report(job, audio.done_before_s + done_s).await;
        }
        Ok(())
    }

    /// Transcribes a batch of windows on a blocking thread; returns the windows and what the
    /// engine made of them.
    async fn run_batch(
        &self,
        windows: Vec<Window>,
        job: JobBatch,
    ) -> Result<(Vec<Window>, BatchTranscript), StageError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let audio: Vec<&[f32]> = windows
                .iter()
                .map(|window| window.samples.as_slice())
                .collect();
            let request = BatchRequest {
                language: job.language.as_deref(),
                word_timestamps: job.word_timestamps,
                previous: &job.prompt,
                job: &job.decoding,
                consecutive: true,
            };
            let decoded = engine.transcribe_batch(&audio, &request)?;
            drop(audio);
            Ok::<_, EngineError>((windows, decoded))
        })
        .await
        .map_err(|err| StageError::transient("transcription thread", err))?
        .map_err(|err| StageError::transient("transcribing", err))
    }

    /// Stores the transcript and records it on the job.
    async fn store_transcript(
        &self,
        transcript: &Transcript,
        job: &JobContext,
    ) -> Result<(), StageError> {
        let blob = JobBlobs::transcript_path(job.job_id());
        self.blobs
            .put_json(&blob, transcript)
            .await
            .map_err(|err| StageError::transient("storing the transcript", err))?;
        job.update("recording the transcript", |record| {
            record.blobs.transcript = Some(blob.clone());
        })
        .await?;
        let (segments, language) = (transcript.segments.len(), &transcript.language.language);
        info!(segments, %language, "transcribed");
        Ok(())
    }
}

/// Records where this attempt resumes, when it resumes an earlier one.
async fn record_resume(job: &JobContext, resume: ResumePoint) -> Result<(), StageError> {
    let Some(seconds) = resume.resumed_from_s else {
        return Ok(());
    };
    info!(resumed_from_s = seconds, "resuming from checkpoint");
    job.update("recording the resume point", |record| {
        record.stage_run(Stage::Transcribe).resumed_from_s = Some(seconds);
    })
    .await?;
    Ok(())
}

/// Batches of speech chunks read from the PCM stream.
struct BatchReader {
    pcm: PcmStream,
    /// Shared with the blocking thread that runs the VAD.
    batcher: Arc<Mutex<AudioBatcher>>,
}

impl BatchReader {
    fn new(pcm: PcmStream, batcher: AudioBatcher) -> Self {
        Self {
            pcm,
            batcher: Arc::new(Mutex::new(batcher)),
        }
    }

    fn batcher(&self) -> std::sync::MutexGuard<'_, AudioBatcher> {
        self.batcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next batch, reading as much audio as it takes; `None` at the end of the audio.
    async fn next(&mut self) -> Result<Option<Vec<Window>>, StageError> {
        loop {
            if let Some(batch) = self.batcher().take_batch() {
                return Ok(Some(batch));
            }
            if self.batcher().is_finished() {
                return Ok(None);
            }
            match self.pcm.next().await {
                Some(bytes) => {
                    let bytes =
                        bytes.map_err(|err| StageError::transient("reading the audio", err))?;
                    if self.batcher().push_pcm(&bytes) {
                        run_vad(self.batcher.clone(), AudioBatcher::cut).await?;
                    }
                }
                None => run_vad(self.batcher.clone(), AudioBatcher::finish).await?,
            }
        }
    }

    fn resume_sample(&self) -> u64 {
        self.batcher().resume_sample()
    }
}

/// Runs the VAD (`step`) over the audio read, on a blocking thread (milliseconds of CPU per
/// second of audio).
async fn run_vad(
    batcher: Arc<Mutex<AudioBatcher>>,
    step: fn(&mut AudioBatcher) -> Result<(), VadError>,
) -> Result<(), StageError> {
    tokio::task::spawn_blocking(move || {
        let mut batcher = batcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        step(&mut batcher)
    })
    .await
    .map_err(|err| StageError::transient("voice activity detection thread", err))?
    .map_err(|err| StageError::transient("voice activity detection", err))
}

/// Progress of the transcription, with an estimate of the time left, at most once a second.
/// Counted in seconds of audio to transcribe: the media's duration, once per channel heard
/// apart.
struct ProgressReporter {
    total_s: f64,
    started: Instant,
    /// Seconds an earlier try had done (the resume points of the channels so far): not this
    /// try's rate.
    skipped_s: f64,
    last_report: Option<Instant>,
}

/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

impl ProgressReporter {
    fn new(total_s: f64) -> Self {
        Self {
            total_s,
            started: Instant::now(),
            skipped_s: 0.0,
            last_report: None,
        }
    }

    /// An audio of the job resumes `resumed_s` seconds in, done by an earlier try.
    fn skip(&mut self, resumed_s: f64) {
        self.skipped_s += resumed_s;
    }

    /// `done_s` seconds of the audio are transcribed.
    async fn report(&mut self, job: &JobContext, done_s: f64) {
        debug!(done_s, "batch transcribed");
        if self.total_s <= 0.0
            || self
                .last_report
                .is_some_and(|at| at.elapsed() < PROGRESS_EVERY)
        {
            return;
        }
        self.last_report = Some(Instant::now());
        let eta = eta_s(
            done_s - self.skipped_s,
            self.started.elapsed(),
            self.total_s - done_s,
        );
        job.progress_with_eta(done_s / self.total_s, eta).await;
    }
}

/// Seconds until `left_s` of media are done, at the rate `done_s` took `elapsed`.
fn eta_s(done_s: f64, elapsed: Duration, left_s: f64) -> Option<f64> {
    let rate = done_s / elapsed.as_secs_f64().max(1e-3);
    (rate > 0.0).then(|| left_s.max(0.0) / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_job_is_heard_channel_by_channel_each_with_its_own_checkpoint() {
        let mut request = TranscribeRequest {
            job_id: uuid::Uuid::nil(),
            audio_blob: "jobs/x/audio.s16le".into(),
            channel_blobs: Vec::new(),
            duration_s: 1.0,
            language: None,
            word_timestamps: false,
            model: None,
            decoding: Default::default(),
        };
        let heard = |request: &TranscribeRequest| -> Vec<(String, String, Option<u16>)> {
            channels_of(request)
                .into_iter()
                .map(|c| (c.audio_blob, c.checkpoint_blob, c.channel))
                .collect()
        };
        let nil = uuid::Uuid::nil();
        assert_eq!(
            heard(&request),
            vec![(
                "jobs/x/audio.s16le".to_owned(),
                format!("jobs/{nil}/transcribe.checkpoint.json"),
                None
            )]
        );
        request.channel_blobs = vec!["left".into(), "right".into()];
        assert_eq!(
            heard(&request),
            vec![
                (
                    "left".to_owned(),
                    format!("jobs/{nil}/transcribe.ch0.checkpoint.json"),
                    Some(0)
                ),
                (
                    "right".to_owned(),
                    format!("jobs/{nil}/transcribe.ch1.checkpoint.json"),
                    Some(1)
                ),
            ]
        );
    }

    #[test]
    fn the_time_left_follows_the_rate_so_far() {
        let cases = [
            (60.0, 10.0, 120.0, Some(20.0)),
            (0.0, 10.0, 120.0, None),
            (30.0, 10.0, -5.0, Some(0.0)),
        ];
        for (done_s, elapsed_s, left_s, expected) in cases {
            assert_eq!(
                eta_s(done_s, Duration::from_secs_f64(elapsed_s), left_s),
                expected
            );
        }
    }
}
