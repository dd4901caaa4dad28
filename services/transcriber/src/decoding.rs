//! The decisions of the decoding loop, as faster-whisper and openai-whisper make them: when a
//! window's decoding is a failure to retry at a higher temperature (it repeats itself: its text
//! compresses too well; or the model is unsure: a low mean log-probability), which attempt to
//! keep when every temperature failed, when a window is silence whose text is dropped (the
//! `<|nospeech|>` probability is high and the text unsure: Whisper's "Thank you for watching."
//! over music), and when the text decoded carries over as the next window's prompt.

use std::io::Write as _;

/// How windows are decoded. The defaults are faster-whisper's, except that windows are not
/// conditioned on the previous text (as in its batched mode): see
/// `condition_on_previous_text`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodingOptions {
    /// Beam width at temperature 0 (WHISPER_BEAM_SIZE).
    pub beam_size: usize,
    /// Samples drawn at each temperature above 0, the best kept (WHISPER_BEST_OF).
    pub best_of: usize,
    /// Temperatures tried in order while a decoding fails (WHISPER_TEMPERATURES).
    pub temperatures: Vec<f32>,
    /// A decoding whose text's gzip compression ratio is above this repeats itself
    /// (WHISPER_COMPRESSION_RATIO_THRESHOLD).
    pub compression_ratio_threshold: Option<f64>,
    /// A decoding whose mean log-probability per token is below this failed
    /// (WHISPER_LOG_PROB_THRESHOLD).
    pub log_prob_threshold: Option<f64>,
    /// A window whose `<|nospeech|>` probability is above this, and whose decoding is unsure,
    /// is silence (WHISPER_NO_SPEECH_THRESHOLD).
    pub no_speech_threshold: Option<f64>,
    /// The text decoded before a window is its prompt (WHISPER_CONDITION_ON_PREVIOUS_TEXT).
    /// The windows of a batch are then decoded one at a time: slower (faster-whisper's
    /// sequential mode); off, they are decoded at once (its batched mode, which does not
    /// condition either).
    pub condition_on_previous_text: bool,
    /// After a decoding that needed a temperature above this, the next window starts without
    /// the previous text (WHISPER_PROMPT_RESET_ON_TEMPERATURE).
    pub prompt_reset_on_temperature: f32,
}

impl Default for DecodingOptions {
    fn default() -> Self {
        Self {
            beam_size: 5,
            best_of: 5,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            log_prob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: false,
            prompt_reset_on_temperature: 0.5,
        }
    }
}

/// How one decoding of a window went.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DecodeScore {
    /// Mean log-probability per generated token.
    pub avg_logprob: f64,
    /// Length of the text over its zlib-compressed length.
    pub compression_ratio: f64,
    /// Probability of `<|nospeech|>` at the first step.
    pub no_speech_prob: f64,
    pub temperature: f32,
}

/// The mean log-probability of `tokens` generated tokens from CTranslate2's score (the
/// cumulative log-probability divided by the length, length penalty 1), counted as
/// faster-whisper counts it: over the tokens and the end of text.
pub fn avg_logprob(score: f32, tokens: usize) -> f64 {
    f64::from(score) * tokens as f64 / (tokens + 1) as f64
}

/// How well `text` compresses: repeated text compresses well (faster-whisper: zlib, default
/// level).
pub fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let compressed = encoder
        .write_all(text.as_bytes())
        .and_then(|()| encoder.finish())
        .map_or(text.len(), |bytes| bytes.len());
    text.len() as f64 / compressed.max(1) as f64
}

impl DecodingOptions {
    /// The decoding failed and the next temperature is to be tried: it repeats itself or is
    /// unsure, unless it is unsure because the window is silence.
    pub fn needs_fallback(&self, score: &DecodeScore) -> bool {
        let repeats = self
            .compression_ratio_threshold
            .is_some_and(|limit| score.compression_ratio > limit);
        let unsure = self.is_unsure(score);
        let silence = unsure
            && self
                .no_speech_threshold
                .is_some_and(|limit| score.no_speech_prob > limit);
        (repeats || unsure) && !silence
    }

    /// The window is silence: its text is dropped.
    pub fn is_silence(&self, score: &DecodeScore) -> bool {
        self.no_speech_threshold
            .is_some_and(|limit| score.no_speech_prob > limit)
            && (self.log_prob_threshold.is_none() || self.is_unsure(score))
    }

    /// Of attempts that all failed, the one to keep: the surest of those that do not repeat
    /// themselves, else the surest of all.
    pub fn best_attempt(&self, attempts: &[DecodeScore]) -> usize {
        let not_repeating = |score: &DecodeScore| {
            self.compression_ratio_threshold
                .is_none_or(|limit| score.compression_ratio <= limit)
        };
        let surest = |only_not_repeating: bool| {
            attempts
                .iter()
                .enumerate()
                .filter(|(_, score)| !only_not_repeating || not_repeating(score))
                .max_by(|a, b| a.1.avg_logprob.total_cmp(&b.1.avg_logprob))
                .map(|(index, _)| index)
        };
        surest(true).or_else(|| surest(false)).unwrap_or(0)
    }

