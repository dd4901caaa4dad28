//! Whisper on CTranslate2 through `ct2rs::sys`: each batch of 30 s windows is encoded once, and
//! that one encoder output serves language detection and decoding (ct2rs's `Whisper::generate`
//! encodes twice when the language is unknown). Blocking: call from a blocking thread.

use std::path::{Path, PathBuf};

use ct2rs::Tokenizer as _;
use ct2rs::sys::{self, ComputeType, Config, Device, StorageView, WhisperOptions};
use ct2rs::tokenizers::hf;
use mel_spec::mel::{log_mel_spectrogram, mel, norm_mel};
use mel_spec::stft::Spectrogram;
use ndarray::Array2;

/// Whisper's fixed input: 16 kHz audio in windows of 30 s.
pub const SAMPLE_RATE: usize = 16_000;
pub const WINDOW_SAMPLES: usize = 30 * SAMPLE_RATE;
const N_FFT: usize = 400;
const HOP_LENGTH: usize = 160;
const N_MELS: usize = 80;
const N_FRAMES: usize = WINDOW_SAMPLES / HOP_LENGTH;
/// Seconds per timestamp token step.
const TIMESTAMP_STEP_S: f64 = 0.02;

/// The model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot load the Whisper model from {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("Whisper inference failed: {0}")]
    Inference(String),
}

fn inference(err: impl std::fmt::Display) -> EngineError {
    EngineError::Inference(err.to_string())
}

/// A language as Whisper detected it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetectedLanguage {
    /// ISO 639-1 code, e.g. `en`.
    pub code: String,
    pub probability: f64,
}

/// A piece of transcript with times relative to the start of its window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSegment {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// A loaded Whisper model.
pub struct WhisperEngine {
    model: sys::Whisper,
    tokenizer: hf::Tokenizer,
    mel_filters: Array2<f64>,
    name: String,
    beam_size: usize,
}

impl WhisperEngine {
    /// Loads the CTranslate2 model in `dir` (model.bin, config.json, tokenizer.json), int8 on CPU.
    pub fn load(dir: &Path, threads: usize, beam_size: usize) -> Result<Self, EngineError> {
        let load_error = |reason: String| EngineError::Load {
            path: dir.to_owned(),
            reason,
        };
        if !dir.join("model.bin").is_file() {
            return Err(load_error(
                "model.bin not found (run `make models`, or set WHISPER_MODEL)".to_owned(),
            ));
        }
        let config = Config {
            device: Device::CPU,
            compute_type: ComputeType::INT8,
            num_threads_per_replica: threads,
            ..Default::default()
        };
        let model = sys::Whisper::new(dir, config).map_err(|err| load_error(err.to_string()))?;
        let tokenizer = hf::Tokenizer::new(dir).map_err(|err| load_error(err.to_string()))?;
        // Same filters as Whisper's feature extractor (slaney scale and norm), as ct2rs computes
        // them when preprocessor_config.json carries none.
        let mel_filters = mel(SAMPLE_RATE as f64, N_FFT, N_MELS, None, None, false, true);
        let name = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "whisper".to_owned());
        Ok(Self {
            model,
            tokenizer,
            mel_filters,
            name,
            beam_size,
        })
    }

    /// The model folder's name, e.g. `whisper-base`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_multilingual(&self) -> bool {
        self.model.is_multilingual()
    }

    /// Log-mel features of one window (zero-padded to 30 s): 80 × 3000 values, row-major.
    fn window_features(&self, samples: &[f32]) -> Vec<f32> {
        let mut features = vec![0f32; N_MELS * N_FRAMES];
        let mut stft = Spectrogram::new(N_FFT, HOP_LENGTH);
        let mut padded = samples.to_vec();
        padded.resize(WINDOW_SAMPLES, 0.0);
        for (frame_index, frame) in padded.chunks(HOP_LENGTH).enumerate().take(N_FRAMES) {
            if let Some(fft) = stft.add(frame) {
                let mel = norm_mel(&log_mel_spectrogram(&fft, &self.mel_filters));
                for mel_index in 0..N_MELS {
                    features[mel_index * N_FRAMES + frame_index] = mel[[mel_index, 0]] as f32;
                }
            }
        }
        features
    }

    /// Transcribes a batch of windows (each at most 30 s) with one encoder pass. With `language`
    /// unknown on a multilingual model, it is detected from the first window of the batch.
    /// Returns the language used and, per window, its segments.
    pub fn transcribe_batch(
        &self,
        windows: &[&[f32]],
        language: Option<&str>,
    ) -> Result<(Option<DetectedLanguage>, Vec<Vec<WindowSegment>>), EngineError> {
        if windows.is_empty() {
            return Ok((None, Vec::new()));
        }
        let mut features = Vec::with_capacity(windows.len() * N_MELS * N_FRAMES);
        for window in windows {
            features.extend(self.window_features(window));
        }
        let shape = [windows.len(), N_MELS, N_FRAMES];
        let features = StorageView::new(&shape, &mut features, Device::CPU).map_err(inference)?;
        let encoded = self.model.encode(&features, false).map_err(inference)?;

        let detected = match (language, self.is_multilingual()) {
            (_, false) => None,
            (Some(code), true) => Some(DetectedLanguage {
                code: code.to_owned(),
                probability: 1.0,
            }),
            (None, true) => {
                let results = self.model.detect_language(&encoded).map_err(inference)?;
                Some(best_language(&results, LANGUAGE_WINDOWS)?)
            }
        };

        let language_token = detected.as_ref().map(|d| format!("<|{}|>", d.code));
        let prompt: Vec<&str> = match &language_token {
            Some(token) => vec!["<|startoftranscript|>", token, "<|transcribe|>"],
            // English-only models were trained without language and task tokens.
            None => vec!["<|startoftranscript|>"],
        };
        let options = WhisperOptions {
            beam_size: self.beam_size,
            ..Default::default()
        };
        let results = self
            .model
            .generate(&encoded, &vec![prompt; windows.len()], &options)
            .map_err(inference)?;
        let mut per_window = Vec::with_capacity(windows.len());
        for (result, window) in results.into_iter().zip(windows) {
            let tokens = result.sequences.into_iter().next().unwrap_or_default();
            let window_s = window.len() as f64 / SAMPLE_RATE as f64;
            per_window.push(self.segments_of(&tokens, window_s)?);
        }
        Ok((detected, per_window))
    }

    /// Splits generated tokens into segments at Whisper's timestamp tokens (`<|1.24|>`).
    fn segments_of(
        &self,
        tokens: &[String],
        window_s: f64,
    ) -> Result<Vec<WindowSegment>, EngineError> {
        let mut segments: Vec<WindowSegment> = Vec::new();
        let mut start = None;
        let mut text_tokens: Vec<String> = Vec::new();
        for token in tokens {
            if let Some(time) = timestamp_of(token) {
                match start {
                    None => start = Some(time.min(window_s)),
                    Some(segment_start) => {
                        self.push_segment(
                            &mut segments,
                            segment_start,
                            time,
                            &mut text_tokens,
                            window_s,
                        )?;
                        start = None;
                    }
                }
            } else if !is_special(token) {
                if start.is_none() {
                    // Text before any timestamp: it starts where the last segment ended.
                    start = Some(segments.last().map_or(0.0, |s| s.end));
                }
                text_tokens.push(token.clone());
            }
        }
        if let Some(segment_start) = start {
            // The window ended inside a segment.
            self.push_segment(
                &mut segments,
                segment_start,
                window_s,
                &mut text_tokens,
                window_s,
            )?;
        }
        Ok(segments)
    }

    /// Decodes `text_tokens` (emptying it) into a segment from `start` to `end`, if it has text.
    fn push_segment(
        &self,
        segments: &mut Vec<WindowSegment>,
        start: f64,
        end: f64,
        text_tokens: &mut Vec<String>,
        window_s: f64,
    ) -> Result<(), EngineError> {
        if text_tokens.is_empty() {
            return Ok(());
        }
        let text = self
            .tokenizer
            .decode(std::mem::take(text_tokens))
            .map_err(inference)?;
        let text = text.trim();
        if !text.is_empty() {
            segments.push(WindowSegment {
                start,
                end: end.clamp(start, window_s.max(start)),
                text: text.to_owned(),
            });
        }
        Ok(())
    }
}

