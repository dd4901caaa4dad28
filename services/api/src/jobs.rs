//! `GET /jobs` (the caller's jobs, newest first, a page at a time) and `GET /jobs/processing`
//! (the caller's jobs still running). Both walk the submissions index and read one job record at
//! a time, so neither holds every record in memory. `GET /jobs/{id}`: one job as `/status`
//! shows it and, for an admin, the message the pipeline gave up on (its dead letter).

use futures::StreamExt;
use jetscribe_nats::{Cancellation, ErrorChain, JobStoreError, PipelineError, Submitters};
use poem::Response;
use poem::http::StatusCode;
use proto_msgs::{JobBlobs, JobRecord, JobStatus};
use tracing::error;

use crate::views::{ActiveJobs, DeadLetterView, JobDetail, JobPage, JobStatusView, JobSummary};
use crate::{ApiError, ApiState, Caller, json_response, load_record, parse_job_id};

/// Jobs per page of `GET /jobs` unless `limit` says otherwise, and the most it may say.
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;
/// The most jobs `/jobs/processing` lists (the newest).
const MAX_ACTIVE_LISTED: usize = 1000;
/// The most index entries one request looks at (one job record read each): a page that is not
/// full by then ends there, with a cursor to go on from.
const MAX_SCANNED: usize = 10_000;

/// `GET /jobs/{id}`.
pub(crate) async fn job_detail(
    state: &ApiState,
    caller: &Caller,
    job_id: &str,
) -> Result<Response, ApiError> {
    let record = load_record(state, caller, parse_job_id(job_id)?).await?;
    let dead_letter = match caller.is_admin() {
        true => Some(
            state
                .pipeline
                .dead_letter(record.job_id)
                .await
                .map_err(|err| ApiError::unavailable("dead-letter stream", &err))?,
        ),
        false => None,
    };
    let detail = JobDetail {
        status: JobStatusView::from(&record),
        dead_letter: dead_letter
            .as_ref()
            .map(|letter| letter.as_ref().map(DeadLetterView::from)),
    };
    Ok(json_response(StatusCode::OK, &detail))
}

/// `DELETE /jobs/{id}`: cancels a pending or running job and removes its files; 200 with the
/// job as `/status` shows it (again for a job already cancelled), 409 for one that has already
/// completed or failed.
pub(crate) async fn cancel_job(
    state: &ApiState,
    caller: &Caller,
    job_id: &str,
) -> Result<Response, ApiError> {
    let record = load_record(state, caller, parse_job_id(job_id)?).await?;
    let cancelled = match state.pipeline.cancel_job(record.job_id).await {
        Err(PipelineError::JobStore(JobStoreError::NotFound(_))) => {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "Job not found"));
        }
        cancelled => cancelled.map_err(|err| ApiError::unavailable("job store", &err))?,
    };
    let record = match cancelled {
        Cancellation::Cancelled(record) | Cancellation::AlreadyCancelled(record) => record,
        Cancellation::AlreadyEnded(record) => {
            let status = if record.status == JobStatus::Completed {
                "completed"
            } else {
                "failed"
            };
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "job {}: already {status}, it cannot be cancelled",
                    record.job_id
                ),
            ));
        }
    };
    // A stage that was writing a file for it may add one after this; the janitor removes the
    // files of recently cancelled jobs again.
    let prefix = JobBlobs::prefix(record.job_id);
    if let Err(err) = state.blobs.delete_prefix(&prefix).await {
        error!(job_id = %record.job_id, error = %ErrorChain(&err), "cancelled job's files not removed");
    }
    Ok(json_response(StatusCode::OK, &JobStatusView::from(&record)))
}

/// `?status=&limit=&cursor=` of `GET /jobs`.
#[derive(Debug, Default)]
pub(crate) struct JobsQuery {
    pub status: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A checked [`JobsQuery`].
#[derive(Debug, PartialEq)]
struct JobsFilter {
    status: Option<JobStatus>,
    limit: usize,
    before: Option<u64>,
}

impl JobsFilter {
    fn parse(query: &JobsQuery) -> Result<Self, String> {
        let status = match query.status.as_deref().map(str::trim) {
            None | Some("") => None,
            Some("pending") => Some(JobStatus::Pending),
            Some("processing") => Some(JobStatus::Processing),
            Some("completed") => Some(JobStatus::Completed),
            Some("failed") => Some(JobStatus::Failed),
            Some("cancelled") => Some(JobStatus::Cancelled),
            Some(other) => {
                return Err(format!(
                    "status: expected pending, processing, completed, failed or cancelled, got \
                     {other:?}"
                ));
            }
        };
        let limit = match query.limit.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_PAGE,
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|limit| (1..=MAX_PAGE).contains(limit))
                .ok_or_else(|| format!("limit: expected 1 to {MAX_PAGE}, got {raw:?}"))?,
        };
        let before = match query.cursor.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(raw.parse().map_err(|_| {
                format!("cursor: expected the next_cursor of an earlier page, got {raw:?}")
            })?),
        };
        Ok(Self {
            status,
            limit,
            before,
        })
    }
}

