//! Job records in the `jetscribe_jobs` KV bucket. Every write is a compare-and-set on the entry's
//! revision, so concurrent writers (stages, API, retries) never lose each other's updates.

use async_nats::jetstream::kv;
use proto_msgs::{CodecError, JobRecord};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error_chain::BoxError;

/// A job record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    #[error("job {0} not found")]
    NotFound(Uuid),
    #[error("job {0} already exists")]
    AlreadyExists(Uuid),
    #[error("job {job_id}: too many concurrent updates ({attempts} compare-and-set conflicts)")]
    Contention { job_id: Uuid, attempts: u32 },
    #[error("job store")]
    Codec(#[from] CodecError),
    #[error("job store: {what}")]
    Kv {
        what: &'static str,
        #[source]
        source: BoxError,
    },
}

impl JobStoreError {
    pub(crate) fn kv(what: &'static str, source: impl Into<BoxError>) -> Self {
        JobStoreError::Kv {
            what,
            source: source.into(),
        }
    }
}

/// Compare-and-set conflicts tolerated in one update before giving up: far more than the handful
/// of writers one job ever has.
const MAX_UPDATE_ATTEMPTS: u32 = 1000;

/// Handle on the job bucket. Cheap to clone.
#[derive(Clone)]
pub struct JobStore {
    kv: kv::Store,
}

impl JobStore {
    pub(crate) fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// Stores a new record; fails if the job id is already taken.
    pub async fn create(&self, record: &JobRecord) -> Result<(), JobStoreError> {
        let bytes = proto_msgs::encode(record)?;
        match self
            .kv
            .create(record.job_id.to_string(), bytes.into())
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(JobStoreError::AlreadyExists(record.job_id))
            }
            Err(err) => Err(JobStoreError::kv("creating a record", err)),
        }
    }

    /// Removes a record (and its history): the job is as if it had never been submitted. The
    /// bucket's stream is purged of the key, so no delete marker is left behind (the bucket has
    /// no max age to expire one).
    pub async fn remove(&self, job_id: Uuid) -> Result<(), JobStoreError> {
        let subject = format!("{}{job_id}", self.kv.prefix);
        self.kv
            .stream
            .purge()
            .filter(subject)
            .await
            .map(drop)
            .map_err(|err| JobStoreError::kv("removing a record", err))
    }

    /// The record and its revision, or `None` for an unknown (or expired) job.
    async fn entry(&self, job_id: Uuid) -> Result<Option<(JobRecord, u64)>, JobStoreError> {
        let entry = self
            .kv
            .entry(job_id.to_string())
            .await
            .map_err(|err| JobStoreError::kv("reading a record", err))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                Ok(Some((proto_msgs::decode(&entry.value)?, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    pub async fn get(&self, job_id: Uuid) -> Result<Option<JobRecord>, JobStoreError> {
        Ok(self.entry(job_id).await?.map(|(record, _)| record))
    }

    /// Applies `change` to the current record and writes it back if nobody wrote in between;
    /// otherwise re-reads and applies `change` again. `change` must therefore be a pure function
    /// of the record it is given. Returns the record as written.
    pub async fn update<F>(&self, job_id: Uuid, mut change: F) -> Result<JobRecord, JobStoreError>
    where
        F: FnMut(&mut JobRecord),
    {
        let updated = self
            .update_if(job_id, |record| {
                change(record);
                true
            })
            .await?;
        Ok(updated.expect("an unconditional change is written"))
    }

    /// [`update`](Self::update) for a change that may not apply: `change` answers whether it
    /// changed the record; `None` when it did not (nothing is written).
    pub async fn update_if<F>(
        &self,
        job_id: Uuid,
        mut change: F,
    ) -> Result<Option<JobRecord>, JobStoreError>
    where
        F: FnMut(&mut JobRecord) -> bool,
    {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let (mut record, revision) = self
                .entry(job_id)
                .await?
                .ok_or(JobStoreError::NotFound(job_id))?;
            if !change(&mut record) {
                return Ok(None);
            }
            record.updated_at = OffsetDateTime::now_utc();
            let bytes = proto_msgs::encode(&record)?;
            match self
                .kv
                .update(job_id.to_string(), bytes.into(), revision)
                .await
            {
                Ok(_) => return Ok(Some(record)),
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(err) => return Err(JobStoreError::kv("updating a record", err)),
            }
        }
        Err(JobStoreError::Contention {
            job_id,
            attempts: MAX_UPDATE_ATTEMPTS,
        })
    }

    /// The bucket, for a scan of every record.
    pub(crate) fn bucket(&self) -> &kv::Store {
        &self.kv
    }
}
