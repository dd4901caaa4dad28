//! Whisper on CTranslate2 through `ct2rs::sys`: each batch of 30 s windows is encoded once, and
//! that one encoder output serves language detection and decoding (ct2rs's `Whisper::generate`
//! encodes twice when the language is unknown). Blocking: call from a blocking thread.

use std::path::{Path, PathBuf};

use ct2rs::Tokenizer as _;
use ct2rs::sys::{self, ComputeType, Config, Device, StorageView, WhisperOptions};
use ct2rs::tokenizers::hf;

use crate::decoding::{DecodeScore, DecodingOptions, avg_logprob, compression_ratio};
pub use crate::features::WINDOW_SAMPLES;
use crate::features::{FeatureExtractor, HOP_LENGTH, N_FRAMES, N_MELS, SAMPLE_RATE};
use proto_msgs::{DecodingRequest, Task};
use tracing::debug;
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
    #[error("task: the English-only model {0} cannot translate; choose a multilingual model")]
    CannotTranslate(String),
    #[error("{0}")]
    BadRequest(String),
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
    /// How the decoding of its window went.
    pub score: DecodeScore,
    /// The ids of its text tokens.
    pub tokens: Vec<u32>,
}

/// What a batch is to be transcribed with.
#[derive(Debug, Clone, Copy)]
pub struct BatchRequest<'a> {
    /// The language to decode in; detected when `None` on a multilingual model.
    pub language: Option<&'a str>,
    /// Time every word (one more pass over the encoder output).
    pub word_timestamps: bool,
    /// The text before the batch, as tokens (the previous batch's `next_prompt`).
    pub previous: &'a [String],
    pub job: &'a JobDecoding,
    /// The windows follow one another in the media: a window's rest is then decoded together
    /// with the start of the next window of the batch (not across batches, nor when the windows
    /// are decoded one at a time to condition each on the text before it).
    pub consecutive: bool,
}

/// How one job's windows are decoded: the deployment's options with the job's changes, its
/// task and the tokens of its hotwords.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDecoding {
    pub options: DecodingOptions,
    pub task: Task,
    /// In the prompt of every window.
    pub hotwords: Vec<String>,
    /// The text taken as said before the speech (the job's `prompt`), as tokens: the first
    /// batch's previous text.
    pub initial_prompt: Vec<String>,
}

/// What a batch gave.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchTranscript {
    /// The language it was decoded in (none for an English-only model).
    pub language: Option<DetectedLanguage>,
    /// Per window, its segments.
    pub windows: Vec<Vec<WindowSegment>>,
    /// The prompt of the next window (`condition_on_previous_text`): the text so far, as
    /// tokens. Not checkpointed: an attempt that resumes starts without it.
    pub next_prompt: Vec<String>,
}

/// One window's decoding kept: its tokens read into segments, the tokens as generated
/// (timestamps included: the next window's prompt) and its score.
#[derive(Debug, Clone)]
struct DecodedWindow {
    parsed: ParsedWindow,
    sequence: Vec<String>,
    score: DecodeScore,
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
    /// The ids of its tokens (those of the punctuation written after it too).
    pub tokens: Vec<u32>,
}

/// The audio of a window from where Whisper stopped early (`at`, s) on.
struct Rest<'a> {
    window: usize,
    at: f64,
    audio: &'a [f32],
    /// Decoded right after the rest before it, without a gap: the start of the next window,
    /// up to the end of its first segment.
    joined: bool,
}

impl Rest<'_> {
    /// Whether a window's own segment starting at `start` (s) is decoded again in this rest:
    /// after a rest's start, or before a joined head's end (the head ends on the whole sample
    /// at or before its segment's end, and the next segment starts at or after that end).
    fn covers(&self, start: f64) -> bool {
        if self.joined {
            start < self.at + self.audio.len() as f64 / SAMPLE_RATE as f64
        } else {
            start >= self.at
        }
    }

    /// Whether the window's own segment starting at `start` gives way to this rest's decoding,
    /// which `heard` something or not. The unfinished text after a window's last boundary always
    /// does; a head's complete segment only for words heard in it (a joined decoding dropped as
    /// silence, for one, must not take a good segment with it).
    fn replaces(&self, start: f64, heard: bool) -> bool {
        self.covers(start) && (heard || !self.joined)
    }
}

/// How much of the next window to decode with a rest: up to the end (s) of that window's first
/// segment, when the two fit in one window. A window cut by the 30 s limit ends mid-phrase and
/// the next one starts in it; decoded together from the boundary before the cut to the boundary
/// after it, the phrase is heard whole (faster-whisper's sequential windows start at the
/// boundary). Not when that segment reaches the end of the window's audio (Whisper's times are
/// clamped there, so later segments would start inside the head) or passes the window's own
/// rest (`next_resume_at`), nor for a segment of no length.
fn head_end(
    first_segment_end: Option<f64>,
    next_resume_at: Option<f64>,
    rest_s: f64,
    window_s: f64,
) -> Option<f64> {
    let end = first_segment_end?;
    let window_limit = WINDOW_SAMPLES as f64 / SAMPLE_RATE as f64;
    let before_rest = next_resume_at.is_none_or(|at| end <= at);
    (end > 0.0 && end < window_s && before_rest && rest_s + end <= window_limit).then_some(end)
}

