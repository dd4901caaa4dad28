//! Transcripts (what the transcriber stores) and results (what the analyzer stores, and what
//! `/result` and the webhook carry).

use serde::{Deserialize, Serialize};

use crate::record::Task;

/// A transcript as the transcriber stores it (JSON blob).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub text: String,
    pub segments: Vec<Segment>,
    /// What Whisper detected or was told.
    pub language: LanguageDetection,
    pub duration_s: f64,
    /// Model folder name, e.g. `whisper-base`.
    pub model: String,
    /// `translate`: the text is English, whatever the language spoken (`language`).
    #[serde(default)]
    pub task: Task,
}

/// A stretch of the transcript with its times in seconds of the original media.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// Present when the job asked for word timestamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word>>,
    /// How sure the decoder was: the mean log-probability of the tokens of the Whisper window
    /// the segment was decoded in (as OpenAI's and faster-whisper's segments report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_logprob: Option<f64>,
    /// The window's text length over its zlib-compressed length (above 2.4: it repeats itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_ratio: Option<f64>,
    /// The probability Whisper gave the window of holding no speech.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_speech_prob: Option<f64>,
    /// The sampling temperature of the decoding kept (0 unless it fell back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The channel of the media the segment was heard on (from 0), with channels=split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u16>,
    /// The ids of its text tokens in the model's vocabulary (OpenAI's `verbose_json` gives them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<u32>,
}

/// What other services may read of the transcriber's checkpoint
/// ([`crate::JobBlobs::transcribe_checkpoint_path`], JSON): the segments of the batches finished
/// so far, in media order (the API streams their text while the job runs).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TranscriptSoFar {
    pub segments: Vec<SegmentText>,
}

/// The text of a segment, without its words and tokens (which are skipped, not read).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SegmentText {
    pub text: String,
}

impl TranscriptSoFar {
    /// The text so far: the segments' texts joined by spaces, as the transcript's text is.
    pub fn joined_text(&self) -> String {
        let texts: Vec<&str> = self.segments.iter().map(|s| s.text.as_str()).collect();
        texts.join(" ")
    }
}

/// One word of a segment, with its times in seconds of the original media.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub start: f64,
    pub end: f64,
    pub word: String,
    /// Whisper's mean probability of the word's tokens, 0..=1.
    pub probability: f64,
}

/// The language of a transcript and where that answer comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanguageDetection {
    /// ISO 639-1 code (`und` when there was nothing to detect it from).
    pub language: String,
    pub probability: f64,
    pub source: LanguageSource,
    /// What the transcript's text says (whatlang), once the analyzer has looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_check: Option<TextLanguageCheck>,
}

/// Where a transcript's language comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LanguageSource {
    /// Detected by the model.
    Whisper,
    /// Requested by the client.
    User,
    /// An English-only model.
    Model,
    /// Read from the transcript's text, when Whisper was unsure.
    Text,
}

/// The language of the transcript's text as whatlang sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextLanguageCheck {
    /// ISO 639-1 code (ISO 639-3 where 639-1 has none).
    pub language: String,
    /// whatlang's confidence, 0..=1.
    pub confidence: f64,
    /// whatlang's own judgement of whether the text was enough to tell.
    pub reliable: bool,
}

/// Figures about the speech in a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptStats {
    /// Words (characters, for languages written without spaces).
    pub words: u64,
    /// Words per minute of speech.
    pub words_per_minute: f64,
    /// Seconds covered by segments.
    pub speech_s: f64,
    /// The rest of the media's duration.
    pub silence_s: f64,
}

/// A keyword or key phrase of the transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topic {
    pub text: String,
    /// Relevance in (0, 1]: 1 for the best topic.
    pub score: f64,
}

/// The result of a completed job, as `/result` and the webhook carry it (JSON blob).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub transcript: String,
    pub segments: Vec<Segment>,
    pub language_detection: LanguageDetection,
    /// Key words and phrases, best first.
    pub topics: Vec<Topic>,
    #[serde(default)]
    pub stats: Option<TranscriptStats>,
    pub duration_s: f64,
    pub model: String,
    /// `translate`: `transcript` is English, `language_detection` the language spoken.
    #[serde(default)]
    pub task: Task,
}