/// Whose submissions `caller` lists.
fn submitters(caller: &Caller) -> Submitters<'_> {
    match caller {
        Caller::Anonymous | Caller::Key { admin: true, .. } => Submitters::Everyone,
        Caller::Key { name, .. } => Submitters::Only(Some(name)),
    }
}

fn index_unavailable(err: &PipelineError) -> ApiError {
    ApiError::unavailable("job index", err)
}

/// `GET /jobs`: `{jobs: [...], next_cursor}`, newest first; `next_cursor` (absent on the last
/// page) is passed as `cursor` for the next page.
pub(crate) async fn list_jobs(
    state: &ApiState,
    caller: &Caller,
    query: JobsQuery,
) -> Result<Response, ApiError> {
    let filter = JobsFilter::parse(&query)
        .map_err(|detail| ApiError::new(StatusCode::BAD_REQUEST, detail))?;
    let index = state
        .pipeline
        .submissions_newest_first(submitters(caller), filter.before);
    let mut index = std::pin::pin!(index.await.map_err(|err| index_unavailable(&err))?);
    let (mut page, mut next_cursor) = (Vec::new(), None);
    let mut scanned = 0;
    while let Some(indexed) = index.next().await {
        let indexed = indexed.map_err(|err| index_unavailable(&err))?;
        scanned += 1;
        let record = visible_record(state, caller, indexed.job_id).await?;
        if let Some(record) = record
            && filter.status.is_none_or(|status| record.status == status)
        {
            page.push(record);
        }
        if page.len() == filter.limit || scanned == MAX_SCANNED {
            next_cursor = Some(indexed.sequence.to_string());
            break;
        }
    }
    let body = JobPage {
        jobs: page.iter().map(JobSummary::from).collect(),
        next_cursor,
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// The record of an indexed job, unless it has expired or is not the caller's.
async fn visible_record(
    state: &ApiState,
    caller: &Caller,
    job_id: uuid::Uuid,
) -> Result<Option<JobRecord>, ApiError> {
    let record = state.pipeline.jobs().get(job_id).await;
    let record = record.map_err(|err| ApiError::unavailable("job store", &err))?;
    Ok(record.filter(|record| caller.may_see(record.owner.as_deref())))
}

/// `GET /jobs/processing`: the caller's pending and processing jobs among its newest
/// [`MAX_SCANNED`] (at most [`MAX_ACTIVE_LISTED`]), oldest first, and the queues of the stages.
pub(crate) async fn active_jobs(state: &ApiState, caller: &Caller) -> Result<Response, ApiError> {
    let index = state
        .pipeline
        .submissions_newest_first(submitters(caller), None);
    let index = std::pin::pin!(index.await.map_err(|err| index_unavailable(&err))?);
    let mut active = Vec::new();
    let mut index = index.take(MAX_SCANNED);
    while let Some(indexed) = index.next().await {
        let indexed = indexed.map_err(|err| index_unavailable(&err))?;
        let Some(record) = visible_record(state, caller, indexed.job_id).await? else {
            continue;
        };
        if !record.status.is_final() {
            active.push(record);
        }
        if active.len() == MAX_ACTIVE_LISTED {
            break;
        }
    }
    active.sort_by_key(|record| record.created_at);
    let stages = match state.pipeline.queues().await {
        Ok(queues) => Some(queues),
        Err(err) => {
            error!(error = %ErrorChain(&err), "queue statistics unavailable");
            None
        }
    };
    let body = ActiveJobs {
        count: active.len(),
        jobs: active.iter().map(JobSummary::from).collect(),
        stages,
    };
    Ok(json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(status: Option<&str>, limit: Option<&str>, cursor: Option<&str>) -> JobsQuery {
        JobsQuery {
            status: status.map(str::to_owned),
            limit: limit.map(str::to_owned),
            cursor: cursor.map(str::to_owned),
        }
    }

    #[test]
    fn job_listing_queries_are_checked_and_name_the_bad_parameter() {
        let cases = [
            (query(None, None, None), Ok((None, DEFAULT_PAGE, None))),
            (
                query(Some("failed"), Some("5"), Some("42")),
                Ok((Some(JobStatus::Failed), 5, Some(42))),
            ),
            (query(Some("done"), None, None), Err("status: ")),
            (query(None, Some("0"), None), Err("limit: ")),
            (query(None, Some("101"), None), Err("limit: ")),
            (query(None, None, Some("page-2")), Err("cursor: ")),
        ];
        for (query, expected) in cases {
            let parsed = JobsFilter::parse(&query);
            match (parsed, expected) {
                (Ok(filter), Ok((status, limit, before))) => {
                    assert_eq!(
                        filter,
                        JobsFilter {
                            status,
                            limit,
                            before
                        }
                    );
                }
                (Err(detail), Err(prefix)) => assert!(detail.starts_with(prefix), "{detail}"),
                (parsed, expected) => panic!("{query:?}: {parsed:?}, expected {expected:?}"),
            }
        }
    }
}
