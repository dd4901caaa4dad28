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

/// Whisper's input rate; the decoder writes the PCM at this rate.
const SAMPLE_RATE: usize = proto_msgs::pcm::SAMPLE_RATE as usize;
/// Whisper's fixed window: 30 s.
pub const WINDOW_SAMPLES: usize = 30 * SAMPLE_RATE;
const N_FFT: usize = 400;
const HOP_LENGTH: usize = 160;
const N_MELS: usize = 80;
const N_FRAMES: usize = WINDOW_SAMPLES / HOP_LENGTH;
/// Seconds per timestamp token step.
const TIMESTAMP_STEP_S: f64 = 0.02;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "cannot load the Whisper model from {path}: model.bin not found (run `make models`, or set WHISPER_MODEL)"
    )]
    ModelMissing { path: PathBuf },
    #[error("cannot load the Whisper model from {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    #[error("Whisper inference failed: {step}")]
    Inference {
        step: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("the tokenizer has no {0}")]
    MissingToken(String),
    #[error("no language detected")]
    NoLanguage,
}

/// Wraps an error loading the model in `dir`.
fn load_error<E: Into<BoxError>>(dir: &Path) -> impl FnOnce(E) -> EngineError {
    let path = dir.to_owned();
    move |source| EngineError::Load {
        path,
        source: source.into(),
    }
}

/// Wraps an error of `step` of the inference.
fn inference<E: Into<BoxError>>(step: &'static str) -> impl FnOnce(E) -> EngineError {
    move |source| EngineError::Inference {
        step,
        source: source.into(),
    }
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
    /// The segment's words with their times, when word timestamps were asked for.
    pub words: Option<Vec<WindowWord>>,
}

/// One word, timed by aligning the decoder's cross-attention with the audio (dynamic time
/// warping over the alignment heads, as faster-whisper and openai-whisper do).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowWord {
    pub start: f64,
    pub end: f64,
    pub word: String,
    /// Mean probability of the word's tokens.
    pub probability: f64,
}

/// A segment as read from the generated tokens: its times and the range of its text tokens.
#[derive(Debug, Clone, PartialEq)]
struct TokenSpan {
    start: f64,
    end: f64,
    text_tokens: std::ops::Range<usize>,
}

/// The text tokens (timestamps and other special tokens left out) of one window and how they
/// form segments.
#[derive(Debug, Default)]
struct ParsedWindow {
    token_ids: Vec<usize>,
    tokens: Vec<String>,
    spans: Vec<TokenSpan>,
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
        if !dir.join("model.bin").is_file() {
            return Err(EngineError::ModelMissing {
                path: dir.to_owned(),
            });
        }
        let config = Config {
            device: Device::CPU,
            compute_type: ComputeType::INT8,
            num_threads_per_replica: threads,
            ..Default::default()
        };
        let model = sys::Whisper::new(dir, config).map_err(load_error(dir))?;
        let tokenizer = hf::Tokenizer::new(dir).map_err(load_error(dir))?;
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
    /// unknown on a multilingual model, it is detected from the first windows of the batch.
    /// Returns the language used and, per window, its segments (with their words when
    /// `word_timestamps` is set: one more pass over the same encoder output).
    pub fn transcribe_batch(
        &self,
        windows: &[&[f32]],
        language: Option<&str>,
        word_timestamps: bool,
    ) -> Result<(Option<DetectedLanguage>, Vec<Vec<WindowSegment>>), EngineError> {
        if windows.is_empty() {
            return Ok((None, Vec::new()));
        }
        let encoded = self.encode(windows)?;
        let detected = self.language_of(&encoded, language)?;
        let language_token = detected.as_ref().map(|d| format!("<|{}|>", d.code));
        let prompt: Vec<&str> = match &language_token {
            Some(token) => vec!["<|startoftranscript|>", token, "<|transcribe|>"],
            // English-only models were trained without language and task tokens.
            None => vec!["<|startoftranscript|>"],
        };
        let parsed = self.generate(&encoded, &prompt, windows)?;
        let word_times = if word_timestamps {
            Some(self.align_words(&encoded, &prompt, &parsed, windows)?)
        } else {
            None
        };
        let no_space = detected
            .as_ref()
            .is_some_and(|d| WITHOUT_SPACES.contains(&d.code.as_str()));
        let mut per_window = Vec::with_capacity(windows.len());
        for (index, window) in parsed.iter().enumerate() {
            let alignment = word_times.as_ref().map(|all| &all[index]);
            per_window.push(self.segments_of(window, alignment, no_space)?);
        }
        Ok((detected, per_window))
    }

