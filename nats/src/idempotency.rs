//! Idempotency keys of submissions: a client's `Idempotency-Key` (per API key) names the job it
//! created for 24 hours, so that a client that submits again (its answer lost) gets the same job
//! instead of a second upload and a second transcription.

use async_nats::jetstream::kv;
use uuid::Uuid;

use crate::JobStoreError;

/// Handle on the idempotency bucket. Cheap to clone.
#[derive(Clone)]
pub struct IdempotencyKeys {
    kv: kv::Store,
}

impl IdempotencyKeys {
    pub(crate) fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// The job created under `key` (a bucket key: `[-_=.a-zA-Z0-9]`) within 24 h, if any.
    pub async fn job_for(&self, key: &str) -> Result<Option<Uuid>, JobStoreError> {
        let value = self
            .kv
            .get(key)
            .await
            .map_err(|err| JobStoreError::kv("reading an idempotency key", err))?;
        Ok(value.and_then(|bytes| std::str::from_utf8(&bytes).ok()?.parse().ok()))
    }

    /// Records that `key` created `job_id`. The first job recorded under a key wins: returns the
    /// job the key names from now on.
    pub async fn remember(&self, key: &str, job_id: Uuid) -> Result<Uuid, JobStoreError> {
        match self.kv.create(key, job_id.to_string().into()).await {
            Ok(_) => Ok(job_id),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                Ok(self.job_for(key).await?.unwrap_or(job_id))
            }
            Err(err) => Err(JobStoreError::kv("storing an idempotency key", err)),
        }
    }
}