/// The audio of a window from `at` (s) on, when there is a rest worth decoding: `at` at least
/// [`MIN_TAIL_S`] into the window and that much audio after it. Whisper's timestamps may point
/// past the audio (over the silence that pads a short window): no rest then.
fn rest_of(window: &[f32], at: f64) -> Option<&[f32]> {
    let start = (at.max(0.0) * SAMPLE_RATE as f64) as usize;
    let audio = window.get(start..)?;
    let long_enough = audio.len() as f64 >= MIN_TAIL_S * SAMPLE_RATE as f64;
    (at >= MIN_TAIL_S && long_enough).then_some(audio)
}

/// The rests of a batch's windows to decode again (from each window's `resume_at`), each
/// followed by the head of the next window when the windows are `consecutive` (up to that
/// window's `first_end`, see [`head_end`]).
fn rests_of<'a>(
    windows: &[&'a [f32]],
    resume_at: &[Option<f64>],
    first_end: &[Option<f64>],
    consecutive: bool,
) -> Vec<Rest<'a>> {
    let seconds = |audio: &[f32]| audio.len() as f64 / SAMPLE_RATE as f64;
    let mut rests: Vec<Rest> = Vec::new();
    for (window, &samples) in windows.iter().enumerate() {
        let Some((at, audio)) = resume_at[window].and_then(|at| Some((at, rest_of(samples, at)?)))
        else {
            continue;
        };
        rests.push(Rest {
            window,
            at,
            audio,
            joined: false,
        });
        let next = window + 1;
        if !consecutive || next >= windows.len() {
            continue;
        }
        let (next_audio, rest_s) = (windows[next], seconds(audio));
        if let Some(end) = head_end(
            first_end[next],
            resume_at[next],
            rest_s,
            seconds(next_audio),
        ) {
            let samples = ((end * SAMPLE_RATE as f64) as usize).min(next_audio.len());
            rests.push(Rest {
                window: next,
                at: 0.0,
                audio: &next_audio[..samples],
                joined: true,
            });
        }
    }
    rests
}

/// Silence between rests packed into one window: long enough that Whisper ends a segment there.
const REST_GAP_SAMPLES: usize = 2 * SAMPLE_RATE;

/// A window of packed rests: its audio and, per rest in it, the rest's index and where it
/// starts (s).
type PackedRests = (Vec<f32>, Vec<(usize, f64)>);

/// Rests one after another, two seconds of silence between them (none before a joined one), in
/// windows of 30 s at most; a rest and the rests joined to it share a window.
fn pack_rests(rests: &[Rest]) -> Vec<PackedRests> {
    let mut packed: Vec<PackedRests> = Vec::new();
    let mut index = 0;
    while index < rests.len() {
        let joined = rests[index + 1..]
            .iter()
            .take_while(|rest| rest.joined)
            .count();
        let group = &rests[index..=index + joined];
        let len: usize = group.iter().map(|rest| rest.audio.len()).sum();
        let fits = packed
            .last()
            .is_some_and(|(samples, _)| samples.len() + REST_GAP_SAMPLES + len <= WINDOW_SAMPLES);
        if !fits {
            packed.push((Vec::with_capacity(WINDOW_SAMPLES.max(len)), Vec::new()));
        }
        if let Some((samples, placed)) = packed.last_mut() {
            if !samples.is_empty() {
                samples.extend(std::iter::repeat_n(0.0, REST_GAP_SAMPLES));
            }
            for (offset, rest) in group.iter().enumerate() {
                placed.push((index + offset, samples.len() as f64 / SAMPLE_RATE as f64));
                samples.extend_from_slice(rest.audio);
            }
        }
        index += group.len();
    }
    packed
}

/// Which of the `placed` rests (index into `placed`) holds the time `at` (s).
fn piece_at(placed: &[(usize, f64)], at: f64) -> usize {
    placed
        .iter()
        .rposition(|(_, offset)| *offset <= at)
        .unwrap_or(0)
}

/// A segment of packed rests, split where its words cross from one rest to the next (Whisper
/// may join the end of one rest and the start of the next in one segment), each part with the
/// index (into `placed`) of its rest.
fn split_by_piece(
    segment: WindowSegment,
    placed: &[(usize, f64)],
    no_space: bool,
) -> Vec<(usize, WindowSegment)> {
    let middle = |start: f64, end: f64| (start + end) / 2.0;
    let whole = piece_at(placed, middle(segment.start, segment.end));
    let Some(words) = segment.words.clone().filter(|words| !words.is_empty()) else {
        return vec![(whole, segment)];
    };
    let mut parts: Vec<(usize, Vec<WindowWord>)> = Vec::new();
    for word in words {
        let piece = piece_at(placed, middle(word.start, word.end));
        match parts.last_mut() {
            Some((last, words)) if *last == piece => words.push(word),
            _ => parts.push((piece, vec![word])),
        }
    }
    if parts.len() == 1 {
        return vec![(parts[0].0, segment)];
    }
    let separator = if no_space { "" } else { " " };
    parts
        .into_iter()
        .map(|(piece, words)| {
            let text: Vec<&str> = words.iter().map(|word| word.word.as_str()).collect();
            let part = WindowSegment {
                start: words.first().map_or(segment.start, |word| word.start),
                end: words.last().map_or(segment.end, |word| word.end),
                text: text.join(separator),
                tokens: words.iter().flat_map(|word| word.tokens.clone()).collect(),
                words: Some(words),
                score: segment.score,
            };
            (piece, part)
        })
        .collect()
}