    /// The encoder output of a batch of windows.
    fn encode(&self, windows: &[&[f32]]) -> Result<StorageView<'_>, EngineError> {
        let mut features = Vec::with_capacity(windows.len() * N_MELS * N_FRAMES);
        for window in windows {
            features.extend(self.window_features(window));
        }
        let shape = [windows.len(), N_MELS, N_FRAMES];
        let features = StorageView::new(&shape, &mut features, Device::CPU)
            .map_err(inference("preparing the features"))?;
        self.model
            .encode(&features, false)
            .map_err(inference("encoding"))
    }

    /// The language to decode in: the one given, or the one detected from the encoder output
    /// (none for an English-only model).
    fn language_of(
        &self,
        encoded: &StorageView,
        language: Option<&str>,
    ) -> Result<Option<DetectedLanguage>, EngineError> {
        match (language, self.is_multilingual()) {
            (_, false) => Ok(None),
            (Some(code), true) => Ok(Some(DetectedLanguage {
                code: code.to_owned(),
                probability: 1.0,
            })),
            (None, true) => {
                let results = self
                    .model
                    .detect_language(encoded)
                    .map_err(inference("detecting the language"))?;
                best_language(&results, LANGUAGE_WINDOWS).map(Some)
            }
        }
    }

    /// Decodes every window after `prompt`; returns each window's text tokens and segments.
    fn generate(
        &self,
        encoded: &StorageView,
        prompt: &[&str],
        windows: &[&[f32]],
    ) -> Result<Vec<ParsedWindow>, EngineError> {
        let options = WhisperOptions {
            beam_size: self.beam_size,
            ..Default::default()
        };
        let results = self
            .model
            .generate(encoded, &vec![prompt.to_vec(); windows.len()], &options)
            .map_err(inference("decoding"))?;
        Ok(results
            .into_iter()
            .zip(windows)
            .map(|(result, window)| {
                let tokens = result.sequences.into_iter().next().unwrap_or_default();
                let ids = result.sequences_ids.into_iter().next().unwrap_or_default();
                parse_window(&tokens, &ids, window.len() as f64 / SAMPLE_RATE as f64)
            })
            .collect())
    }

    fn token_id(&self, token: &str) -> Result<usize, EngineError> {
        self.tokenizer
            .token_to_id(token)
            .map(|id| id as usize)
            .ok_or_else(|| EngineError::MissingToken(token.to_owned()))
    }

    /// Aligns each window's text tokens with its audio. Returns, per window, the time at which
    /// each text token starts (plus the end-of-text token) and each text token's probability.
    fn align_words(
        &self,
        encoded: &StorageView,
        prompt: &[&str],
        parsed: &[ParsedWindow],
        windows: &[&[f32]],
    ) -> Result<Vec<TokenTimes>, EngineError> {
        let prompt_ids = prompt
            .iter()
            .map(|token| self.token_id(token))
            .collect::<Result<Vec<_>, _>>()?;
        let end_of_text = self.token_id("<|endoftext|>")?;
        // The whole batch goes in one call; a window without text gets a placeholder whose
        // alignment is thrown away.
        let text_tokens: Vec<Vec<usize>> = parsed
            .iter()
            .map(|window| {
                if window.token_ids.is_empty() {
                    vec![end_of_text]
                } else {
                    window.token_ids.clone()
                }
            })
            .collect();
        let num_frames: Vec<usize> = windows
            .iter()
            .map(|window| window.len().div_ceil(HOP_LENGTH).clamp(2, N_FRAMES))
            .collect();
        let alignments = self
            .model
            .align(
                encoded,
                &prompt_ids,
                &text_tokens,
                &num_frames,
                MEDIAN_FILTER_WIDTH,
            )
            .map_err(inference("aligning words"))?;
        Ok(alignments
            .iter()
            .zip(parsed)
            .map(|(alignment, window)| {
                let pairs: Vec<(i64, i64)> = alignment
                    .alignments
                    .iter()
                    .map(|step| (step.token_x, step.frame_x))
                    .collect();
                TokenTimes {
                    starts: token_start_times(&pairs, window.token_ids.len() + 1),
                    probabilities: alignment.text_token_probs.clone(),
                }
            })
            .collect())
    }

    /// Builds a window's segments from its parsed tokens, with words when `alignment` is given.
    fn segments_of(
        &self,
        window: &ParsedWindow,
        alignment: Option<&TokenTimes>,
        no_space: bool,
    ) -> Result<Vec<WindowSegment>, EngineError> {
        let mut segments = Vec::with_capacity(window.spans.len());
        for span in &window.spans {
            let text = self
                .tokenizer
                .decode(window.tokens[span.text_tokens.clone()].to_vec())
                .map_err(inference("decoding tokens"))?;
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let words = match alignment {
                Some(times) => Some(self.words_of(window, span, times, no_space)?),
                None => None,
            };
            segments.push(WindowSegment {
                start: span.start,
                end: span.end,
                text: text.to_owned(),
                words,
            });
        }
        Ok(segments)
    }

    /// The words of one segment, timed from the alignment and kept inside the segment.
    fn words_of(
        &self,
        window: &ParsedWindow,
        span: &TokenSpan,
        times: &TokenTimes,
        no_space: bool,
    ) -> Result<Vec<WindowWord>, EngineError> {
        let mut words: Vec<WindowWord> = Vec::new();
        // A character can take several byte-level tokens: a piece that decodes to part of one
        // (U+FFFD) is joined with the next.
        let mut partial: Option<usize> = None;
        for range in word_ranges(&window.tokens, span.text_tokens.clone(), no_space) {
            let range = partial.take().unwrap_or(range.start)..range.end;
            let word = self
                .tokenizer
                .decode(window.tokens[range.clone()].to_vec())
                .map_err(inference("decoding tokens"))?;
            if word.contains('\u{FFFD}') && range.end < span.text_tokens.end {
                partial = Some(range.start);
                continue;
            }
            let word = word.trim();
            if word.is_empty() {
                continue;
            }
            if let Some(previous) = words.last_mut().filter(|_| is_written_only(word)) {
                // Punctuation pieces (`。`, `、`) are written, not spoken.
                previous.word.push_str(word);
                continue;
            }
            let at = |index: usize| times.starts.get(index).copied().unwrap_or(span.end);
            let probabilities = times
                .probabilities
                .get(range.clone())
                .filter(|p| !p.is_empty());
            // Trailing punctuation is written, not spoken: the word ends where it begins.
            let spoken_end = (range.start + 1..range.end)
                .find(|&index| is_punctuation(&window.tokens[index]))
                .unwrap_or(range.end);
            words.push(WindowWord {
                start: at(range.start),
                end: at(spoken_end),
                word: word.to_owned(),
                probability: probabilities
                    .map_or(0.0, |p| f64::from(p.iter().sum::<f32>()) / p.len() as f64),
            });
        }
        fit_words(&mut words, span.start, span.end);
        Ok(words)
    }
}

