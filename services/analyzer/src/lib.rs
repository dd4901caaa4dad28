//! Analyze stage: checks the transcript's language against its text (whatlang) and extracts its
//! main keywords (word frequency, stop words of the language removed); writes the job's result.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use jetscribe_blobstore::BlobStore;
use jetscribe_nats::{JobContext, Outcome, Stage, StageError};
use proto_msgs::{
    AnalyzeRequest, JobBlobs, JobResult, LanguageDetection, NotifyRequest, Topic, Transcript,
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

impl Stage for Analyzer {
    type Input = AnalyzeRequest;

    async fn handle(&self, input: AnalyzeRequest, job: &JobContext) -> Result<Outcome, StageError> {
        let transcript: Transcript = self
            .blobs
            .get_json(&input.transcript_blob)
            .await
            .map_err(|err| StageError::transient("reading the transcript", err))?;
        let language_detection = check_language(&transcript);
        let topics = topics(&transcript.text, &language_detection.language);
        let result = JobResult {
            transcript: transcript.text,
            segments: transcript.segments,
            language_detection,
            topics,
            duration_s: transcript.duration_s,
            model: transcript.model,
        };
        let result_blob = JobBlobs::result_path(input.job_id);
        self.blobs
            .put_json(&result_blob, &result)
            .await
            .map_err(|err| StageError::transient("storing the result", err))?;
        job.jobs()
            .update(input.job_id, |record| {
                record.blobs.result = Some(result_blob.clone());
            })
            .await
            .map_err(|err| StageError::transient("recording the result", err))?;
        info!(language = %result.language_detection.language, topics = result.topics.len(), "analyzed");
        Outcome::forward(&NotifyRequest {
            job_id: input.job_id,
        })
    }
}

/// Whisper's answer stands unless it has none (silence, or a language Whisper could not name);
/// then the text decides when whatlang is reliable.
pub fn check_language(transcript: &Transcript) -> LanguageDetection {
    if transcript.language.language != "und" {
        return transcript.language.clone();
    }
    match whatlang::detect(&transcript.text) {
        Some(info) if info.is_reliable() => LanguageDetection {
            language: iso639_1(info.lang()).to_owned(),
            probability: (info.confidence() * 1000.0).round() / 1000.0,
            source: "text".to_owned(),
        },
        _ => transcript.language.clone(),
    }
}

/// The most frequent content words of `text`, best first, scored relative to the most frequent.
pub fn topics(text: &str, language: &str) -> Vec<Topic> {
    let stop_words = stop_words_for(language);
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for (position, word) in text
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
        .map(|word| {
            word.trim_matches(|c: char| c == '\'' || c == '-')
                .to_lowercase()
        })
        .filter(|word| word.chars().count() >= 3 && !word.chars().all(|c| c.is_numeric()))
        .enumerate()
    {
        if stop_words.contains(&word) {
            continue;
        }
        first_seen.entry(word.clone()).or_insert(position);
        *counts.entry(word).or_default() += 1;
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    // Ties go to the word that came first, so the order is stable.
    ranked.sort_by(|(a, count_a), (b, count_b)| {
        count_b
            .cmp(count_a)
            .then_with(|| first_seen[a].cmp(&first_seen[b]))
    });
    let top = ranked.first().map_or(1, |(_, count)| *count) as f64;
    ranked
        .into_iter()
        .take(MAX_TOPICS)
        .map(|(text, count)| Topic {
            text,
            score: (count as f64 / top * 1000.0).round() / 1000.0,
        })
        .collect()
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

/// whatlang names languages in ISO 639-3; the API speaks ISO 639-1.
fn iso639_1(lang: whatlang::Lang) -> &'static str {
    use whatlang::Lang::*;
    match lang {
        Epo => "eo",
        Eng => "en",
        Rus => "ru",
        Cmn => "zh",
        Spa => "es",
        Por => "pt",
        Ita => "it",
        Ben => "bn",
        Fra => "fr",
        Deu => "de",
        Ukr => "uk",
        Kat => "ka",
        Ara => "ar",
        Hin => "hi",
        Jpn => "ja",
        Heb => "he",
        Yid => "yi",
        Pol => "pl",
        Amh => "am",
        Jav => "jv",
        Kor => "ko",
        Nob => "no",
        Dan => "da",
        Swe => "sv",
        Fin => "fi",
        Tur => "tr",
        Nld => "nl",
        Hun => "hu",
        Ces => "cs",
        Ell => "el",
        Bul => "bg",
        Bel => "be",
        Mar => "mr",
        Kan => "kn",
        Ron => "ro",
        Slv => "sl",
        Hrv => "hr",
        Srp => "sr",
        Mkd => "mk",
        Lit => "lt",
        Lav => "lv",
        Est => "et",
        Tam => "ta",
        Vie => "vi",
        Urd => "ur",
        Tha => "th",
        Guj => "gu",
        Uzb => "uz",
        Pan => "pa",
        Aze => "az",
        Ind => "id",
        Tel => "te",
        Pes => "fa",
        Mal => "ml",
        Ori => "or",
        Mya => "my",
        Nep => "ne",
        Sin => "si",
        Khm => "km",
        Tuk => "tk",
        Aka => "ak",
        Zul => "zu",
        Sna => "sn",
        Afr => "af",
        Lat => "la",
        Slk => "sk",
        Cat => "ca",
        Tgl => "tl",
        Hye => "hy",
        Cym => "cy",
        #[allow(unreachable_patterns)]
        _ => lang.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_skip_stop_words_and_rank_by_frequency() {
        let text = "And so my fellow Americans, ask not what your country can do for you, \
                    ask what you can do for your country.";
        let topics = topics(text, "en");
        let words: Vec<&str> = topics.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(words.first(), Some(&"country"), "{words:?}");
        assert!(!words.contains(&"what"), "{words:?}");
        assert!(words.contains(&"americans"), "{words:?}");
        assert_eq!(topics[0].score, 1.0);
    }

    #[test]
    fn an_unlisted_language_still_gets_topics() {
        assert!(!topics("Պատմություն պատմություն գիրք", "xx").is_empty());
    }
}