impl WindowSegment {
    /// The segment `offset` seconds later (its words too).
    fn shifted(mut self, offset: f64) -> Self {
        self.start += offset;
        self.end += offset;
        for word in self.words.iter_mut().flatten() {
            word.start += offset;
            word.end += offset;
        }
        self
    }
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
#[derive(Debug, Clone, Default)]
struct ParsedWindow {
    token_ids: Vec<usize>,
    tokens: Vec<String>,
    spans: Vec<TokenSpan>,
    /// Whisper stopped at a segment boundary before the end of the audio: from here on (s),
    /// the audio is still to be decoded.
    resume_at: Option<f64>,
}

/// A loaded Whisper model.
pub struct WhisperEngine {
    model: sys::Whisper,
    tokenizer: hf::Tokenizer,
    features: FeatureExtractor,
    name: String,
    decoding: DecodingOptions,
}

impl WhisperEngine {
    /// Loads the CTranslate2 model in `dir` (model.bin, config.json, tokenizer.json), int8 on CPU.
    pub fn load(
        dir: &Path,
        threads: usize,
        decoding: DecodingOptions,
    ) -> Result<Self, EngineError> {
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
        let name = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "whisper".to_owned());
        Ok(Self {
            model,
            tokenizer,
            features: FeatureExtractor::new(),
            name,
            decoding,
        })
    }