/// Median filter width of the alignment, as faster-whisper and openai-whisper use.
const MEDIAN_FILTER_WIDTH: i64 = 7;

/// Languages written without spaces between words: a word is each piece that decodes to whole
/// characters.
const WITHOUT_SPACES: &[&str] = &["zh", "ja", "th", "lo", "my", "yue"];

/// What the alignment says about a window's text tokens.
#[derive(Debug, Clone, Default)]
struct TokenTimes {
    /// Start time (s, within the window) of each text token and of the end-of-text token.
    starts: Vec<f64>,
    probabilities: Vec<f32>,
}

/// Reads the generated tokens of one window: text tokens, and segments at Whisper's timestamp
/// tokens (`<|1.24|>`). `ids` are the same tokens as numbers.
fn parse_window(tokens: &[String], ids: &[usize], window_s: f64) -> ParsedWindow {
    let mut parsed = ParsedWindow::default();
    let mut start: Option<f64> = None;
    let mut first_text = 0;
    let close = |parsed: &mut ParsedWindow, start: f64, end: f64, first_text: usize| {
        let text_tokens = first_text..parsed.tokens.len();
        if !text_tokens.is_empty() {
            parsed.spans.push(TokenSpan {
                start,
                end: end.clamp(start, window_s.max(start)),
                text_tokens,
            });
        }
    };
    for (index, token) in tokens.iter().enumerate() {
        if let Some(time) = timestamp_of(token) {
            match start {
                None => {
                    start = Some(time.min(window_s));
                    first_text = parsed.tokens.len();
                }
                Some(segment_start) => {
                    close(&mut parsed, segment_start, time, first_text);
                    start = None;
                }
            }
        } else if !is_special(token) {
            if start.is_none() {
                // Text before any timestamp: it starts where the last segment ended.
                start = Some(parsed.spans.last().map_or(0.0, |s| s.end));
                first_text = parsed.tokens.len();
            }
            parsed.tokens.push(token.clone());
            parsed
                .token_ids
                .push(ids.get(index).copied().unwrap_or_default());
        }
    }
    if let Some(segment_start) = start {
        // The window ended inside a segment.
        close(&mut parsed, segment_start, window_s, first_text);
    }
    parsed
}

