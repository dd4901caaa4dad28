//! The submissions index: one small message per job on `jetscribe.submissions.<owner>` in
//! `JETSCRIBE_SUBMISSIONS`, kept as long as the job records. A caller's jobs are listed from it
//! newest first, a page at a time ([`Pipeline::submissions_newest_first`]), holding a window of
//! (sequence, job id) pairs rather than every job record.

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use futures::{Stream, StreamExt};
use proto_msgs::Submission;
use tracing::debug;
use uuid::Uuid;

use crate::pipeline::{message_id_header, publish_stored};
use crate::{ErrorChain, Pipeline, PipelineError};

/// A job as the index has it: the sequence orders jobs by submission and is the cursor of the
/// next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedJob {
    pub sequence: u64,
    pub job_id: Uuid,
}

/// Whose submissions to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitters<'a> {
    Everyone,
    /// The jobs of one key (`None`: submitted without a key).
    Only(Option<&'a str>),
}

/// The first window read back from the newest end; it doubles while windows come back empty
/// (a key with few jobs among many), up to [`MAX_WINDOW`].
const FIRST_WINDOW: u64 = 256;
const MAX_WINDOW: u64 = 65_536;

impl Pipeline {
    /// Adds `submission` to the index (deduplicated by job id, so a retried submission is not
    /// listed twice).
    pub async fn index_submission(&self, submission: &Submission) -> Result<(), PipelineError> {
        let subject = proto_msgs::submissions_subject(submission.owner.as_deref());
        let headers = message_id_header(&submission.job_id.to_string());
        let payload = proto_msgs::encode(submission)?;
        publish_stored(self.jetstream(), subject, headers, payload).await
    }

    /// The jobs of `submitters`, newest first, from just before `before` (a sequence from an
    /// earlier page), read window by window as the stream is polled.
    pub async fn submissions_newest_first(
        &self,
        submitters: Submitters<'_>,
        before: Option<u64>,
    ) -> Result<impl Stream<Item = Result<IndexedJob, PipelineError>> + Send + use<>, PipelineError>
    {
        let mut stream = self
            .stream(
                proto_msgs::SUBMISSIONS_STREAM,
                "opening the submissions index",
            )
            .await?;
        let info = stream
            .info()
            .await
            .map_err(|err| PipelineError::request("reading the submissions index", err))?;
        let (first_sequence, last_sequence) = (info.state.first_sequence, info.state.last_sequence);
        let newest_end = last_sequence.saturating_add(1);
        let filter_subject = match submitters {
            Submitters::Everyone => format!("{}.*", proto_msgs::SUBMISSIONS_SUBJECT_PREFIX),
            Submitters::Only(owner) => proto_msgs::submissions_subject(owner),
        };
        let reader = WindowReader {
            stream,
            filter_subject,
            oldest: first_sequence.max(1),
            upper: before.map_or(newest_end, |before| before.min(newest_end)),
            window: FIRST_WINDOW,
            buffered: Vec::new(),
        };
        Ok(futures::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            loop {
                if let Some(job) = reader.buffered.pop() {
                    return Some((Ok(job), Some(reader)));
                }
                if reader.upper <= reader.oldest {
                    return None;
                }
                if let Err(err) = reader.read_window().await {
                    return Some((Err(err), None));
                }
            }
        }))
    }
}

/// Reads the index backwards: each window `[upper - window, upper)` forwards.
struct WindowReader {
    stream: jetstream::stream::Stream,
    filter_subject: String,
    oldest: u64,
    /// Everything from here on has been read.
    upper: u64,
    window: u64,
    /// The current window's jobs, oldest first.
    buffered: Vec<IndexedJob>,
}

impl WindowReader {
    async fn read_window(&mut self) -> Result<(), PipelineError> {
        let lower = self.upper.saturating_sub(self.window).max(self.oldest);
        const READING: &str = "reading the submissions index";
        let consumer = self
            .stream
            .create_consumer(pull::Config {
                filter_subject: self.filter_subject.clone(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: lower,
                },
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: std::time::Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|err| PipelineError::request(READING, err))?;
        // A window holds at most `window` jobs, and they come first: what is past it is dropped.
        let mut batch = consumer
            .fetch()
            .max_messages(self.window as usize)
            .messages()
            .await
            .map_err(|err| PipelineError::request(READING, err))?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|err| PipelineError::request(READING, err))?;
            let info = message
                .info()
                .map_err(|err| PipelineError::request(READING, err))?;
            let sequence = info.stream_sequence;
            if sequence >= self.upper {
                break;
            }
            let submission: Submission = proto_msgs::decode(&message.payload)?;
            self.buffered.push(IndexedJob {
                sequence,
                job_id: submission.job_id,
            });
        }
        // Ephemeral: it would go by itself after `inactive_threshold`; this is sooner.
        let name = consumer.cached_info().name.clone();
        if let Err(err) = self.stream.delete_consumer(&name).await {
            debug!(error = %ErrorChain(&err), "index reader not removed; it expires");
        }
        if self.buffered.is_empty() {
            self.window = (self.window * 2).min(MAX_WINDOW);
        }
        self.upper = lower;
        Ok(())
    }
}