    /// How a job that asks for `request` is decoded. An English-only model cannot translate.
    pub fn job_decoding(&self, request: &DecodingRequest) -> Result<JobDecoding, EngineError> {
        if request.task == Task::Translate && !self.is_multilingual() {
            return Err(EngineError::CannotTranslate(self.name.clone()));
        }
        // The API checks these; a message published by other means is checked again.
        if let Some(temperature) = request.temperature
            && !(temperature == 0.0 || (MIN_TEMPERATURE..=1.0).contains(&temperature))
        {
            let why = format!("temperature: {temperature} is not 0 or from 0.01 to 1");
            return Err(EngineError::BadRequest(why));
        }
        if let Some(beam_size) = request.beam_size
            && !(1..=10).contains(&beam_size)
        {
            let why = format!("beam_size: {beam_size} is not from 1 to 10");
            return Err(EngineError::BadRequest(why));
        }
        let tokens = |text: &Option<String>| match text.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() => self.text_tokens(text),
            _ => Ok(Vec::new()),
        };
        Ok(JobDecoding {
            options: self
                .decoding
                .for_job(request.temperature, request.beam_size.map(usize::from)),
            task: request.task,
            hotwords: tokens(&request.hotwords)?,
            initial_prompt: tokens(&request.prompt)?,
        })
    }

    /// The tokens of `text` as said after other text (a leading space), without special tokens:
    /// the tokenizer turns `<|endoftext|>` or `<|0.00|>` written in a client's text into the
    /// tokens themselves, which would change the prompt's structure; they are left out.
    fn text_tokens(&self, text: &str) -> Result<Vec<String>, EngineError> {
        let first_special = self.token_id("<|endoftext|>")?;
        // The tokenizer itself: the ct2rs wrapper's `encode` adds special tokens.
        let encoding = (*self.tokenizer)
            .encode(format!(" {text}"), false)
            .map_err(inference("encoding the prompt"))?;
        Ok(encoding
            .get_tokens()
            .iter()
            .zip(encoding.get_ids())
            .filter(|(_, id)| (**id as usize) < first_special)
            .map(|(token, _)| token.clone())
            .collect())
    }

    /// The model folder's name, e.g. `whisper-base`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_multilingual(&self) -> bool {
        self.model.is_multilingual()
    }

    /// Transcribes a batch of windows (each at most 30 s) with one encoder pass. With `language`
    /// unknown on a multilingual model, it is detected from the first windows of the batch. With
    /// `condition_on_previous_text`, each window is prompted with the text just before it (the
    /// windows are then decoded one at a time); else every window with `previous`.
    /// Windows whose decoding fails are decoded again at the next temperatures (those windows
    /// only, encoded once more); windows of silence lose their text. Returns the language used
    /// and, per window, its segments (with their words when `word_timestamps` is set: one more
    /// pass over the same encoder output).
    pub fn transcribe_batch(
        &self,
        windows: &[&[f32]],
        request: &BatchRequest,
    ) -> Result<BatchTranscript, EngineError> {
        let BatchRequest {
            language,
            word_timestamps,
            previous,
            job,
            ..
        } = *request;
        if windows.is_empty() {
            return Ok(BatchTranscript {
                language: None,
                windows: Vec::new(),
                next_prompt: previous.to_vec(),
            });
        }
        if job.options.condition_on_previous_text && windows.len() > 1 {
            return self.transcribe_one_by_one(windows, request);
        }
        let mut features = self.features_of(windows);
        let encoded = self.encode(&mut features, windows.len())?;
        let detected = self.language_of(&encoded, language)?;
        let task = prompt_for(detected.as_ref(), job.task);
        // CTranslate2 wants the start of transcript at the same place in every prompt of a call:
        // all windows of the batch share the text before the batch.
        let prompt = with_previous_text(&job.hotwords, previous, &task);
        let prompts = vec![prompt; windows.len()];
        let decoded = self.decode_with_fallback(&encoded, &features, &prompts, windows, job)?;
        let next_prompt = next_prompt(&job.options, previous, &decoded);
        let parsed: Vec<ParsedWindow> = decoded.iter().map(|d| d.parsed.clone()).collect();
        let word_times = if word_timestamps {
            Some(self.align_words(&encoded, &task, &parsed, windows)?)
        } else {
            None
        };
        // A translation is English, whatever the language spoken.
        let no_space = job.task == Task::Transcribe
            && detected
                .as_ref()
                .is_some_and(|d| WITHOUT_SPACES.contains(&d.code.as_str()));
        let mut per_window = Vec::with_capacity(windows.len());
        for (index, window) in decoded.iter().enumerate() {
            let alignment = word_times.as_ref().map(|all| &all[index]);
            per_window.push(self.segments_of(window, alignment, no_space)?);
        }
        let language = detected.as_ref().map(|d| d.code.as_str()).or(language);
        let request = BatchRequest {
            language,
            ..*request
        };
        self.decode_tails(windows, &decoded, &request, &mut per_window)?;
        Ok(BatchTranscript {
            language: detected,
            windows: per_window,
            next_prompt,
        })
    }

    /// Where Whisper stopped at a segment boundary well before the end of a window's audio, the
    /// rest is decoded again (faster-whisper's sequential loop seeks there; without it, the
    /// unfinished phrase at the end of a window is lost), joined to the next window's first
    /// segment, which is decoded again with it. The rests of a batch are packed together into as
    /// few windows as they fit, and their segments go back to their windows.
    fn decode_tails(
        &self,
        windows: &[&[f32]],
        decoded: &[DecodedWindow],
        request: &BatchRequest,
        per_window: &mut [Vec<WindowSegment>],
    ) -> Result<(), EngineError> {
        let resume_at: Vec<Option<f64>> = decoded.iter().map(|d| d.parsed.resume_at).collect();
        let first_end: Vec<Option<f64>> = per_window
            .iter()
            .map(|segments| segments.first().map(|segment| segment.end))
            .collect();
        let rests = rests_of(windows, &resume_at, &first_end, request.consecutive);
        if rests.is_empty() {
            return Ok(());
        }
        debug!(
            windows = windows.len(),
            rests = rests.len(),
            "decoding the rest of windows"
        );
        let packed = pack_rests(&rests);
        let audio: Vec<&[f32]> = packed
            .iter()
            .map(|(samples, _)| samples.as_slice())
            .collect();
        // Words tell which rest each part of a segment belongs to.
        let with_words = BatchRequest {
            word_timestamps: true,
            consecutive: false,
            ..*request
        };
        let decoded_rests = self.transcribe_batch(&audio, &with_words)?;
        let no_space = request.job.task == Task::Transcribe
            && decoded_rests
                .language
                .as_ref()
                .is_some_and(|d| WITHOUT_SPACES.contains(&d.code.as_str()));
        let mut parts: Vec<(usize, WindowSegment)> = Vec::new();
        for ((_, placed), segments) in packed.iter().zip(decoded_rests.windows) {
            for (piece, mut part) in segments
                .into_iter()
                .flat_map(|segment| split_by_piece(segment, placed, no_space))
            {
                let (index, offset) = placed[piece];
                if !request.word_timestamps {
                    part.words = None;
                }
                parts.push((index, part.shifted(rests[index].at - offset)));
            }
        }
        for (index, rest) in rests.iter().enumerate() {
            let heard = parts.iter().any(|(part_of, _)| *part_of == index);
            per_window[rest.window].retain(|segment| !rest.replaces(segment.start, heard));
        }
        for (index, part) in parts {
            per_window[rests[index].window].push(part);
        }
        // A joined head goes before the window's own later segments.
        for segments in per_window.iter_mut() {
            segments.sort_by(|a, b| a.start.total_cmp(&b.start));
        }
        Ok(())
    }

    /// Conditioning on the previous text needs each window's text before the next window is
    /// decoded (CTranslate2 decodes a batch at once, and its encoder output cannot be split):
    /// the windows are transcribed one at a time, each encoded on its own.
    fn transcribe_one_by_one(
        &self,
        windows: &[&[f32]],
        request: &BatchRequest,
    ) -> Result<BatchTranscript, EngineError> {
        let mut language = request.language.map(str::to_owned);
        let mut done = BatchTranscript {
            language: None,
            windows: Vec::with_capacity(windows.len()),
            next_prompt: request.previous.to_vec(),
        };
        for window in windows {
            let one = self.transcribe_batch(
                std::slice::from_ref(window),
                &BatchRequest {
                    language: language.as_deref(),
                    previous: &done.next_prompt,
                    ..*request
                },
            )?;
            if language.is_none() {
                language = one.language.as_ref().map(|detected| detected.code.clone());
            }
            done.language = done.language.or(one.language);
            done.windows.extend(one.windows);
            done.next_prompt = one.next_prompt;
        }
        Ok(done)
    }

    /// Runs a batch of `batch_size` silent windows through encoding, language detection and a
    /// short decoding, so that the library's first-call costs (allocations, kernels) are paid at
    /// start-up and not by the first job.
    pub fn warm_up(&self, batch_size: usize) -> Result<(), EngineError> {
        let silence = vec![0f32; WINDOW_SAMPLES];
        let windows = vec![silence.as_slice(); batch_size.max(1)];
        let mut features = self.features_of(&windows);
        let encoded = self.encode(&mut features, windows.len())?;
        let detected = self.language_of(&encoded, None)?;
        let prompts = vec![prompt_for(detected.as_ref(), Task::Transcribe); windows.len()];
        let temperature = self.decoding.temperatures.first().copied().unwrap_or(0.0);
        let job = self.job_decoding(&DecodingRequest::default())?;
        self.generate(
            &encoded,
            &prompts,
            &windows,
            (temperature, &job.options),
            WARM_UP_LENGTH,
        )?;
        Ok(())
    }

    /// The features of a batch of windows, one after the other.
    fn features_of(&self, windows: &[&[f32]]) -> Vec<f32> {
        let mut features = Vec::with_capacity(windows.len() * WINDOW_FEATURES);
        for window in windows {
            features.extend(self.features.window(window));
        }
        features
    }

    /// The encoder output of `count` windows' features.
    fn encode(&self, features: &mut [f32], count: usize) -> Result<StorageView<'_>, EngineError> {
        let shape = [count, N_MELS, N_FRAMES];
        let features = StorageView::new(&shape, features, Device::CPU)
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

    /// Decodes every window at the first temperature, then the windows whose decoding failed
    /// at each next one (re-encoding only those), and keeps per window the first decoding that
    /// passed, or the best of those that failed; a window of silence keeps no text.
    fn decode_with_fallback(
        &self,
        encoded: &StorageView,
        features: &[f32],
        prompts: &[Vec<String>],
        windows: &[&[f32]],
        job: &JobDecoding,
    ) -> Result<Vec<DecodedWindow>, EngineError> {
        let options = &job.options;
        let mut temperatures = options.temperatures.iter().copied();
        let first = temperatures.next().unwrap_or(0.0);
        let mut attempts: Vec<Vec<DecodedWindow>> = self
            .generate(encoded, prompts, windows, (first, options), MAX_LENGTH)?
            .into_iter()
            .map(|decoded| vec![decoded])
            .collect();
        let failed = |tries: &Vec<DecodedWindow>| {
            tries
                .last()
                .is_some_and(|last| options.needs_fallback(&last.score))
        };
        for temperature in temperatures {
            let retry: Vec<usize> = (0..windows.len())
                .filter(|&index| failed(&attempts[index]))
                .collect();
            if retry.is_empty() {
                break;
            }
            let mut subset: Vec<f32> = retry
                .iter()
                .flat_map(|&index| {
                    features[index * WINDOW_FEATURES..(index + 1) * WINDOW_FEATURES]
                        .iter()
                        .copied()
                })
                .collect();
            let subset_encoded = self.encode(&mut subset, retry.len())?;
            let subset_prompts: Vec<Vec<String>> =
                retry.iter().map(|&index| prompts[index].clone()).collect();
            let subset_windows: Vec<&[f32]> = retry.iter().map(|&index| windows[index]).collect();
            let decoded = self.generate(
                &subset_encoded,
                &subset_prompts,
                &subset_windows,
                (temperature, options),
                MAX_LENGTH,
            )?;
            debug!(windows = retry.len(), temperature, "decoding again");
            for (&index, mut decoded) in retry.iter().zip(decoded) {
                // The no-speech probability does not depend on the temperature, and CTranslate2
                // reads it from the wrong copies when it samples several windows (English-only
                // models): the first attempt's is kept.
                decoded.score.no_speech_prob = attempts[index][0].score.no_speech_prob;
                attempts[index].push(decoded);
            }
        }
        Ok(attempts
            .into_iter()
            .map(|tries| keep_one(options, tries))
            .collect())
    }

    /// Decodes every window after its prompt at `temperature` (beam search at 0, else the best
    /// of `best_of` samples), up to `max_length` tokens.
    fn generate(
        &self,
        encoded: &StorageView,
        prompts: &[Vec<String>],
        windows: &[&[f32]],
        (temperature, decoding): (f32, &DecodingOptions),
        max_length: usize,
    ) -> Result<Vec<DecodedWindow>, EngineError> {
        let sampling = temperature > 0.0;
        let options = WhisperOptions {
            beam_size: if sampling { 1 } else { decoding.beam_size },
            num_hypotheses: if sampling { decoding.best_of } else { 1 },
            sampling_topk: if sampling { 0 } else { 1 },
            sampling_temperature: if sampling { temperature } else { 1.0 },
            max_length,
            return_scores: true,
            return_no_speech_prob: true,
            ..Default::default()
        };
        let results = self
            .model
            .generate(encoded, prompts, &options)
            .map_err(inference("decoding"))?;
        results
            .into_iter()
            .zip(windows)
            .map(|(result, window)| {
                let sequence = result.sequences.into_iter().next().unwrap_or_default();
                let ids = result.sequences_ids.into_iter().next().unwrap_or_default();
                let parsed =
                    parse_window(&sequence, &ids, window.len() as f64 / SAMPLE_RATE as f64);
                let text = self
                    .tokenizer
                    .decode(parsed.tokens.clone())
                    .map_err(inference("decoding tokens"))?;
                let score = DecodeScore {
                    avg_logprob: avg_logprob(
                        result.scores.first().copied().unwrap_or(f32::NEG_INFINITY),
                        sequence.len(),
                    ),
                    compression_ratio: compression_ratio(text.trim()),
                    no_speech_prob: f64::from(result.no_speech_prob),
                    temperature,
                };
                Ok(DecodedWindow {
                    parsed,
                    sequence,
                    score,
                })
            })
            .collect()
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
        prompt: &[String],
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
        decoded: &DecodedWindow,
        alignment: Option<&TokenTimes>,
        no_space: bool,
    ) -> Result<Vec<WindowSegment>, EngineError> {
        let window = &decoded.parsed;
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
                score: decoded.score,
                tokens: token_ids(&window.token_ids[span.text_tokens.clone()]),
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
            let tokens = token_ids(&window.token_ids[range.clone()]);
            if let Some(previous) = words.last_mut().filter(|_| is_written_only(word)) {
                // Punctuation pieces (`。`, `、`) are written, not spoken.
                previous.word.push_str(word);
                previous.tokens.extend(tokens);
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
                tokens,
            });
        }
        fit_words(&mut words, span.start, span.end);
        Ok(words)
    }
}

