//! The Whisper models a job may name: the transcriber's pools, one per model, declared by the
//! processes started with that model (WHISPER_MODELS) and kept while no transcriber runs (an
//! autoscaler may have scaled the pool to zero). `GET /models` lists them with their queues; a
//! submission naming a model no pool serves is refused with the list.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jetscribe_nats::{Pipeline, StageQueue};
use poem::http::StatusCode;
use proto_msgs::ModelName;

use crate::views::{ModelPool, ModelsView};
use crate::{ApiError, ApiState, json_response};

/// How long a list of pools is trusted for accepting a job.
const KEPT: Duration = Duration::from_secs(5);
/// How soon after a read the pools are read again to refuse a job: a pool declared a moment
/// ago is seen, and a client naming unknown models in a loop costs one read a second.
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// The pools last read, shared by every request.
#[derive(Debug, Default)]
pub(crate) struct ServedModels {
    read: Mutex<Option<(Instant, Vec<ModelName>)>>,
}

impl ServedModels {
    /// Whether `model` is served: from the pools read within [`KEPT`]; else (or when it is not
    /// among them) read again, at most once per [`REREAD_AFTER`].
    pub(crate) async fn check(
        &self,
        pipeline: &Pipeline,
        model: &ModelName,
    ) -> Result<(), ApiError> {
        let age = self.age();
        if age.is_some_and(|age| age < KEPT) && self.knows(model) {
            return Ok(());
        }
        if age.is_none_or(|age| age >= REREAD_AFTER) {
            self.read_again(pipeline).await?;
        }
        match self.knows(model) {
            true => Ok(()),
            false => Err(not_served(model, &self.names())),
        }
    }

    pub(crate) async fn read_again(
        &self,
        pipeline: &Pipeline,
    ) -> Result<Vec<StageQueue>, ApiError> {
        let pools = pipeline
            .model_pools()
            .await
            .map_err(|err| ApiError::unavailable("the list of models", &err))?;
        let names = pools.iter().filter_map(|pool| pool.model.clone()).collect();
        *self.read.lock().expect("not poisoned") = Some((Instant::now(), names));
        Ok(pools)
    }

    /// The served models: as read within [`REREAD_AFTER`], else read again.
    pub(crate) async fn served(&self, pipeline: &Pipeline) -> Result<Vec<ModelName>, ApiError> {
        if self.age().is_none_or(|age| age >= REREAD_AFTER) {
            self.read_again(pipeline).await?;
        }
        Ok(self.names())
    }

    fn age(&self) -> Option<Duration> {
        let read = self.read.lock().expect("not poisoned");
        read.as_ref().map(|(at, _)| at.elapsed())
    }

    fn knows(&self, model: &ModelName) -> bool {
        self.names().contains(model)
    }

    fn names(&self) -> Vec<ModelName> {
        let read = self.read.lock().expect("not poisoned");
        read.as_ref()
            .map(|(_, names)| names.clone())
            .unwrap_or_default()
    }
}

/// 422 naming the models that are served.
fn not_served(model: &ModelName, served: &[ModelName]) -> ApiError {
    let served: Vec<&str> = served.iter().map(ModelName::as_str).collect();
    let listed = match served.is_empty() {
        true => "none".to_owned(),
        false => served.join(", "),
    };
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("model: no transcriber pool for \"{model}\"; served models: {listed}"),
    )
}

/// `GET /models`: the models served, the default first, each with its queue.
pub(crate) async fn list_models(state: &ApiState) -> Result<poem::Response, ApiError> {
    let pools = state.models.read_again(&state.pipeline).await?;
    let default = &state.pipeline.settings().default_model;
    let mut models: Vec<ModelPool> = pools
        .into_iter()
        .filter_map(|pool| {
            Some(ModelPool {
                default: pool.model.as_ref() == Some(default),
                name: pool.model?,
                queued: pool.pending,
                in_progress: pool.in_progress,
                idle_workers: pool.waiting_workers,
            })
        })
        .collect();
    models.sort_by_key(|pool| (!pool.default, pool.name.clone()));
    let body = ModelsView {
        default: default.clone(),
        models,
    };
    Ok(json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_not_served_is_refused_with_the_served_ones() {
        let name = |n: &str| ModelName::parse(n).expect("valid");
        let cases = [
            (
                vec![],
                "model: no transcriber pool for \"large-v3\"; served models: none",
            ),
            (
                vec![name("base"), name("tiny.en")],
                "model: no transcriber pool for \"large-v3\"; served models: base, tiny.en",
            ),
        ];
        for (served, detail) in cases {
            let refused = not_served(&name("large-v3"), &served);
            assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(refused.detail, detail);
        }
    }
}
