//! Analyze stage: checks the transcript's language against its text (whatlang), extracts its
//! key words and phrases (YAKE, with the stop words of the language), counts words, speech and
//! silence; writes the job's result.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use jetscribe_blobstore::BlobStore;
use jetscribe_nats::{JobContext, Outcome, StageError, StageHandler};
use proto_msgs::{
    AnalyzeRequest, JobBlobs, JobResult, LanguageDetection, LanguageSource, Segment, Task,
    TextLanguageCheck, Topic, Transcript, TranscriptStats,
};
use tracing::info;

/// Keywords kept per transcript.
const MAX_TOPICS: usize = 10;

/// The analyze stage.
pub struct Analyzer {
    blobs: BlobStore,
}

impl Analyzer {
    pub fn new(blobs: BlobStore) -> Self {
        Self { blobs }
    }
}

impl StageHandler for Analyzer {
    type Input = AnalyzeRequest;

    async fn handle(&self, input: AnalyzeRequest, job: &JobContext) -> Result<Outcome, StageError> {
        let transcript: Transcript = self
            .blobs
            .get_json(&input.transcript_blob)
            .await
            .map_err(|err| StageError::transient("reading the transcript", err))?;
        let language_detection = check_language(&transcript);
        // A translation is written in English, whatever the language spoken.
        let written_in = match transcript.task {
            Task::Transcribe => language_detection.language.clone(),
            Task::Translate => "en".to_owned(),
        };
        let topics = topics(&transcript.text, &written_in);
        let stats = stats(&transcript, &written_in);
        let result = JobResult {
            transcript: transcript.text,
            segments: transcript.segments,
            language_detection,
            topics,
            stats: Some(stats),
            duration_s: transcript.duration_s,
            model: transcript.model,
            task: transcript.task,
        };
        let result_blob = JobBlobs::result_path(input.job_id);
        self.blobs
            .put_json(&result_blob, &result)
            .await
            .map_err(|err| StageError::transient("storing the result", err))?;
        job.update("recording the result", |record| {
            record.blobs.result = Some(result_blob.clone());
        })
        .await?;
        let language = &result.language_detection.language;
        info!(%language, topics = result.topics.len(), "analyzed");
        Ok(Outcome::Forward)
    }
}

/// Below this, Whisper's language is a guess that the text may overrule.
const UNSURE_WHISPER_PROBABILITY: f64 = 0.5;

/// Languages written without spaces between words.
const WITHOUT_SPACES: &[&str] = &["zh", "ja", "th", "lo", "my", "yue"];

