//! Where a stage's messages wait. Most stages have one queue; the transcriber has one per Whisper
//! model (a pool), so that workers with a large model on GPUs and workers with a small one on
//! CPUs share one deployment and a job goes to the pool it asked for:
//! `jetscribe.pipeline.transcribe.<model>`, consumed by `jetscribe-transcribe-<model>`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::PIPELINE_SUBJECT_PREFIX;
use crate::stage::Stage;

/// The longest model name.
pub const MAX_MODEL_NAME: usize = 64;

/// The name of a Whisper model a deployment serves (`base`, `tiny.en`, `large-v3`): ASCII
/// letters, digits, `-` and `.`, starting and ending with a letter or digit, no `..`. It is a
/// part of a subject (where `.` separates tokens, so `tiny.en` is two) and, with `.` written
/// as `_`, of a consumer name (which allows no `.`); `_` is refused so that the two never map
/// two models to one consumer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

/// Why a model name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a model name is 1 to {MAX_MODEL_NAME} ASCII letters, digits, '-' and '.', starting and \
     ending with a letter or digit"
)]
pub struct InvalidModelName;

impl ModelName {
    pub fn parse(name: &str) -> Result<Self, InvalidModelName> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
        let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        let valid = !name.is_empty()
            && name.len() <= MAX_MODEL_NAME
            && name.chars().all(allowed)
            && ends_ok(name.chars().next())
            && ends_ok(name.chars().last())
            && !name.contains("..");
        match valid {
            true => Ok(Self(name.to_owned())),
            false => Err(InvalidModelName),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelName {
    type Error = InvalidModelName;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::parse(&name)
    }
}

impl From<ModelName> for String {
    fn from(name: ModelName) -> Self {
        name.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One queue of the pipeline: a stage's, or one model pool of a stage routed by model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Queue {
    pub stage: Stage,
    /// The model pool, for a stage routed by model.
    pub model: Option<ModelName>,
}

impl Queue {
    /// Where a message of `stage` for `model` waits: a stage routed by model goes to the pool
    /// of `model`, or of `default` when the job named none (a record from before routing);
    /// any other stage has one queue.
    pub fn for_message(stage: Stage, model: Option<&ModelName>, default: &ModelName) -> Self {
        let model = stage
            .is_routed_by_model()
            .then(|| model.unwrap_or(default).clone());
        Self { stage, model }
    }

    /// The subject: `jetscribe.pipeline.<stage>`, `jetscribe.pipeline.<stage>.<model>` for a
    /// pool.
    pub fn subject(&self) -> String {
        match &self.model {
            None => self.stage.subject(),
            Some(model) => format!("{PIPELINE_SUBJECT_PREFIX}.{}.{model}", self.stage.name()),
        }
    }

    /// The durable consumer every process of this queue shares: `jetscribe-<stage>`,
    /// `jetscribe-<stage>-<model>` for a pool (`.` written as `_`).
    pub fn consumer_name(&self) -> String {
        match &self.model {
            None => self.stage.consumer_name(),
            Some(model) => format!(
                "{}{}",
                pool_consumer_prefix(self.stage),
                model.as_str().replace('.', "_")
            ),
        }
    }

    /// The pool a consumer of `stage` serves, read from the consumer's filter subject; `None`
    /// when it is no pool of `stage`.
    pub fn pool_of(stage: Stage, filter_subject: &str) -> Option<ModelName> {
        let prefix = format!("{PIPELINE_SUBJECT_PREFIX}.{}.", stage.name());
        let model = filter_subject.strip_prefix(&prefix)?;
        ModelName::parse(model).ok()
    }
}

/// The start of the consumer names of `stage`'s pools.
pub fn pool_consumer_prefix(stage: Stage) -> String {
    format!("{}-", stage.consumer_name())
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.model {
            None => write!(f, "{}", self.stage),
            Some(model) => write!(f, "{} ({model})", self.stage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_are_checked_for_subjects_and_consumer_names() {
        let cases = [
            ("base", true),
            ("tiny.en", true),
            ("large-v3", true),
            ("distil-large-v3.5", true),
            ("Systran.faster-whisper", true),
            ("", false),
            (".en", false),
            ("tiny.", false),
            ("tiny..en", false),
            ("tiny_en", false),
            ("tiny en", false),
            ("tiny*", false),
            ("tiny>", false),
            ("-base", false),
            ("bäse", false),
            ("../models", false),
        ];
        for (name, valid) in cases {
            assert_eq!(ModelName::parse(name).is_ok(), valid, "{name:?}");
        }
        let longest = "a".repeat(MAX_MODEL_NAME);
        assert!(ModelName::parse(&longest).is_ok());
        assert!(ModelName::parse(&format!("{longest}a")).is_err());
    }

    #[test]
    fn a_transcription_goes_to_its_models_pool_and_other_stages_to_their_queue() {
        let base = ModelName::parse("base").expect("valid");
        let tiny = ModelName::parse("tiny.en").expect("valid");
        let cases = [
            (
                Stage::Transcribe,
                Some(&tiny),
                "jetscribe.pipeline.transcribe.tiny.en",
                "jetscribe-transcribe-tiny_en",
            ),
            (
                Stage::Transcribe,
                None,
                "jetscribe.pipeline.transcribe.base",
                "jetscribe-transcribe-base",
            ),
            (
                Stage::Decode,
                Some(&tiny),
                "jetscribe.pipeline.decode",
                "jetscribe-decode",
            ),
            (
                Stage::Notify,
                None,
                "jetscribe.pipeline.notify",
                "jetscribe-notify",
            ),
        ];
        for (stage, model, subject, consumer) in cases {
            let queue = Queue::for_message(stage, model, &base);
            assert_eq!(queue.subject(), subject, "{stage} {model:?}");
            assert_eq!(queue.consumer_name(), consumer, "{stage} {model:?}");
            assert_eq!(
                Queue::pool_of(stage, &queue.subject()),
                queue.model,
                "{stage} {model:?}"
            );
        }
    }

    #[test]
    fn a_consumer_names_its_pool_only_by_a_subject_below_its_stage() {
        let cases = [
            ("jetscribe.pipeline.transcribe.tiny.en", Some("tiny.en")),
            ("jetscribe.pipeline.transcribe", None),
            ("jetscribe.pipeline.transcribe.*", None),
            ("jetscribe.pipeline.decode.base", None),
        ];
        for (subject, pool) in cases {
            let found = Queue::pool_of(Stage::Transcribe, subject);
            assert_eq!(found.as_ref().map(ModelName::as_str), pool, "{subject}");
        }
    }

    #[test]
    fn a_model_name_on_the_wire_is_checked_when_read() {
        let read: Result<ModelName, _> = serde_json::from_str("\"tiny.en\"");
        assert_eq!(read.expect("read").as_str(), "tiny.en");
        let refused: Result<ModelName, _> = serde_json::from_str("\"a b\"");
        assert!(refused.is_err());
    }
}
