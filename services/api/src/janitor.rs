//! The janitor of a deployment, run by each API process: every sweep reads every job record
//! once and
//! - forgets the jobs that ended more than JOB_CLEANUP_DAYS ago: their files, events and record
//!   (a job still running is never touched, however old);
//! - finds the jobs that are lost: unfinished, their record unchanged for a while, and no stage
//!   message stored for them (queued, in flight or waiting), on two sweeps in a row; each is
//!   queued again from the stage after its last finished one, or failed with the reason once
//!   it has been lost [`MAX_REQUEUES`] times;
//! - removes job files that no record names any more, and staging files of dead uploads.
//!
//! Several API processes may sweep at once: a requeue is published under a message id of the
//! job's requeue count, so two janitors queue one message.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use jetscribe_blobstore::{BlobError, BlobStore};
use jetscribe_nats::{ErrorChain, Pipeline, PipelineError};
use proto_msgs::{JobBlobs, JobRecord, JobStatus, Stage};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

/// Times a lost job is queued again before it is failed.
pub const MAX_REQUEUES: u32 = 3;

/// An upload's staging file not written for this long belongs to an upload that died.
const STAGING_MAX_AGE: Duration = Duration::from_secs(3600);

/// How the janitor works.
#[derive(Debug, Clone, Copy)]
pub struct JanitorSettings {
    /// How long a job is kept after it ended (JOB_CLEANUP_DAYS).
    pub retention: Duration,
    /// How long an unfinished job's record may stay unchanged, with no message stored for it,
    /// before it is taken for lost (twice JOB_ACK_WAIT).
    pub lost_after: Duration,
}

impl JanitorSettings {
    /// Time between sweeps: often enough to keep retention within a quarter of itself and to
    /// find a lost job soon after `lost_after`, at most a minute, at least a second.
    pub fn period(&self) -> Duration {
        (self.retention / 4)
            .min(self.lost_after / 2)
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// How long after its cancellation a job's folder is emptied again at every sweep: a stage
/// that was writing a file for it when it was cancelled may add one after the API removed
/// them.
const CANCELLED_RECENTLY: Duration = Duration::from_secs(600);

/// What a sweep makes of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Keep,
    /// Cancelled a short while ago: remove whatever file a stage wrote since.
    RecentlyCancelled,
    /// Ended more than the retention ago: forget it.
    Expired,
    /// Unfinished and unchanged for `lost_after`: lost, unless a message is stored for it.
    Quiet,
}

/// What becomes of `record` at `now`.
pub fn fate(record: &JobRecord, now: OffsetDateTime, settings: &JanitorSettings) -> Fate {
    let age_of = |at: OffsetDateTime| (now - at).try_into().unwrap_or(Duration::ZERO);
    if record.status.is_final() {
        let ended = age_of(record.completed_at.unwrap_or(record.updated_at));
        return match ended >= settings.retention {
            true => Fate::Expired,
            false if record.status == JobStatus::Cancelled && ended < CANCELLED_RECENTLY => {
                Fate::RecentlyCancelled
            }
            false => Fate::Keep,
        };
    }
    match age_of(record.updated_at) >= settings.lost_after {
        true => Fate::Quiet,
        false => Fate::Keep,
    }
}

/// What is done with a lost job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    /// Queue this stage's message again.
    Requeue(Stage),
    /// Fail the job in this stage, with this reason.
    Fail(Stage, String),
}

/// How a lost job goes on: from the stage after the last one it finished.
pub fn remedy(record: &JobRecord) -> Remedy {
    let finished = |stage: &Stage| {
        record
            .stages
            .get(stage)
            .is_some_and(|run| run.finished_at.is_some())
    };
    let next = match Stage::ALL.iter().rev().find(|stage| finished(stage)) {
        Some(done) => done.next(),
        None => Some(Stage::FIRST),
    };
    let Some(stage) = next else {
        let last = Stage::ALL[Stage::ALL.len() - 1];
        return Remedy::Fail(
            last,
            "the job passed every stage but was never completed".into(),
        );
    };
    if record.requeues >= MAX_REQUEUES {
        let reason = format!(
            "the job was lost in {stage} and queued again {} times; giving up",
            record.requeues
        );
        return Remedy::Fail(stage, reason);
    }
    Remedy::Requeue(stage)
}

/// What one sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
struct SweepReport {
    forgotten: usize,
    requeued: usize,
    failed: usize,
    orphan_files: usize,
    /// Jobs that could not be handled (logged each).
    errors: usize,
}