/// The start time of each of `count` tokens from the alignment path (token index, encoder
/// frame): the frame where the path first reaches the token. Frames are 20 ms.
fn token_start_times(path: &[(i64, i64)], count: usize) -> Vec<f64> {
    let mut starts: Vec<Option<f64>> = vec![None; count];
    let mut previous_token = None;
    for &(token, frame) in path {
        if previous_token != Some(token) {
            if let Some(slot) = usize::try_from(token)
                .ok()
                .and_then(|token| starts.get_mut(token))
            {
                slot.get_or_insert(frame as f64 * TIMESTAMP_STEP_S);
            }
            previous_token = Some(token);
        }
    }
    // A token the path skipped starts where the one before it did; times never go back.
    let mut last = 0.0f64;
    starts
        .into_iter()
        .map(|start| {
            last = start.unwrap_or(last).max(last);
            last
        })
        .collect()
}

/// Groups a segment's text tokens into words: a token beginning with a space (`Ġ` in Whisper's
/// byte-level vocabulary) starts a word; punctuation stays with the word before it. Without
/// spaces (Chinese, Japanese, ...), every token is a word of its own.
fn word_ranges(
    tokens: &[String],
    span: std::ops::Range<usize>,
    no_space: bool,
) -> Vec<std::ops::Range<usize>> {
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for index in span {
        let token = &tokens[index];
        let starts_word = (no_space && !is_punctuation(token))
            || token.starts_with('Ġ')
            || token.starts_with(' ');
        match ranges.last_mut() {
            Some(current) if !starts_word => current.end = index + 1,
            _ => ranges.push(index..index + 1),
        }
    }
    ranges
}

/// A token made of punctuation only (`,`, `.`, `?!`), which is attached to the word before it.
fn is_punctuation(token: &str) -> bool {
    !token.is_empty() && token.chars().all(|c| c.is_ascii_punctuation())
}

/// Text made of punctuation only, ASCII or CJK.
fn is_written_only(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_punctuation() || "。、，．！？：；「」『』（）・…".contains(c))
}

/// Keeps words in order and inside their segment, and shortens implausibly long words (the
/// alignment stretches a word over a pause) to twice the median word length: the first word of
/// a segment loses its start (the pause is before it), the others their end.
fn fit_words(words: &mut [WindowWord], segment_start: f64, segment_end: f64) {
    let mut durations: Vec<f64> = words
        .iter()
        .map(|w| w.end - w.start)
        .filter(|d| *d > 0.0)
        .collect();
    durations.sort_by(f64::total_cmp);
    let longest = durations
        .get(durations.len() / 2)
        .map(|median| 2.0 * median.min(0.7));
    let mut floor = segment_start;
    for (index, word) in words.iter_mut().enumerate() {
        if let Some(longest) = longest
            && word.end - word.start > longest
        {
            if index == 0 {
                word.start = word.end - longest;
            } else {
                word.end = word.start + longest;
            }
        }
        word.start = word.start.clamp(floor, segment_end);
        word.end = word.end.clamp(word.start, segment_end);
        floor = word.end;
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
    for result in results.iter().take(windows).flatten() {
        let code = language_code(&result.language);
        let probability = f64::from(result.probability);
        match totals.iter_mut().find(|(known, _)| *known == code) {
            Some((_, total)) => *total += probability,
            None => totals.push((code.to_owned(), probability)),
        }
    }
    totals
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(code, total)| DetectedLanguage {
            code,
            probability: total / counted as f64,
        })
        .ok_or(EngineError::NoLanguage)
}

