//! Transcribe stage: Whisper (CTranslate2 through ct2rs, linked to the official CTranslate2
//! library, int8 on CPU). The decoded PCM is read from the object store as a stream, batch by
//! batch of 30 s windows, so memory does not grow with the length of the media; each batch is
//! encoded once; silent windows are skipped; segments carry times in seconds of the media.

pub mod engine;
pub mod vad;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jetscribe_blobstore::{BlobError, BlobStore};
use jetscribe_nats::{JobContext, Outcome, Stage, StageError};
use proto_msgs::{
    AnalyzeRequest, JobBlobs, LanguageDetection, Segment, TranscribeRequest, Transcript, Word,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

pub use engine::{EngineError, WhisperEngine};
use engine::{SAMPLE_RATE, WINDOW_SAMPLES};

/// Settings of the transcribe stage.
#[derive(Debug, Clone)]
pub struct TranscriberSettings {
    /// CTranslate2 model folder (WHISPER_MODEL).
    pub model_dir: PathBuf,
    /// CPU threads of the model (WHISPER_THREADS).
    pub threads: usize,
    /// 30 s windows encoded and decoded per CTranslate2 call (WHISPER_BATCH_SIZE).
    pub batch_size: usize,
    /// Beam search width (WHISPER_BEAM_SIZE).
    pub beam_size: usize,
}

/// The transcriber's progress on one job, stored after each batch so that a replacement process
/// resumes where a dead one stopped.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// Media sample from which audio is still to be transcribed.
    resume_sample: u64,
    segments: Vec<Segment>,
    language: Option<engine::DetectedLanguage>,
}

/// The transcribe stage. The model is loaded once and shared by every job of the process.
pub struct Transcriber {
    blobs: BlobStore,
    engine: Arc<WhisperEngine>,
    batch_size: usize,
}

impl Transcriber {
    /// Loads the model (seconds; do it once at start-up).
    pub fn new(blobs: BlobStore, settings: &TranscriberSettings) -> Result<Self, EngineError> {
        let engine =
            WhisperEngine::load(&settings.model_dir, settings.threads, settings.beam_size)?;
        info!(
            model = engine.name(),
            multilingual = engine.is_multilingual(),
            threads = settings.threads,
            "Whisper model loaded"
        );
        Ok(Self {
            blobs,
            engine: Arc::new(engine),
            batch_size: settings.batch_size.max(1),
        })
    }
}

/// Accumulates the transcript across batches.
struct TranscriptBuilder {
    segments: Vec<Segment>,
    language: Option<engine::DetectedLanguage>,
}

impl TranscriptBuilder {
    /// Adds a chunk's segments, shifted to media time and kept in order (never going back).
    fn push_window(&mut self, offset_s: f64, segments: Vec<engine::WindowSegment>) {
        for segment in segments {
            let floor = self.segments.last().map_or(0.0, |last| last.end);
            let start = (offset_s + segment.start).max(floor);
            let end = (offset_s + segment.end).max(start);
            let words = segment.words.map(|words| {
                words
                    .into_iter()
                    .map(|word| {
                        let word_start = (offset_s + word.start).clamp(start, end);
                        Word {
                            start: round_ms(word_start),
                            end: round_ms((offset_s + word.end).clamp(word_start, end)),
                            word: word.word,
                            probability: (word.probability * 1000.0).round() / 1000.0,
                        }
                    })
                    .collect()
            });
            self.segments.push(Segment {
                start: round_ms(start),
                end: round_ms(end),
                text: segment.text,
                words,
            });
        }
    }
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

fn sample_to_s(sample: u64) -> f64 {
    sample as f64 / SAMPLE_RATE as f64
}

impl Transcriber {
    /// Transcribes a batch of chunks on a blocking thread; returns the language used and the
    /// segments of each chunk.
    async fn run_batch(
        &self,
        chunks: Vec<vad::Chunk>,
        language: Option<String>,
        word_timestamps: bool,
    ) -> Result<
        (
            Option<engine::DetectedLanguage>,
            Vec<(vad::Chunk, Vec<engine::WindowSegment>)>,
        ),
        StageError,
    > {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let windows: Vec<&[f32]> = chunks
                .iter()
                .map(|chunk| chunk.samples.as_slice())
                .collect();
            let (detected, segments) =
                engine.transcribe_batch(&windows, language.as_deref(), word_timestamps)?;
            Ok::<_, EngineError>((detected, chunks.into_iter().zip(segments).collect()))
        })
        .await
        .map_err(|err| StageError::transient("transcription thread", err))?
        .map_err(|err| StageError::transient("transcribing", err))
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
}