fn is_special(token: &str) -> bool {
    token.starts_with("<|") && token.ends_with("|>")
}

fn timestamp_of(token: &str) -> Option<f64> {
    let inner = token.strip_prefix("<|")?.strip_suffix("|>")?;
    if !inner.contains('.') {
        return None;
    }
    let value: f64 = inner.parse().ok()?;
    // Guard against rounding: timestamps are multiples of 20 ms.
    Some((value / TIMESTAMP_STEP_S).round() * TIMESTAMP_STEP_S)
}

/// Windows (of at most 30 s of speech each) whose language probabilities are averaged: the
/// first minute of speech.
const LANGUAGE_WINDOWS: usize = 2;

/// The language with the highest mean probability over the first `windows` windows.
fn best_language(
    results: &[Vec<sys::DetectionResult>],
    windows: usize,
) -> Result<DetectedLanguage, EngineError> {
    let mut totals: Vec<(String, f64)> = Vec::new();
    let counted = results.len().min(windows).max(1);
    for per_window in results.iter().take(windows) {
        for result in per_window {
            let detected = parse_detection(&format!("{result:?}")).ok_or_else(|| {
                inference(format!("unexpected language detection result {result:?}"))
            })?;
            match totals.iter_mut().find(|(code, _)| *code == detected.code) {
                Some((_, total)) => *total += detected.probability,
                None => totals.push((detected.code, detected.probability)),
            }
        }
    }
    totals
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(code, total)| DetectedLanguage {
            code,
            probability: total / counted as f64,
        })
        .ok_or_else(|| inference("no language detected"))
}

/// ct2rs 0.10.3 keeps the fields of `sys::DetectionResult` private and offers no accessor; its
/// derived `Debug` output, `DetectionResult { language: "<|en|>", probability: 0.96 }`, is the
/// only way to read them without patching the crate.
fn parse_detection(debug: &str) -> Option<DetectedLanguage> {
    let after_language = debug.split("language: \"").nth(1)?;
    let token = after_language.split('"').next()?;
    let code = token
        .trim_start_matches("<|")
        .trim_end_matches("|>")
        .to_owned();
    let probability = debug
        .split("probability: ")
        .nth(1)?
        .trim_end_matches([' ', '}'])
        .parse()
        .ok()?;
    (!code.is_empty()).then_some(DetectedLanguage { code, probability })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_debug_output_parses() {
        let detected =
            parse_detection(r#"DetectionResult { language: "<|en|>", probability: 0.9612 }"#)
                .expect("parses");
        assert_eq!(detected.code, "en");
        assert!((detected.probability - 0.9612).abs() < 1e-9);
        assert_eq!(parse_detection("garbage"), None);
    }

    #[test]
    fn timestamp_tokens_are_recognised() {
        assert_eq!(timestamp_of("<|1.24|>"), Some(1.24));
        assert_eq!(timestamp_of("<|en|>"), None);
        assert_eq!(timestamp_of("Hello"), None);
    }
}