/// The least audio (s) decoded again after Whisper stopped early in a window, and the least it
/// must have decoded before: a shorter rest holds hardly a word, and each rest is shorter than
/// its window, so decoding rests ends.
const MIN_TAIL_S: f64 = 1.0;
/// Whisper's longest decoding of a window, in tokens (prompt included).
const MAX_LENGTH: usize = 448;
/// The lowest temperature above 0 sampled at: below it, CTranslate2's 1/t overflows.
const MIN_TEMPERATURE: f32 = 0.01;
/// Tokens decoded per window when warming up.
const WARM_UP_LENGTH: usize = 24;
/// The longest prompt of previous text: half the decoder's context, as Whisper keeps.
const MAX_PROMPT_TOKENS: usize = MAX_LENGTH / 2 - 1;
/// Feature values of one window.
const WINDOW_FEATURES: usize = N_MELS * N_FRAMES;

/// `task` after the words to favour and the previous text (`<|startofprev|>` then their tokens,
/// as faster-whisper builds it), if there are any: at most `MAX_PROMPT_TOKENS` of them, the
/// hotwords first (capped at half), then the latest previous text.
fn with_previous_text(hotwords: &[String], previous: &[String], task: &[String]) -> Vec<String> {
    if hotwords.is_empty() && previous.is_empty() {
        return task.to_vec();
    }
    let hotwords = &hotwords[..hotwords.len().min(MAX_PROMPT_TOKENS / 2)];
    let room = MAX_PROMPT_TOKENS - hotwords.len();
    let previous = &previous[previous.len().saturating_sub(room)..];
    let mut prompt = Vec::with_capacity(hotwords.len() + previous.len() + task.len() + 1);
    prompt.push("<|startofprev|>".to_owned());
    prompt.extend(hotwords.iter().cloned());
    prompt.extend(previous.iter().cloned());
    prompt.extend(task.iter().cloned());
    prompt
}

