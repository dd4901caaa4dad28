//! The transcript as it grows batch by batch: its segments in media time, the language, the
//! checkpoint a later attempt resumes from, and the decisions made at the start and the end of
//! a job (where to resume, which language to report).

use proto_msgs::{LanguageDetection, LanguageSource, Segment, Word, pcm};
use serde::{Deserialize, Serialize};

use crate::engine::{DetectedLanguage, WindowSegment};
use crate::vad::Chunk;

/// The transcriber's progress on one job, stored after each batch so that a replacement process
/// resumes where a dead one stopped.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Media sample from which audio is still to be transcribed.
    pub resume_sample: u64,
    pub segments: Vec<Segment>,
    pub language: Option<DetectedLanguage>,
}

/// Where an attempt starts reading the audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResumePoint {
    /// Byte offset in the PCM blob (on a sample boundary, at most its size).
    pub byte: u64,
    /// The media second resumed from, when an earlier attempt's checkpoint is used.
    pub resumed_from_s: Option<f64>,
}

/// Where to start in audio of `audio_bytes` bytes, given the last checkpoint.
pub fn resume_point(checkpoint: &Checkpoint, audio_bytes: u64) -> ResumePoint {
    let whole_samples = audio_bytes / pcm::BYTES_PER_SAMPLE * pcm::BYTES_PER_SAMPLE;
    let byte = (checkpoint.resume_sample * pcm::BYTES_PER_SAMPLE).min(whole_samples);
    ResumePoint {
        byte,
        resumed_from_s: (checkpoint.resume_sample > 0)
            .then(|| round_ms(pcm::sample_to_seconds(checkpoint.resume_sample))),
    }
}

/// The language reported for the transcript: an English-only model's, the one the client asked
/// for, Whisper's detection, or `und` when there was no speech to detect it from.
pub fn final_language(
    multilingual: bool,
    requested: Option<&str>,
    detected: Option<&DetectedLanguage>,
) -> LanguageDetection {
    let (language, probability, source) = match (multilingual, requested, detected) {
        (false, _, _) => ("en".to_owned(), 1.0, LanguageSource::Model),
        (true, Some(code), _) => (code.to_owned(), 1.0, LanguageSource::User),
        (true, None, Some(detected)) => (
            detected.code.clone(),
            (detected.probability * 1000.0).round() / 1000.0,
            LanguageSource::Whisper,
        ),
        (true, None, None) => ("und".to_owned(), 0.0, LanguageSource::Whisper),
    };
    LanguageDetection {
        language,
        probability,
        source,
        text_check: None,
    }
}

/// The transcript so far: segments in media time, and the language once detected.
#[derive(Debug, Default)]
pub struct TranscriptBuilder {
    segments: Vec<Segment>,
    language: Option<DetectedLanguage>,
}

impl TranscriptBuilder {
    /// Continues from an earlier attempt's checkpoint (or from nothing).
    pub fn from_checkpoint(checkpoint: Checkpoint) -> Self {
        Self {
            segments: checkpoint.segments,
            language: checkpoint.language,
        }
    }

    /// The language detected so far.
    pub fn language(&self) -> Option<&DetectedLanguage> {
        self.language.as_ref()
    }

    /// Adds a batch: the language it was decoded in (kept if none was known) and each chunk's
    /// segments, shifted to media time.
    pub fn add_batch(
        &mut self,
        detected: Option<DetectedLanguage>,
        chunks: Vec<(Chunk, Vec<WindowSegment>)>,
    ) {
        if self.language.is_none() {
            self.language = detected;
        }
        for (chunk, segments) in chunks {
            self.push_window(pcm::sample_to_seconds(chunk.start_sample), segments);
        }
    }

    /// What a later attempt needs to go on from `resume_sample`.
    pub fn checkpoint(&self, resume_sample: u64) -> Checkpoint {
        Checkpoint {
            resume_sample,
            segments: self.segments.clone(),
            language: self.language.clone(),
        }
    }

    /// The segments, and the text: the segments' texts joined by spaces.
    pub fn finish(self) -> (Vec<Segment>, String) {
        let text = self
            .segments
            .iter()
            .map(|segment| segment.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        (self.segments, text)
    }

    /// Adds a chunk's segments, shifted to media time and kept in order (never going back).
    fn push_window(&mut self, offset_s: f64, segments: Vec<WindowSegment>) {
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

pub fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_segments_are_shifted_to_media_time_and_never_go_back() {
        let mut builder = TranscriptBuilder::default();
        let segment = |start, end, text: &str| WindowSegment {
            start,
            end,
            text: text.into(),
            words: None,
        };
        let chunk = |second: u64| Chunk {
            start_sample: second * u64::from(pcm::SAMPLE_RATE),
            samples: Vec::new(),
        };
        builder.add_batch(
            None,
            vec![
                (
                    chunk(0),
                    vec![segment(0.0, 4.0, "a"), segment(3.5, 30.0, "b")],
                ),
                (chunk(30), vec![segment(0.0, 2.0, "c")]),
            ],
        );
        let (segments, text) = builder.finish();
        let times: Vec<(f64, f64)> = segments.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(times, vec![(0.0, 4.0), (4.0, 30.0), (30.0, 32.0)]);
        assert_eq!(text, "a b c");
    }

    #[test]
    fn an_attempt_resumes_from_the_checkpoint_inside_the_audio() {
        let at = |resume_sample| Checkpoint {
            resume_sample,
            ..Default::default()
        };
        let cases = [
            // (checkpoint's sample, audio bytes, byte to start at, resumed from)
            (0, 1_000_000, 0, None),
            (8_000, 1_000_000, 16_000, Some(0.5)),
            // A checkpoint past the end (the audio was replaced): start at its end.
            (900_000, 1_000_000, 1_000_000, Some(56.25)),
            (900_000, 1_000_001, 1_000_000, Some(56.25)),
        ];
        for (sample, audio_bytes, byte, resumed_from_s) in cases {
            assert_eq!(
                resume_point(&at(sample), audio_bytes),
                ResumePoint {
                    byte,
                    resumed_from_s
                },
                "sample {sample} of {audio_bytes} bytes"
            );
        }
    }

    #[test]
    fn the_reported_language_follows_the_model_the_client_and_whisper_in_that_order() {
        let detected = DetectedLanguage {
            code: "de".into(),
            probability: 0.87654,
        };
        let cases = [
            (
                false,
                Some("fr"),
                Some(&detected),
                ("en", 1.0, LanguageSource::Model),
            ),
            (
                true,
                Some("fr"),
                Some(&detected),
                ("fr", 1.0, LanguageSource::User),
            ),
            (
                true,
                None,
                Some(&detected),
                ("de", 0.877, LanguageSource::Whisper),
            ),
            (true, None, None, ("und", 0.0, LanguageSource::Whisper)),
        ];
        for (multilingual, requested, detected, (language, probability, source)) in cases {
            let chosen = final_language(multilingual, requested, detected);
            assert_eq!(
                (chosen.language.as_str(), chosen.probability, chosen.source),
                (language, probability, source),
                "multilingual={multilingual} requested={requested:?}"
            );
        }
    }
}