/// A sweep stopped.
#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error("janitor")]
    Pipeline(#[from] PipelineError),
    #[error("janitor")]
    Blobs(#[from] BlobError),
}

/// Sweeps every [`JanitorSettings::period`] until `shutdown`.
pub async fn run_janitor(
    pipeline: Pipeline,
    blobs: BlobStore,
    settings: JanitorSettings,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(settings.period());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Jobs found quiet with no message by the last sweep, and their record's `updated_at`.
    let mut suspects = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match sweep(&pipeline, &blobs, &settings, &mut suspects).await {
            Ok(report) if report == SweepReport::default() => {}
            Ok(report) => info!(?report, "janitor sweep"),
            Err(err) => error!(error = %ErrorChain(&err), "janitor sweep failed"),
        }
        let store = blobs.clone();
        match tokio::task::spawn_blocking(move || store.sweep_staging(STAGING_MAX_AGE)).await {
            Ok(0) => {}
            Ok(removed) => info!(removed, "staging files of dead uploads removed"),
            Err(err) => error!(error = %err, "staging file sweep panicked"),
        }
    }
}

async fn sweep(
    pipeline: &Pipeline,
    blobs: &BlobStore,
    settings: &JanitorSettings,
    suspects: &mut HashMap<Uuid, OffsetDateTime>,
) -> Result<SweepReport, SweepError> {
    let now = OffsetDateTime::now_utc();
    let mut report = SweepReport::default();
    let (mut known, mut quiet) = (HashSet::new(), Vec::new());
    let mut by_state: HashMap<JobStatus, i64> = HashMap::new();
    let mut records = pipeline.scan_jobs().await?;
    while let Some(record) = records.next().await {
        // One record that cannot be read or handled must not stop the sweep of the others.
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                report.errors += 1;
                error!(error = %ErrorChain(&err), "unreadable job record skipped");
                continue;
            }
        };
        let job_id = record.job_id;
        let fate = fate(&record, now, settings);
        if fate != Fate::Expired {
            *by_state.entry(record.status).or_default() += 1;
        }
        let handled = match fate {
            Fate::Keep => {
                known.insert(job_id);
                Ok(())
            }
            Fate::RecentlyCancelled => {
                known.insert(job_id);
                finish_cancellation(pipeline, blobs, &record).await
            }
            Fate::Expired => forget(pipeline, blobs, job_id).await.map(|()| {
                report.forgotten += 1;
            }),
            Fate::Quiet => {
                known.insert(job_id);
                quiet.push(record);
                Ok(())
            }
        };
        if let Err(err) = handled {
            report.errors += 1;
            error!(%job_id, error = %ErrorChain(&err), "janitor could not handle a job");
        }
    }
    drop(records);
    record_jobs_by_state(&by_state);
    let queued = match quiet.is_empty() {
        true => HashSet::new(),
        false => pipeline.queued_jobs().await?,
    };
    let mut still_suspect = HashMap::new();
    for record in quiet.into_iter().filter(|r| !queued.contains(&r.job_id)) {
        // Quiet and without a message on the last sweep too, unchanged since: lost.
        if suspects.get(&record.job_id) != Some(&record.updated_at) {
            still_suspect.insert(record.job_id, record.updated_at);
            continue;
        }
        match recover(pipeline, &record).await {
            Ok(Recovered::Requeued) => report.requeued += 1,
            Ok(Recovered::Failed) => report.failed += 1,
            Ok(Recovered::MovedOn) => {}
            Err(err) => {
                report.errors += 1;
                let job_id = record.job_id;
                error!(%job_id, error = %ErrorChain(&err), "lost job not recovered");
            }
        }
    }
    *suspects = still_suspect;
    let named = |path: &str| job_of(path).is_some_and(|job_id| known.contains(&job_id));
    report.orphan_files = blobs
        .delete_older_than("jobs", settings.retention, named)
        .await?;
    Ok(report)
}

/// Sets `jetscribe_jobs{state}` to the counts of a sweep (0 for a state it did not see).
fn record_jobs_by_state(by_state: &HashMap<JobStatus, i64>) {
    let jobs = &jetscribe_metrics::metrics().jobs;
    for status in JobStatus::ALL {
        let label = jetscribe_metrics::StateLabel {
            state: status.name().to_owned(),
        };
        jobs.get_or_create(&label)
            .set(by_state.get(&status).copied().unwrap_or(0));
    }
}

/// What became of a lost job.
enum Recovered {
    Requeued,
    Failed,
    /// It moved on meanwhile: nothing to do.
    MovedOn,
}

/// Queues a lost job again, or fails it.
async fn recover(pipeline: &Pipeline, record: &JobRecord) -> Result<Recovered, PipelineError> {
    let job_id = record.job_id;
    let (stage, reason) = match remedy(record) {
        Remedy::Requeue(stage) => match pipeline.requeue(record, stage).await {
            Ok(Some(_)) => {
                warn!(%job_id, %stage, "lost job queued again");
                return Ok(Recovered::Requeued);
            }
            Ok(None) => return Ok(Recovered::MovedOn),
            Err(PipelineError::Input(err)) => (stage, format!("{stage} cannot resume: {err}")),
            Err(err) => return Err(err),
        },
        Remedy::Fail(stage, reason) => (stage, reason),
    };
    error!(%job_id, %stage, %reason, "lost job failed");
    pipeline.fail_lost_job(job_id, stage, reason).await?;
    Ok(Recovered::Failed)
}