/// Whisper's language, checked against the text: whatlang's answer is recorded as `text_check`,
/// and replaces Whisper's only when whatlang is reliable and Whisper was unsure (or had no
/// answer, on silence). A language the user gave, or an English-only model's, is never
/// replaced; nor is the language of a translation (its text is English) checked.
pub fn check_language(transcript: &Transcript) -> LanguageDetection {
    let mut detection = transcript.language.clone();
    if transcript.task == Task::Translate {
        return detection;
    }
    let Some(info) = whatlang::detect(&transcript.text) else {
        return detection;
    };
    let check = TextLanguageCheck {
        language: iso639_1(info.lang()).to_owned(),
        confidence: round3(info.confidence()),
        reliable: info.is_reliable(),
    };
    let whisper_unsure = detection.source == LanguageSource::Whisper
        && (detection.language == "und" || detection.probability < UNSURE_WHISPER_PROBABILITY);
    if whisper_unsure && check.reliable && check.language != detection.language {
        detection.language = check.language.clone();
        detection.probability = check.confidence;
        detection.source = LanguageSource::Text;
    }
    detection.text_check = Some(check);
    detection
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Key words and phrases of `text` by YAKE (one to three words, stop words of `language`),
/// best first. YAKE scores lower for better; the score here is the best topic's YAKE score over
/// this one's, so 1 for the best and smaller for the others.
pub fn topics(text: &str, language: &str) -> Vec<Topic> {
    let stop_words = yake_rust::StopWords::predefined(language)
        .unwrap_or_else(|| yake_rust::StopWords::custom(stop_words_for(language)));
    let config = yake_rust::Config {
        ngrams: 3,
        ..yake_rust::Config::default()
    };
    let found = yake_rust::get_n_best(MAX_TOPICS, text, &stop_words, &config);
    let best = found
        .iter()
        .map(|item| item.score)
        .fold(f64::INFINITY, f64::min);
    found
        .into_iter()
        .map(|item| Topic {
            text: item.keyword.to_string(),
            score: if item.score > 0.0 && best.is_finite() {
                round3(best / item.score)
            } else {
                1.0
            },
        })
        .collect()
}

/// Words, pace, speech and silence of a transcript.
pub fn stats(transcript: &Transcript, language: &str) -> TranscriptStats {
    let words = if WITHOUT_SPACES.contains(&language) {
        transcript
            .text
            .chars()
            .filter(|c| c.is_alphanumeric())
            .count()
    } else {
        transcript
            .text
            .split_whitespace()
            .filter(|word| word.chars().any(char::is_alphanumeric))
            .count()
    } as u64;
    let speech_s = speech_seconds(&transcript.segments).min(transcript.duration_s.max(0.0));
    TranscriptStats {
        words,
        words_per_minute: if speech_s > 0.0 {
            round3(words as f64 / (speech_s / 60.0))
        } else {
            0.0
        },
        speech_s: round3(speech_s),
        silence_s: round3((transcript.duration_s - speech_s).max(0.0)),
    }
}

/// Seconds covered by at least one segment (segments never go back, but may touch).
fn speech_seconds(segments: &[Segment]) -> f64 {
    let mut total = 0.0;
    let mut covered_until = f64::NEG_INFINITY;
    for segment in segments {
        let start = segment.start.max(covered_until);
        if segment.end > start {
            total += segment.end - start;
        }
        covered_until = covered_until.max(segment.end);
    }
    total
}

/// Languages with a stop-word list in the `stop-words` crate (Stopwords ISO); its `get` panics on
/// any other code.
const STOP_WORD_LANGUAGES: &[&str] = &[
    "af", "ar", "bg", "bn", "br", "ca", "cs", "da", "de", "el", "en", "eo", "es", "et", "eu", "fa",
    "fi", "fr", "ga", "gl", "gu", "ha", "he", "hi", "hr", "hu", "hy", "id", "it", "ja", "ko", "ku",
    "la", "lt", "lv", "mr", "ms", "nl", "no", "pl", "pt", "ro", "ru", "sk", "sl", "so", "st", "sv",
    "sw", "th", "tl", "tr", "uk", "ur", "vi", "yo", "zh", "zu",
];

/// Stop words of `language` (ISO 639-1), parsed once per language.
fn stop_words_for(language: &str) -> HashSet<String> {
    static CACHE: OnceLock<Mutex<HashMap<String, HashSet<String>>>> = OnceLock::new();
    if !STOP_WORD_LANGUAGES.contains(&language) {
        return HashSet::new();
    }
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry(language.to_owned())
        .or_insert_with(|| stop_words::get(language).into_iter().collect())
        .clone()
}

/// whatlang names languages in ISO 639-3; the API speaks ISO 639-1 (ISO 639-3 where 639-1 has
/// none), with Whisper's names where they differ: whatlang's Mandarin, Iranian Persian and
/// Bokmål are Whisper's `zh`, `fa` and `no` (their macrolanguages).
fn iso639_1(lang: whatlang::Lang) -> &'static str {
    match lang {
        whatlang::Lang::Cmn => "zh",
        whatlang::Lang::Pes => "fa",
        whatlang::Lang::Nob => "no",
        _ => isolang::Language::from_639_3(lang.code())
            .and_then(|language| language.to_639_1())
            .unwrap_or(lang.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(text: &str, language: &str, probability: f64) -> Transcript {
        Transcript {
            text: text.to_owned(),
            segments: vec![
                Segment {
                    start: 1.0,
                    end: 4.0,
                    text: String::new(),
                    ..Segment::default()
                },
                Segment {
                    start: 3.0,
                    end: 7.0,
                    text: String::new(),
                    ..Segment::default()
                },
            ],
            language: LanguageDetection {
                language: language.to_owned(),
                probability,
                source: LanguageSource::Whisper,
                text_check: None,
            },
            duration_s: 10.0,
            model: "whisper-base".to_owned(),
            task: Task::Transcribe,
        }
    }

    const GERMAN: &str = "Für die besten Aussichten auf Hongkong sollten Sie die Insel verlassen \
                          und zum gegenüberliegenden Ufer von Kowloon fahren.";

    #[test]
    fn the_text_overrules_whisper_only_when_whisper_was_unsure() {
        let sure = check_language(&transcript(GERMAN, "nl", 0.9));
        assert_eq!(
            (sure.language.as_str(), sure.source),
            ("nl", LanguageSource::Whisper)
        );
        let check = sure.text_check.expect("text checked");
        assert_eq!(check.language, "de");
        assert!(check.reliable && check.confidence > 0.5, "{check:?}");

        let unsure = check_language(&transcript(GERMAN, "nl", 0.3));
        assert_eq!(
            (unsure.language.as_str(), unsure.source),
            ("de", LanguageSource::Text)
        );

        let mut given = transcript(GERMAN, "nl", 1.0);
        given.language.source = LanguageSource::User;
        assert_eq!(check_language(&given).language, "nl");
    }

    #[test]
    fn topics_are_key_phrases_best_first() {
        let text = "The central bank raised interest rates again. Interest rates now stand at \
                    five percent, and the central bank expects inflation to fall next year. \
                    Mortgage holders will feel the higher interest rates first.";
        let topics = topics(text, "en");
        let texts: Vec<&str> = topics.iter().map(|t| t.text.as_str()).collect();
        assert!(texts.contains(&"interest rates"), "{texts:?}");
        assert!(texts.contains(&"central bank"), "{texts:?}");
        assert!(
            !texts.iter().any(|t| ["the", "and", "will"].contains(t)),
            "{texts:?}"
        );
        assert_eq!(topics[0].score, 1.0);
        assert!(topics.windows(2).all(|pair| pair[0].score >= pair[1].score));
    }

    #[test]
    fn stats_count_words_speech_and_silence() {
        let stats = stats(
            &transcript("ask not what your country can do", "en", 0.9),
            "en",
        );
        // Segments 1–4 s and 3–7 s overlap: 6 s of speech in 10 s.
        assert_eq!(stats.words, 7);
        assert_eq!(stats.speech_s, 6.0);
        assert_eq!(stats.silence_s, 4.0);
        assert_eq!(stats.words_per_minute, 70.0);
    }

    #[test]
    fn whatlang_languages_are_named_as_whisper_names_them() {
        use whatlang::Lang;
        let cases = [
            (Lang::Eng, "en"),
            (Lang::Cmn, "zh"),
            (Lang::Pes, "fa"),
            (Lang::Nob, "no"),
            (Lang::Jpn, "ja"),
            (Lang::Heb, "he"),
        ];
        for (lang, code) in cases {
            assert_eq!(iso639_1(lang), code, "{lang:?}");
        }
        // Every language whatlang knows gets a code of two letters, or three without one.
        for lang in Lang::all() {
            let code = iso639_1(*lang);
            assert!(code.len() == 2 || code == lang.code(), "{lang:?} {code}");
        }
    }

    #[test]
    fn an_unlisted_language_still_gets_topics() {
        assert!(!topics("Պատմություն պատմություն գիրք", "xx").is_empty());
    }
}