/// The prompt of a window: the task, in the detected language (none for English-only models,
/// which were trained without language and task tokens, and transcribe only).
fn prompt_for(detected: Option<&DetectedLanguage>, task: Task) -> Vec<String> {
    match detected {
        Some(language) => vec![
            "<|startoftranscript|>".to_owned(),
            format!("<|{}|>", language.code),
            format!("<|{}|>", task.name()),
        ],
        None => vec!["<|startoftranscript|>".to_owned()],
    }
}

/// The attempt kept for a window: the last, if it passed; else the best, reported at the
/// last temperature tried (which decides whether its text prompts the next window). Text
/// of silence is dropped.
fn keep_one(options: &DecodingOptions, mut tries: Vec<DecodedWindow>) -> DecodedWindow {
    let last_temperature = tries.last().map_or(0.0, |last| last.score.temperature);
    let passed = tries
        .last()
        .is_some_and(|last| !options.needs_fallback(&last.score));
    let scores: Vec<DecodeScore> = tries.iter().map(|attempt| attempt.score).collect();
    let index = match passed {
        true => tries.len() - 1,
        false => options.best_attempt(&scores),
    };
    let mut kept = tries.swap_remove(index.min(tries.len() - 1));
    kept.score.temperature = last_temperature;
    if options.is_silence(&kept.score) {
        kept.parsed = ParsedWindow::default();
        kept.sequence.clear();
    }
    kept
}

/// The prompt of the window after this batch: the text before it and the batch's, as long
/// as each decoding carries its text over (a decoding that ran hot starts afresh), the last
/// `MAX_PROMPT_TOKENS` tokens.
fn next_prompt(
    options: &DecodingOptions,
    previous: &[String],
    decoded: &[DecodedWindow],
) -> Vec<String> {
    let mut prompt = previous.to_vec();
    for window in decoded {
        if window.sequence.is_empty() {
            continue;
        }
        if options.carries_prompt(window.score.temperature) {
            prompt.extend(window.sequence.iter().cloned());
        } else {
            prompt.clear();
        }
    }
    let excess = prompt.len().saturating_sub(MAX_PROMPT_TOKENS);
    prompt.drain(..excess);
    prompt
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
    parsed.resume_at = undecoded_from(tokens);
    parsed
}