/// `en` from Whisper's language token `<|en|>`.
fn language_code(token: &str) -> &str {
    token.trim_start_matches("<|").trim_end_matches("|>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_is_the_best_on_average_over_the_first_windows() {
        let detection = |language: &str, probability| sys::DetectionResult {
            language: language.to_owned(),
            probability,
        };
        let results = vec![
            vec![detection("<|de|>", 0.5), detection("<|nl|>", 0.4)],
            vec![detection("<|nl|>", 0.9), detection("<|de|>", 0.1)],
            // Past the first two windows: not counted.
            vec![detection("<|de|>", 1.0)],
        ];
        let best = best_language(&results, 2).expect("a language");
        assert_eq!(best.code, "nl");
        assert!((best.probability - 0.65).abs() < 1e-6, "{best:?}");
        assert!(matches!(
            best_language(&[], 2),
            Err(EngineError::NoLanguage)
        ));
        assert_eq!(language_code("<|yue|>"), "yue");
    }

    fn strings(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn generated_tokens_split_into_segments_at_timestamps() {
        let tokens = strings(&[
            "<|0.00|>",
            "ĠHello",
            "Ġworld",
            "<|1.50|>",
            "<|2.00|>",
            "ĠBye",
            "<|endoftext|>",
        ]);
        let ids: Vec<usize> = (0..tokens.len()).collect();
        let parsed = parse_window(&tokens, &ids, 10.0);
        assert_eq!(parsed.tokens, strings(&["ĠHello", "Ġworld", "ĠBye"]));
        assert_eq!(parsed.token_ids, vec![1, 2, 5]);
        assert_eq!(
            parsed.spans,
            vec![
                TokenSpan {
                    start: 0.0,
                    end: 1.5,
                    text_tokens: 0..2
                },
                // No closing timestamp: the segment runs to the end of the window.
                TokenSpan {
                    start: 2.0,
                    end: 10.0,
                    text_tokens: 2..3
                },
            ]
        );
    }

    #[test]
    fn token_start_is_where_the_alignment_path_first_reaches_it() {
        let path = [(0, 5), (0, 6), (1, 7), (1, 9), (3, 20), (4, 30)];
        let starts = token_start_times(&path, 5);
        // Token 2 was skipped by the path: it starts with token 1.
        assert_eq!(starts, vec![0.1, 0.14, 0.14, 0.4, 0.6]);
    }

    #[test]
    fn words_start_at_a_space_and_keep_their_punctuation() {
        let tokens = strings(&["ĠAsk", "Ġnot", ",", "Ġcoun", "try", "."]);
        assert_eq!(word_ranges(&tokens, 0..6, false), vec![0..1, 1..3, 3..6]);
        assert_eq!(word_ranges(&tokens, 3..6, true), vec![3..4, 4..6]);
        assert!(is_punctuation(",") && is_punctuation("?!"));
        assert!(!is_punctuation("Ġnot") && !is_punctuation("Ġ,"));
        assert!(is_written_only("。") && is_written_only("?!") && !is_written_only("ある"));
    }

    #[test]
    fn words_stay_inside_their_segment_and_long_ones_are_cut() {
        let word = |start, end| WindowWord {
            start,
            end,
            word: "w".into(),
            probability: 1.0,
        };
        let mut words = vec![
            word(0.0, 3.0),
            word(3.0, 3.3),
            word(3.3, 3.6),
            word(3.6, 9.0),
            word(9.0, 12.0),
        ];
        fit_words(&mut words, 1.0, 10.0);
        let times: Vec<(f64, f64)> = words
            .iter()
            .map(|w| {
                (
                    (w.start * 100.0).round() / 100.0,
                    (w.end * 100.0).round() / 100.0,
                )
            })
            .collect();
        // Median 3.0 s is capped at 0.7 s: words are at most 1.4 s long.
        assert_eq!(
            times,
            vec![(1.6, 3.0), (3.0, 3.3), (3.3, 3.6), (3.6, 5.0), (9.0, 10.0)]
        );
    }

    #[test]
    fn timestamp_tokens_are_recognised() {
        assert_eq!(timestamp_of("<|1.24|>"), Some(1.24));
        assert_eq!(timestamp_of("<|en|>"), None);
        assert_eq!(timestamp_of("Hello"), None);
    }
}