    /// The text of a window decoded at `temperature` carries over as the next window's prompt.
    pub fn carries_prompt(&self, temperature: f32) -> bool {
        self.condition_on_previous_text && temperature <= self.prompt_reset_on_temperature
    }

    /// These options as a job changes them: its first `temperature` (then the configured
    /// temperatures above it, for the fallback) and its `beam_size`.
    pub fn for_job(&self, temperature: Option<f32>, beam_size: Option<usize>) -> Self {
        let mut options = self.clone();
        if let Some(first) = temperature {
            options.temperatures = std::iter::once(first)
                .chain(self.temperatures.iter().copied().filter(|t| *t > first))
                .collect();
        }
        if let Some(beam_size) = beam_size {
            options.beam_size = beam_size;
        }
        options
    }

    fn is_unsure(&self, score: &DecodeScore) -> bool {
        self.log_prob_threshold
            .is_some_and(|limit| score.avg_logprob < limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(avg_logprob: f64, compression_ratio: f64, no_speech_prob: f64) -> DecodeScore {
        DecodeScore {
            avg_logprob,
            compression_ratio,
            no_speech_prob,
            temperature: 0.0,
        }
    }

    #[test]
    fn a_decoding_is_retried_when_it_repeats_itself_or_is_unsure_unless_silent() {
        let options = DecodingOptions::default();
        let cases = [
            // (avg logprob, compression ratio, no-speech prob, retried, silence)
            (-0.3, 1.6, 0.01, false, false),
            (-0.3, 3.1, 0.01, true, false),
            (-1.4, 1.6, 0.01, true, false),
            // Unsure and probably no speech: silence, not retried.
            (-1.4, 1.6, 0.9, false, true),
            // Sure of itself despite the no-speech token: kept.
            (-0.2, 1.6, 0.9, false, false),
            // Repeating, unsure and silent: silence.
            (-1.4, 3.1, 0.9, false, true),
        ];
        for (logprob, ratio, no_speech, retried, silence) in cases {
            let s = score(logprob, ratio, no_speech);
            assert_eq!(options.needs_fallback(&s), retried, "{s:?}");
            assert_eq!(options.is_silence(&s), silence, "{s:?}");
        }
        let off = DecodingOptions {
            compression_ratio_threshold: None,
            log_prob_threshold: None,
            no_speech_threshold: None,
            ..DecodingOptions::default()
        };
        assert!(!off.needs_fallback(&score(-5.0, 9.0, 0.99)));
        assert!(!off.is_silence(&score(-5.0, 9.0, 0.99)));
    }

    #[test]
    fn when_every_temperature_failed_the_surest_attempt_that_does_not_repeat_is_kept() {
        let options = DecodingOptions::default();
        let attempts = [
            score(-0.5, 3.0, 0.0),
            score(-1.5, 2.0, 0.0),
            score(-1.2, 2.2, 0.0),
        ];
        assert_eq!(options.best_attempt(&attempts), 2);
        let all_repeat = [score(-0.9, 3.0, 0.0), score(-0.5, 4.0, 0.0)];
        assert_eq!(options.best_attempt(&all_repeat), 1);
        assert_eq!(options.best_attempt(&[]), 0);
    }

    #[test]
    fn the_previous_text_is_a_prompt_unless_the_decoding_ran_hot() {
        let options = DecodingOptions {
            condition_on_previous_text: true,
            ..DecodingOptions::default()
        };
        assert!(options.carries_prompt(0.0) && options.carries_prompt(0.4));
        assert!(!options.carries_prompt(0.6));
        let unconditioned = DecodingOptions::default();
        assert!(!unconditioned.carries_prompt(0.0));
    }

    #[test]
    fn a_jobs_temperature_comes_first_and_the_hotter_ones_configured_follow() {
        let options = DecodingOptions::default();
        let cases: [(Option<f32>, &[f32]); 4] = [
            (None, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
            (Some(0.0), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
            (Some(0.5), &[0.5, 0.6, 0.8, 1.0]),
            (Some(1.0), &[1.0]),
        ];
        for (temperature, expected) in cases {
            let job = options.for_job(temperature, None);
            assert_eq!(job.temperatures, expected, "{temperature:?}");
            assert_eq!(job.beam_size, 5);
        }
        assert_eq!(options.for_job(None, Some(2)).beam_size, 2);
    }

    #[test]
    fn repeated_text_compresses_better_than_speech() {
        let speech = "And so my fellow Americans, ask not what your country can do for you.";
        let loop_text = "I'm sorry. ".repeat(20);
        assert!(
            compression_ratio(speech) < 1.5,
            "{}",
            compression_ratio(speech)
        );
        assert!(compression_ratio(&loop_text) > 2.4);
        assert_eq!(compression_ratio(""), 0.0);
        assert!((avg_logprob(-0.5, 9) - -0.45).abs() < 1e-9);
    }
}