/// Where Whisper wants to go on, read as faster-whisper's sequential loop reads it: an output
/// with a segment boundary (two timestamps in a row) that does not end on a single closing
/// timestamp has left the audio after its last boundary undecoded.
fn undecoded_from(tokens: &[String]) -> Option<f64> {
    // Each token as its time if a timestamp, none if text; other special tokens left out.
    let times: Vec<Option<f64>> = tokens
        .iter()
        .filter(|token| timestamp_of(token).is_some() || !is_special(token))
        .map(|token| timestamp_of(token))
        .collect();
    let count = times.len();
    let single_timestamp_ending =
        count >= 2 && times[count - 2].is_none() && times[count - 1].is_some();
    if single_timestamp_ending {
        return None;
    }
    let last_boundary = (1..count)
        .rev()
        .find(|&index| times[index].is_some() && times[index - 1].is_some())?;
    times[last_boundary - 1]
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

/// Token ids as a transcript keeps them (a vocabulary has far fewer than 2^32 tokens).
fn token_ids(ids: &[usize]) -> Vec<u32> {
    ids.iter().map(|&id| id as u32).collect()
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
        // Whisper opened a segment it did not close: the audio from 1.5 s is decoded again.
        assert_eq!(parsed.resume_at, Some(1.5));
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
    fn an_output_stopped_at_a_segment_boundary_leaves_the_rest_of_the_window_undecoded() {
        let cases: [(&[&str], Option<f64>); 5] = [
            // A boundary, then an opened segment: the rest is from the boundary on.
            (
                &["<|0.00|>", "ĠA", "<|2.00|>", "<|2.00|>", "<|endoftext|>"],
                Some(2.0),
            ),
            // Ended on a single closing timestamp: all of it is decoded.
            (
                &["<|0.00|>", "ĠA", "<|2.00|>", "<|2.50|>", "ĠB", "<|4.00|>"],
                None,
            ),
            // Text after the last boundary without a closing timestamp: decoded again.
            (
                &[
                    "<|0.00|>",
                    "ĠA",
                    "<|2.00|>",
                    "<|2.40|>",
                    "ĠB",
                    "<|endoftext|>",
                ],
                Some(2.0),
            ),
            // No boundary at all: one segment, all of it decoded.
            (&["<|0.00|>", "ĠA", "ĠB", "<|endoftext|>"], None),
            (&[], None),
        ];
        for (tokens, expected) in cases {
            assert_eq!(undecoded_from(&strings(tokens)), expected, "{tokens:?}");
        }
        let parsed = parse_window(
            &strings(&[
                "<|0.00|>",
                "ĠA",
                "<|2.00|>",
                "<|2.40|>",
                "ĠB",
                "<|endoftext|>",
            ]),
            &[0, 1, 2, 3, 4, 5],
            10.0,
        );
        assert_eq!(parsed.spans.len(), 2, "{parsed:?}");
        assert_eq!(parsed.resume_at, Some(2.0));
    }

    #[test]
    fn a_rest_is_decoded_only_with_a_second_of_audio_after_a_second_of_window() {
        let window = vec![0.0f32; 5 * SAMPLE_RATE];
        let cases = [
            (0.5, None),
            (1.0, Some(4 * SAMPLE_RATE)),
            (3.5, Some(SAMPLE_RATE + SAMPLE_RATE / 2)),
            (4.5, None),
            // Timestamps past the audio, over the padding of a short window.
            (5.0, None),
            (15.32, None),
        ];
        for (at, rest) in cases {
            assert_eq!(rest_of(&window, at).map(<[f32]>::len), rest, "at {at}");
        }
    }

    #[test]
    fn rests_share_windows_two_seconds_apart_as_long_as_they_fit() {
        let audio = |seconds: usize| vec![0.1f32; seconds * SAMPLE_RATE];
        let (a, b, c) = (audio(4), audio(20), audio(8));
        let rest = |window, audio| Rest {
            window,
            at: 10.0,
            audio,
            joined: false,
        };
        let rests = [rest(0, &a), rest(2, &b), rest(3, &c)];
        let packed = pack_rests(&rests);
        assert_eq!(packed.len(), 2);
        assert_eq!(packed[0].1, vec![(0, 0.0), (1, 6.0)]);
        assert_eq!(packed[0].0.len(), 26 * SAMPLE_RATE);
        assert_eq!(packed[1].1, vec![(2, 0.0)]);
    }

    #[test]
    fn a_head_joined_to_a_rest_follows_it_without_a_gap_in_the_same_window() {
        let audio = |seconds: usize| vec![0.1f32; seconds * SAMPLE_RATE];
        let (a, head, b, c) = (audio(4), audio(6), audio(12), audio(9));
        let rest = |window, at, audio, joined| Rest {
            window,
            at,
            audio,
            joined,
        };
        let rests = [
            rest(0, 26.0, &a, false),
            rest(1, 0.0, &head, true),
            rest(1, 18.0, &b, false),
            rest(2, 0.0, &c, true),
        ];
        let packed = pack_rests(&rests);
        // 4 + 6, then 2 s of gap, then 12 + 9 would pass 30 s: the second pair starts a window.
        assert_eq!(packed.len(), 2);
        assert_eq!(packed[0].1, vec![(0, 0.0), (1, 4.0)]);
        assert_eq!(packed[0].0.len(), 10 * SAMPLE_RATE);
        assert_eq!(packed[1].1, vec![(2, 0.0), (3, 12.0)]);
        // The head covers the window's segments that start inside it; the rest those after it.
        assert!(rests[1].covers(0.0) && rests[1].covers(5.9) && !rests[1].covers(6.0));
        assert!(!rests[2].covers(17.9) && rests[2].covers(18.0));
    }

    #[test]
    fn a_rest_takes_the_next_windows_first_segment_when_both_fit_a_window() {
        let cases = [
            // (first segment's end, the next window's own rest, rest, next window: head's end)
            (Some(6.0), None, 4.0, 30.0, Some(6.0)),
            (Some(6.0), Some(6.0), 4.0, 30.0, Some(6.0)),
            (Some(26.0), None, 4.0, 30.0, Some(26.0)),
            (Some(27.0), None, 4.0, 30.0, None),
            (None, None, 4.0, 30.0, None),
            (Some(0.0), None, 4.0, 30.0, None),
            // A segment past the window's own rest (its first complete one was only blank).
            (Some(12.0), Some(8.0), 4.0, 30.0, None),
            // Clamped to the end of a short window's audio: the later segments would start
            // inside the head.
            (Some(8.0), None, 4.0, 8.0, None),
        ];
        for (first_end, next_resume_at, rest_s, window_s, expected) in cases {
            assert_eq!(
                head_end(first_end, next_resume_at, rest_s, window_s),
                expected,
                "{first_end:?} {next_resume_at:?} {rest_s} {window_s}"
            );
        }
    }

    #[test]
    fn only_consecutive_windows_lend_their_head_to_the_rest_before_them() {
        let audio = |seconds: usize| vec![0.1f32; seconds * SAMPLE_RATE];
        let (a, b, c) = (audio(30), audio(30), audio(20));
        let windows: [&[f32]; 3] = [&a, &b, &c];
        // Window 0 stops at 26 s, window 1 at 24 s (its first segment ends at 5 s), window 2
        // runs to its end (first segment to 7 s).
        let resume_at = [Some(26.0), Some(24.0), None];
        let first_end = [Some(9.0), Some(5.0), Some(7.0)];
        let summary = |rests: Vec<Rest>| -> Vec<(usize, f64, usize, bool)> {
            rests
                .iter()
                .map(|r| (r.window, r.at, r.audio.len() / SAMPLE_RATE, r.joined))
                .collect()
        };
        assert_eq!(
            summary(rests_of(&windows, &resume_at, &first_end, true)),
            vec![
                (0, 26.0, 4, false),
                (1, 0.0, 5, true),
                (1, 24.0, 6, false),
                (2, 0.0, 7, true),
            ]
        );
        // Packed rests are not consecutive: no heads. The last window lends nothing.
        assert_eq!(
            summary(rests_of(&windows, &resume_at, &first_end, false)),
            vec![(0, 26.0, 4, false), (1, 24.0, 6, false)]
        );
        assert!(rests_of(&windows[2..], &resume_at[2..], &first_end[2..], true).is_empty());
    }

    #[test]
    fn a_heads_segment_gives_way_only_to_words_heard_in_it() {
        let audio = vec![0.1f32; 5 * SAMPLE_RATE];
        let head = Rest {
            window: 1,
            at: 0.0,
            audio: &audio,
            joined: true,
        };
        let rest = Rest {
            window: 0,
            at: 25.0,
            audio: &audio,
            joined: false,
        };
        let cases = [
            // (rest, segment start, heard: replaced)
            (&head, 0.0, true, true),
            (&head, 0.0, false, false),
            (&head, 5.0, true, false),
            (&rest, 24.9, true, false),
            (&rest, 25.0, true, true),
            (&rest, 25.0, false, true),
        ];
        for (rest, start, heard, expected) in cases {
            assert_eq!(
                rest.replaces(start, heard),
                expected,
                "joined {} at {start}, heard {heard}",
                rest.joined
            );
        }
    }

    #[test]
    fn a_segment_across_two_rests_is_split_between_them_by_its_words() {
        let word = |start: f64, end: f64, word: &str| WindowWord {
            start,
            end,
            word: word.to_owned(),
            probability: 0.9,
            tokens: vec![start as u32],
        };
        let segment = WindowSegment {
            start: 0.0,
            end: 9.0,
            text: "The rules were tightened. With this".to_owned(),
            words: Some(vec![
                word(0.0, 0.5, "The"),
                word(0.5, 1.0, "rules"),
                word(1.0, 1.5, "were"),
                word(1.5, 2.0, "tightened."),
                word(6.0, 6.5, "With"),
                word(6.5, 7.0, "this"),
            ]),
            score: DecodeScore::default(),
            tokens: vec![0, 0, 1, 1, 6, 6],
        };
        let placed = [(0, 0.0), (1, 6.0)];
        let parts = split_by_piece(segment.clone(), &placed, false);
        let summary: Vec<(usize, f64, f64, &str)> = parts
            .iter()
            .map(|(piece, part)| (*piece, part.start, part.end, part.text.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, 0.0, 2.0, "The rules were tightened."),
                (1, 6.0, 7.0, "With this")
            ]
        );
        // Each part keeps the tokens of its words.
        assert_eq!(parts[0].1.tokens, vec![0, 0, 1, 1]);
        assert_eq!(parts[1].1.tokens, vec![6, 6]);
        // Inside one rest, or without words: the segment as it is, in the rest of its middle.
        assert_eq!(
            split_by_piece(segment.clone(), &placed[..1], false),
            vec![(0, segment.clone())]
        );
        let bare = WindowSegment {
            words: None,
            ..segment
        };
        assert_eq!(
            split_by_piece(bare.clone(), &placed, false),
            vec![(0, bare)]
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
            tokens: vec![],
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