/// Audio read ahead of the chunker: the batch plus one window, so that every chunk of the batch
/// can find its end.
fn read_ahead_samples(batch_size: usize) -> usize {
    (batch_size + 1) * WINDOW_SAMPLES
}

impl Stage for Transcriber {
    type Input = TranscribeRequest;

    async fn handle(
        &self,
        input: TranscribeRequest,
        job: &JobContext,
    ) -> Result<Outcome, StageError> {
        let checkpoint_blob = JobBlobs::transcribe_checkpoint_path(input.job_id);
        let checkpoint = self.load_checkpoint(&checkpoint_blob).await?;
        let audio_bytes = self
            .blobs
            .size(&input.audio_blob)
            .await
            .map_err(|err| StageError::transient("opening the audio", err))?;
        let resume_byte = (checkpoint.resume_sample * 2).min(audio_bytes);
        if checkpoint.resume_sample > 0 {
            let resumed_from_s = sample_to_s(checkpoint.resume_sample);
            info!(
                resumed_from_s,
                segments = checkpoint.segments.len(),
                "resuming from checkpoint"
            );
            job.jobs()
                .update(input.job_id, |record| {
                    record
                        .stage_run(proto_msgs::Stage::Transcribe)
                        .resumed_from_s = Some(round_ms(resumed_from_s));
                })
                .await
                .map_err(|err| StageError::transient("recording the resume point", err))?;
        }
        let mut builder = TranscriptBuilder {
            segments: checkpoint.segments,
            language: checkpoint.language,
        };
        let requested = input
            .language
            .clone()
            .filter(|_| self.engine.is_multilingual());

        let mut pcm: std::pin::Pin<
            Box<dyn futures::Stream<Item = Result<bytes::Bytes, BlobError>> + Send>,
        > = if resume_byte < audio_bytes {
            Box::pin(
                self.blobs
                    .get_stream_from(&input.audio_blob, resume_byte)
                    .await
                    .map_err(|err| StageError::transient("opening the audio", err))?,
            )
        } else {
            Box::pin(futures::stream::empty())
        };
        let read_ahead = read_ahead_samples(self.batch_size);
        let mut buffer: Vec<f32> = Vec::with_capacity(read_ahead + WINDOW_SAMPLES);
        let mut buffer_origin = resume_byte / 2;
        let mut pending: VecDeque<vad::Chunk> = VecDeque::new();
        // A chunk of the stream may end in the middle of a 2-byte sample.
        let mut odd_byte: Option<u8> = None;
        let started = Instant::now();
        let started_at_s = sample_to_s(buffer_origin);
        let mut last_progress: Option<Instant> = None;
        let mut finished = false;
        while !finished {
            match pcm.next().await {
                Some(chunk) => {
                    let chunk =
                        chunk.map_err(|err| StageError::transient("reading the audio", err))?;
                    append_pcm(&mut buffer, &mut odd_byte, &chunk);
                    if buffer.len() < read_ahead {
                        continue;
                    }
                }
                None => finished = true,
            }
            let (chunks, consumed) = vad::split(&buffer, buffer_origin, finished);
            buffer.drain(..consumed);
            buffer_origin += consumed as u64;
            pending.extend(chunks);

            while pending.len() >= self.batch_size || (finished && !pending.is_empty()) {
                let take = pending.len().min(self.batch_size);
                let batch: Vec<vad::Chunk> = pending.drain(..take).collect();
                let language = requested
                    .clone()
                    .or_else(|| builder.language.as_ref().map(|d| d.code.clone()));
                let (detected, results) = self
                    .run_batch(batch, language, input.word_timestamps)
                    .await?;
                if builder.language.is_none() {
                    builder.language = detected;
                }
                for (chunk, segments) in results {
                    builder.push_window(sample_to_s(chunk.start_sample), segments);
                }
                // Everything before the next chunk still to do (or the unread audio) is done.
                let resume_sample = pending
                    .front()
                    .map_or(buffer_origin, |chunk| chunk.start_sample);
                let checkpoint = Checkpoint {
                    resume_sample,
                    segments: builder.segments.clone(),
                    language: builder.language.clone(),
                };
                self.blobs
                    .put_json(&checkpoint_blob, &checkpoint)
                    .await
                    .map_err(|err| StageError::transient("storing the checkpoint", err))?;
                let done_s = sample_to_s(resume_sample);
                debug!(done_s, "batch transcribed");
                if input.duration_s > 0.0
                    && last_progress.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
                {
                    last_progress = Some(Instant::now());
                    let rate = (done_s - started_at_s) / started.elapsed().as_secs_f64().max(1e-3);
                    let eta = (rate > 0.0).then(|| (input.duration_s - done_s).max(0.0) / rate);
                    job.progress_with_eta(done_s / input.duration_s, eta).await;
                }
            }
        }

        let language = match (&requested, &builder.language) {
            _ if !self.engine.is_multilingual() => LanguageDetection {
                language: "en".to_owned(),
                probability: 1.0,
                source: "model".to_owned(),
                text_check: None,
            },
            (Some(code), _) => LanguageDetection {
                language: code.clone(),
                probability: 1.0,
                source: "user".to_owned(),
                text_check: None,
            },
            (None, Some(detected)) => LanguageDetection {
                language: detected.code.clone(),
                probability: (detected.probability * 1000.0).round() / 1000.0,
                source: "whisper".to_owned(),
                text_check: None,
            },
            // Nothing but silence: no language to detect.
            (None, None) => LanguageDetection {
                language: "und".to_owned(),
                probability: 0.0,
                source: "whisper".to_owned(),
                text_check: None,
            },
        };
        let text = builder
            .segments
            .iter()
            .map(|segment| segment.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let transcript = Transcript {
            text,
            segments: builder.segments,
            language,
            duration_s: input.duration_s,
            model: self.engine.name().to_owned(),
        };
        let transcript_blob = JobBlobs::transcript_path(input.job_id);
        self.blobs
            .put_json(&transcript_blob, &transcript)
            .await
            .map_err(|err| StageError::transient("storing the transcript", err))?;
        job.jobs()
            .update(input.job_id, |record| {
                record.blobs.transcript = Some(transcript_blob.clone());
            })
            .await
            .map_err(|err| StageError::transient("recording the transcript", err))?;
        info!(segments = transcript.segments.len(), language = %transcript.language.language, "transcribed");
        Outcome::forward(&AnalyzeRequest {
            job_id: input.job_id,
            transcript_blob,
        })
    }
}

/// Appends s16le bytes to `samples` as f32 in [-1, 1], carrying an odd trailing byte over.
fn append_pcm(samples: &mut Vec<f32>, odd_byte: &mut Option<u8>, mut bytes: &[u8]) {
    if let Some(low) = odd_byte.take() {
        match bytes.split_first() {
            Some((&high, rest)) => {
                samples.push(f32::from(i16::from_le_bytes([low, high])) / 32768.0);
                bytes = rest;
            }
            None => {
                *odd_byte = Some(low);
                return;
            }
        }
    }
    let mut pairs = bytes.chunks_exact(2);
    samples.extend(
        pairs
            .by_ref()
            .map(|pair| f32::from(i16::from_le_bytes([pair[0], pair[1]])) / 32768.0),
    );
    if let [low] = pairs.remainder() {
        *odd_byte = Some(*low);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_split_across_reads_decodes_whole_samples() {
        let mut samples = Vec::new();
        let mut odd = None;
        let bytes: Vec<u8> = [1000i16, -2000, 32767]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        append_pcm(&mut samples, &mut odd, &bytes[..3]);
        append_pcm(&mut samples, &mut odd, &bytes[3..]);
        let back: Vec<i16> = samples
            .iter()
            .map(|s| (s * 32768.0).round() as i16)
            .collect();
        assert_eq!(back, vec![1000, -2000, 32767]);
        assert_eq!(odd, None);
    }

    #[test]
    fn window_segments_are_shifted_to_media_time_and_never_go_back() {
        let mut builder = TranscriptBuilder {
            segments: Vec::new(),
            language: None,
        };
        let segment = |start, end, text: &str| engine::WindowSegment {
            start,
            end,
            text: text.into(),
            words: None,
        };
        builder.push_window(0.0, vec![segment(0.0, 4.0, "a"), segment(3.5, 30.0, "b")]);
        builder.push_window(30.0, vec![segment(0.0, 2.0, "c")]);
        let times: Vec<(f64, f64)> = builder.segments.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(times, vec![(0.0, 4.0), (4.0, 30.0), (30.0, 32.0)]);
    }
}