/// Removes a finished job's files, events and record.
async fn forget(pipeline: &Pipeline, blobs: &BlobStore, job_id: Uuid) -> Result<(), SweepError> {
    blobs.delete_prefix(&JobBlobs::prefix(job_id)).await?;
    pipeline.forget_job(job_id).await?;
    Ok(())
}

/// What follows a recent cancellation, again: its files removed (a stage may have written one
/// as it stopped), its final event and webhook hand-over (idempotent: they may have been cut
/// short).
async fn finish_cancellation(
    pipeline: &Pipeline,
    blobs: &BlobStore,
    record: &JobRecord,
) -> Result<(), SweepError> {
    blobs
        .delete_prefix(&JobBlobs::prefix(record.job_id))
        .await?;
    pipeline.follow_up_cancellation(record).await?;
    Ok(())
}

/// The job a path under `jobs/` belongs to.
fn job_of(path: &str) -> Option<Uuid> {
    path.strip_prefix("jobs/")?.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_msgs::JobOptions;

    const SETTINGS: JanitorSettings = JanitorSettings {
        retention: Duration::from_secs(3600),
        lost_after: Duration::from_secs(120),
    };

    fn record(status: JobStatus, age_s: i64, finished: &[Stage], requeues: u32) -> JobRecord {
        let at = OffsetDateTime::UNIX_EPOCH;
        let mut record =
            JobRecord::new_pending(Uuid::nil(), "a.wav".into(), 1, JobOptions::default(), at);
        record.status = status;
        record.updated_at = at - time::Duration::seconds(age_s);
        if status.is_final() {
            record.completed_at = Some(record.updated_at);
        }
        for stage in finished {
            record.stage_run(*stage).finished_at = Some(at);
        }
        record.requeues = requeues;
        record
    }

    #[test]
    fn finished_jobs_expire_after_the_retention_and_unfinished_ones_never_do() {
        use JobStatus::{Cancelled, Completed, Failed, Pending, Processing};
        let cases = [
            (Cancelled, 60, Fate::RecentlyCancelled),
            (Cancelled, 3600, Fate::Expired),
            (Completed, 3599, Fate::Keep),
            (Completed, 3600, Fate::Expired),
            (Failed, 86_400, Fate::Expired),
            (Pending, 60, Fate::Keep),
            (Pending, 86_400, Fate::Quiet),
            (Processing, 120, Fate::Quiet),
        ];
        for (status, age_s, expected) in cases {
            let record = record(status, age_s, &[], 0);
            assert_eq!(
                fate(&record, OffsetDateTime::UNIX_EPOCH, &SETTINGS),
                expected,
                "{status:?}, {age_s} s"
            );
        }
    }

    #[test]
    fn a_lost_job_goes_on_from_the_stage_after_its_last_finished_one() {
        use Stage::{Analyze, Decode, Notify, Transcribe};
        let cases = [
            (vec![], 0, Remedy::Requeue(Decode)),
            (vec![Decode], 0, Remedy::Requeue(Transcribe)),
            (vec![Decode, Transcribe], 2, Remedy::Requeue(Analyze)),
            (
                vec![Decode, Transcribe, Analyze],
                0,
                Remedy::Requeue(Notify),
            ),
            (
                vec![Decode],
                3,
                Remedy::Fail(
                    Transcribe,
                    "the job was lost in transcribe and queued again 3 times; giving up".into(),
                ),
            ),
            (
                vec![Decode, Transcribe, Analyze, Notify],
                0,
                Remedy::Fail(
                    Notify,
                    "the job passed every stage but was never completed".into(),
                ),
            ),
        ];
        for (finished, requeues, expected) in cases {
            let record = record(JobStatus::Processing, 600, &finished, requeues);
            assert_eq!(
                remedy(&record),
                expected,
                "{finished:?}, {requeues} requeues"
            );
        }
    }

    #[test]
    fn sweeps_come_often_enough_for_the_shortest_limit() {
        let period = |retention_s: u64, lost_after_s: u64| {
            JanitorSettings {
                retention: Duration::from_secs(retention_s),
                lost_after: Duration::from_secs(lost_after_s),
            }
            .period()
            .as_secs()
        };
        assert_eq!(period(7 * 86_400, 120), 60);
        assert_eq!(period(26, 120), 6);
        assert_eq!(period(3600, 4), 2);
        assert_eq!(period(1, 1), 1);
    }

    #[test]
    fn job_files_are_known_by_their_folder() {
        let id = Uuid::nil();
        assert_eq!(job_of(&format!("jobs/{id}/input")), Some(id));
        assert_eq!(job_of("jobs/not-a-job/input"), None);
        assert_eq!(job_of("health"), None);
    }
}
