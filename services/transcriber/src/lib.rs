//! Transcribe stage: Whisper (CTranslate2 through ct2rs, linked to the official CTranslate2
//! library, int8 on CPU). The decoded PCM is read from the object store as a stream, batch by
//! batch of 30 s windows, so memory does not grow with the length of the media; each batch is
//! encoded once; silent windows are skipped; segments carry times in seconds of the media.

pub mod engine;

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use jetscribe_blobstore::BlobStore;
use jetscribe_nats::{JobContext, Outcome, Stage, StageError};
use proto_msgs::{
    AnalyzeRequest, JobBlobs, LanguageDetection, Segment, TranscribeRequest, Transcript,
};
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

/// A window quieter than this (RMS of samples in [-1, 1], about -54 dBFS) holds no speech worth
/// decoding; Whisper tends to invent text on silence.
const SILENCE_RMS: f32 = 0.002;

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
    /// Adds a window's segments, shifted to media time and kept in order (never going back).
    fn push_window(&mut self, offset_s: f64, segments: Vec<engine::WindowSegment>) {
        for segment in segments {
            let floor = self.segments.last().map_or(0.0, |last| last.end);
            let start = (offset_s + segment.start).max(floor);
            let end = (offset_s + segment.end).max(start);
            self.segments.push(Segment {
                start: round_ms(start),
                end: round_ms(end),
                text: segment.text,
            });
        }
    }
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

impl Transcriber {
    /// Runs one batch on a blocking thread; returns the language used and per-window segments.
    async fn run_batch(
        &self,
        samples: Vec<f32>,
        language: Option<String>,
    ) -> Result<
        (
            Option<engine::DetectedLanguage>,
            Vec<Vec<engine::WindowSegment>>,
            Vec<usize>,
        ),
        StageError,
    > {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            // Windows that are silence are not sent to the model at all.
            let windows: Vec<(usize, &[f32])> = samples
                .chunks(WINDOW_SAMPLES)
                .enumerate()
                .filter(|(_, window)| rms(window) >= SILENCE_RMS)
                .collect();
            let slices: Vec<&[f32]> = windows.iter().map(|(_, window)| *window).collect();
            let (detected, segments) = engine.transcribe_batch(&slices, language.as_deref())?;
            let indices = windows.iter().map(|(index, _)| *index).collect();
            Ok::<_, EngineError>((detected, segments, indices))
        })
        .await
        .map_err(|err| StageError::transient("transcription thread", err))?
        .map_err(|err| StageError::transient("transcribing", err))
    }
}

fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt()
}

impl Stage for Transcriber {
    type Input = TranscribeRequest;

    async fn handle(
        &self,
        input: TranscribeRequest,
        job: &JobContext,
    ) -> Result<Outcome, StageError> {
        let batch_samples = WINDOW_SAMPLES * self.batch_size;
        let mut pcm = self
            .blobs
            .get_stream(&input.audio_blob)
            .await
            .map_err(|err| StageError::transient("opening the audio", err))?;
        let mut builder = TranscriptBuilder {
            segments: Vec::new(),
            language: None,
        };
        let requested = input
            .language
            .clone()
            .filter(|_| self.engine.is_multilingual());
        let mut samples: Vec<f32> = Vec::with_capacity(batch_samples);
        // A chunk may end in the middle of a 2-byte sample.
        let mut odd_byte: Option<u8> = None;
        let mut offset_s = 0.0;
        let mut finished = false;
        while !finished {
            match pcm.next().await {
                Some(chunk) => {
                    let chunk =
                        chunk.map_err(|err| StageError::transient("reading the audio", err))?;
                    let mut bytes = chunk.as_ref();
                    if let Some(low) = odd_byte.take() {
                        if let Some((&high, rest)) = bytes.split_first() {
                            samples.push(f32::from(i16::from_le_bytes([low, high])) / 32768.0);
                            bytes = rest;
                        } else {
                            odd_byte = Some(low);
                        }
                    }
                    let mut pairs = bytes.chunks_exact(2);
                    samples.extend(
                        pairs.by_ref().map(|pair| {
                            f32::from(i16::from_le_bytes([pair[0], pair[1]])) / 32768.0
                        }),
                    );
                    if let [low] = pairs.remainder() {
                        odd_byte = Some(*low);
                    }
                }
                None => finished = true,
            }
            while samples.len() >= batch_samples || (finished && !samples.is_empty()) {
                let take = samples.len().min(batch_samples);
                let rest = samples.split_off(take);
                let batch = std::mem::replace(&mut samples, rest);
                let batch_len_s = batch.len() as f64 / SAMPLE_RATE as f64;
                let language = requested
                    .clone()
                    .or_else(|| builder.language.as_ref().map(|d| d.code.clone()));
                let (detected, windows, indices) = self.run_batch(batch, language).await?;
                if builder.language.is_none() {
                    builder.language = detected;
                }
                for (segments, index) in windows.into_iter().zip(indices) {
                    builder.push_window(
                        offset_s + (index * WINDOW_SAMPLES) as f64 / SAMPLE_RATE as f64,
                        segments,
                    );
                }
                offset_s += batch_len_s;
                debug!(offset_s, "batch transcribed");
                if input.duration_s > 0.0 {
                    job.progress(offset_s / input.duration_s).await;
                }
            }
        }

        let language = match (&requested, &builder.language) {
            _ if !self.engine.is_multilingual() => LanguageDetection {
                language: "en".to_owned(),
                probability: 1.0,
                source: "model".to_owned(),
            },
            (Some(code), _) => LanguageDetection {
                language: code.clone(),
                probability: 1.0,
                source: "user".to_owned(),
            },
            (None, Some(detected)) => LanguageDetection {
                language: detected.code.clone(),
                probability: (detected.probability * 1000.0).round() / 1000.0,
                source: "whisper".to_owned(),
            },
            // Nothing but silence: no language to detect.
            (None, None) => LanguageDetection {
                language: "und".to_owned(),
                probability: 0.0,
                source: "whisper".to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        builder.push_window(0.0, vec![segment(0.0, 4.0, "a"), segment(3.5, 30.0, "b")]);
        builder.push_window(30.0, vec![segment(0.0, 2.0, "c")]);
        let times: Vec<(f64, f64)> = builder.segments.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(times, vec![(0.0, 4.0), (4.0, 30.0), (30.0, 32.0)]);
    }
}
