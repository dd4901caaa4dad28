//! The transcript as it grows batch by batch: its segments in media time, the language, the
//! checkpoint a later attempt resumes from, and the decisions made at the start and the end of
//! a job (where to resume, which language to report).

use proto_msgs::{LanguageDetection, LanguageSource, Segment, Word, pcm};
use serde::{Deserialize, Serialize};

use crate::engine::{DetectedLanguage, WindowSegment, WindowWord};
use crate::packing::Window;

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

    /// Adds a batch: the language it was decoded in (kept if none was known) and each window's
    /// segments, mapped to media time.
    pub fn add_batch(
        &mut self,
        detected: Option<DetectedLanguage>,
        windows: impl IntoIterator<Item = (Window, Vec<WindowSegment>)>,
    ) {
        if self.language.is_none() {
            self.language = detected;
        }
        for (window, segments) in windows {
            self.push_window(&window, segments);
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

    /// The segments, and the language detected.
    pub fn finish(self) -> (Vec<Segment>, Option<DetectedLanguage>) {
        (self.segments, self.language)
    }

    /// Adds a window's segments, mapped to media time and kept in order (never going back). A
    /// segment with words spans its words, as faster-whisper's do.
    fn push_window(&mut self, window: &Window, segments: Vec<WindowSegment>) {
        for segment in segments {
            let floor = self.segments.last().map_or(0.0, |last| last.end);
            let words: Option<Vec<(f64, f64, WindowWord)>> = segment.words.map(|words| {
                words
                    .into_iter()
                    .map(|word| {
                        let (start, end) = window.word_span(word.start, word.end);
                        (start, end, word)
                    })
                    .collect()
            });
            let (mut start, mut end) = window.segment_span(segment.start, segment.end);
            if let Some(((first, _, _), (_, last, _))) = words
                .as_ref()
                .and_then(|words| words.first().zip(words.last()))
            {
                (start, end) = (*first, *last);
            }
            let start = start.max(floor);
            let end = end.max(start);
            let words = words.map(|words| {
                words
                    .into_iter()
                    .map(|(word_start, word_end, word)| {
                        let word_start = word_start.clamp(start, end);
                        Word {
                            start: round_ms(word_start),
                            end: round_ms(word_end.clamp(word_start, end)),
                            word: word.word,
                            probability: (word.probability * 1000.0).round() / 1000.0,
                        }
                    })
                    .collect()
            });
            let score = segment.score;
            self.segments.push(Segment {
                start: round_ms(start),
                end: round_ms(end),
                text: segment.text,
                tokens: segment.tokens,
                words,
                avg_logprob: round_to(score.avg_logprob, 4),
                compression_ratio: round_to(score.compression_ratio, 4),
                no_speech_prob: round_to(score.no_speech_prob, 4),
                temperature: round_to(f64::from(score.temperature), 2),
                channel: None,
            });
        }
    }
}

/// The transcript of each channel heard on its own, `None` for the mix.
pub struct HeardChannel {
    pub channel: Option<u16>,
    pub segments: Vec<Segment>,
    pub language: Option<DetectedLanguage>,
}

/// The segments of every channel in time order, each with its channel (a tie in time goes to the
/// lower channel), and the language detected in the first channel with speech (the later ones
/// are decoded in it).
pub fn merge_channels(heard: Vec<HeardChannel>) -> (Vec<Segment>, Option<DetectedLanguage>) {
    let mut language: Option<DetectedLanguage> = None;
    let mut segments = Vec::new();
    for part in heard {
        if language.is_none() {
            language = part.language;
        }
        segments.extend(part.segments.into_iter().map(|segment| Segment {
            channel: part.channel,
            ..segment
        }));
    }
    // Stable: a channel's own segments keep their order.
    segments.sort_by(|a, b| (a.start.total_cmp(&b.start)).then(a.channel.cmp(&b.channel)));
    (segments, language)
}

/// The transcript's text: the segments' texts joined by spaces.
pub fn joined_text(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|segment| segment.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// `value` to `digits` decimals; none if it is not a number (a decoding without scores).
fn round_to(value: f64, digits: i32) -> Option<f64> {
    let scale = 10f64.powi(digits);
    value.is_finite().then(|| (value * scale).round() / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_segments_are_mapped_to_media_time_and_never_go_back() {
        let mut builder = TranscriptBuilder::default();
        let segment = |start, end, text: &str| WindowSegment {
            start,
            end,
            text: text.into(),
            words: None,
            score: Default::default(),
            tokens: vec![],
        };
        let rate = pcm::SAMPLE_RATE as usize;
        let chunk = |second: u64, seconds: usize| crate::vad::Chunk {
            start_sample: second * u64::from(pcm::SAMPLE_RATE),
            samples: vec![0.0; seconds * rate],
        };
        builder.add_batch(
            None,
            vec![
                (
                    Window::from_chunks([chunk(0, 30)]),
                    vec![segment(0.0, 4.0, "a"), segment(3.5, 30.0, "b")],
                ),
                // Two pieces: 5 s from 40 s, then 5 s from 100 s.
                (
                    Window::from_chunks([chunk(40, 5), chunk(100, 5)]),
                    vec![segment(0.0, 5.0, "c"), segment(5.0, 7.5, "d")],
                ),
            ],
        );
        let (segments, _) = builder.finish();
        let times: Vec<(f64, f64)> = segments.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(
            times,
            vec![(0.0, 4.0), (4.0, 30.0), (40.0, 45.0), (100.0, 102.5)]
        );
        assert_eq!(joined_text(&segments), "a b c d");
    }

    #[test]
    fn the_api_reads_a_checkpoints_segments_as_the_transcript_so_far() {
        let checkpoint = Checkpoint {
            resume_sample: 16_000,
            segments: vec![Segment {
                start: 0.5,
                end: 1.0,
                text: "Ask not.".into(),
                ..Segment::default()
            }],
            language: Some(DetectedLanguage {
                code: "en".into(),
                probability: 0.9,
            }),
        };
        let json = serde_json::to_vec(&checkpoint).expect("serializes");
        let so_far: proto_msgs::TranscriptSoFar = serde_json::from_slice(&json).expect("reads");
        assert_eq!(so_far.joined_text(), joined_text(&checkpoint.segments));
    }

    #[test]
    fn channels_heard_apart_merge_in_time_order_each_segment_naming_its_channel() {
        let segment = |start: f64, end: f64, text: &str| Segment {
            start,
            end,
            text: text.into(),
            ..Segment::default()
        };
        let language = |code: &str, probability| {
            Some(DetectedLanguage {
                code: code.into(),
                probability,
            })
        };
        let heard = vec![
            HeardChannel {
                channel: Some(0),
                segments: vec![segment(0.5, 3.0, "Hello,"), segment(6.0, 8.0, "fine.")],
                language: language("en", 0.9),
            },
            HeardChannel {
                channel: Some(1),
                segments: vec![
                    segment(2.0, 5.0, "hi, how are you?"),
                    segment(6.0, 7.0, "Good."),
                ],
                language: language("en", 0.97),
            },
            HeardChannel {
                channel: Some(2),
                segments: vec![],
                language: None,
            },
        ];
        let (segments, detected) = merge_channels(heard);
        let merged: Vec<(f64, Option<u16>, &str)> = segments
            .iter()
            .map(|s| (s.start, s.channel, s.text.as_str()))
            .collect();
        assert_eq!(
            merged,
            vec![
                (0.5, Some(0), "Hello,"),
                (2.0, Some(1), "hi, how are you?"),
                (6.0, Some(0), "fine."),
                (6.0, Some(1), "Good."),
            ]
        );
        assert_eq!(
            detected.map(|d| d.probability),
            Some(0.9),
            "the first channel's"
        );
        let (mix, _) = merge_channels(vec![HeardChannel {
            channel: None,
            segments: vec![segment(1.0, 2.0, "a"), segment(2.0, 3.0, "b")],
            language: None,
        }]);
        assert!(
            mix.iter().all(|s| s.channel.is_none()),
            "the mix names no channel"
        );
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
