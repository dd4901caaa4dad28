//! One JetStream consumer per followed job, shared by every `/events` client and synchronous
//! wait that follows it: a thousand clients of one job cost the server one consumer, not a
//! thousand. The job's events are read once into a [`Feed`] (what came so far, and a channel for
//! what comes next); each follower gets the part of the history it lacks, then the live events.
//! The consumer is dropped with the last follower.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::{Stream, StreamExt};
use jetscribe_nats::{ErrorChain, Pipeline, PipelineError, StoredEvent};
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::warn;
use uuid::Uuid;

/// Live events a follower may fall behind by before its stream ends (an SSE client then
/// reconnects with Last-Event-ID and loses nothing).
const LIVE_BACKLOG: usize = 256;

/// The feeds of the jobs being followed.
#[derive(Clone, Debug, Default)]
pub(crate) struct JobFollowers {
    feeds: Arc<Mutex<HashMap<Uuid, Weak<Feed>>>>,
}

/// One job's events, read once.
#[derive(Debug)]
struct Feed {
    state: Mutex<FeedState>,
    /// Stops the reader when the last follower lets go of the feed.
    _stop_reader: DropGuard,
}

#[derive(Debug)]
struct FeedState {
    history: Vec<StoredEvent>,
    /// `None` once the reader has stopped (after the final event, or an error).
    live: Option<broadcast::Sender<StoredEvent>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl JobFollowers {
    /// The events of `job_id` after sequence `after` (all without), stored then live; the stream
    /// ends after the final event, or early if the feed fails or the follower falls behind.
    pub(crate) async fn follow(
        &self,
        pipeline: &Pipeline,
        job_id: Uuid,
        after: Option<u64>,
    ) -> Result<impl Stream<Item = StoredEvent> + Send + 'static + use<>, PipelineError> {
        let feed = self.feed(pipeline, job_id).await?;
        let (missed, live) = {
            let state = locked(&feed.state);
            let missed: Vec<StoredEvent> = (state.history.iter())
                .filter(|stored| after.is_none_or(|after| stored.sequence > after))
                .cloned()
                .collect();
            // Subscribed under the same lock the reader appends under: nothing falls between.
            (
                missed,
                state.live.as_ref().map(broadcast::Sender::subscribe),
            )
        };
        let last_seen = missed.last().map(|stored| stored.sequence).or(after);
        let live = futures::stream::unfold(
            (live, last_seen, feed),
            |(mut live, last_seen, feed)| async move {
                let receiver = live.as_mut()?;
                loop {
                    match receiver.recv().await {
                        Ok(stored) if last_seen.is_some_and(|last| stored.sequence <= last) => {}
                        Ok(stored) => {
                            let sequence = Some(stored.sequence);
                            return Some((stored, (live, sequence, feed)));
                        }
                        // Closed (the feed ended) or lagged (the follower fell behind).
                        Err(_) => return None,
                    }
                }
            },
        );
        Ok(futures::stream::iter(missed).chain(live))
    }

    /// The feed of `job_id`: the one already read for other followers, or a new one.
    async fn feed(&self, pipeline: &Pipeline, job_id: Uuid) -> Result<Arc<Feed>, PipelineError> {
        if let Some(feed) = locked(&self.feeds).get(&job_id).and_then(Weak::upgrade) {
            return Ok(feed);
        }
        let events = pipeline.follow_job_events(job_id, None).await?;
        let stop = CancellationToken::new();
        let feed = Arc::new(Feed {
            state: Mutex::new(FeedState {
                history: Vec::new(),
                live: Some(broadcast::channel(LIVE_BACKLOG).0),
            }),
            _stop_reader: stop.clone().drop_guard(),
        });
        {
            let mut feeds = locked(&self.feeds);
            // Another follower made one meanwhile: ours goes, and its consumer with it.
            if let Some(existing) = feeds.get(&job_id).and_then(Weak::upgrade) {
                return Ok(existing);
            }
            feeds.retain(|_, feed| feed.strong_count() > 0);
            feeds.insert(job_id, Arc::downgrade(&feed));
        }
        let reader = read_feed(events, Arc::downgrade(&feed), stop, self.clone(), job_id);
        tokio::spawn(reader);
        Ok(feed)
    }

    /// Forgets `feed` (failed), so that the next follower reads the job afresh.
    fn forget(&self, job_id: Uuid, feed: &Weak<Feed>) {
        let mut feeds = locked(&self.feeds);
        if feeds.get(&job_id).is_some_and(|known| known.ptr_eq(feed)) {
            feeds.remove(&job_id);
        }
    }
}

/// Appends the job's events to its feed and hands them to its followers, until the final event,
/// an error, or `stop`.
async fn read_feed(
    events: impl Stream<Item = Result<StoredEvent, PipelineError>>,
    feed: Weak<Feed>,
    stop: CancellationToken,
    followers: JobFollowers,
    job_id: Uuid,
) {
    let mut events = std::pin::pin!(events);
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = events.next() => next,
        };
        let Some(current) = feed.upgrade() else {
            return;
        };
        let mut state = locked(&current.state);
        match next {
            Some(Ok(stored)) => {
                let ended = stored.event.kind.is_final();
                if let Some(live) = &state.live {
                    // An error only says that nobody listens right now.
                    live.send(stored.clone()).ok();
                }
                state.history.push(stored);
                if ended {
                    state.live = None;
                    return;
                }
            }
            Some(Err(err)) => {
                warn!(job_id = %job_id, error = %ErrorChain(&err), "event feed interrupted");
                state.live = None;
                followers.forget(job_id, &feed);
                return;
            }
            None => {
                state.live = None;
                followers.forget(job_id, &feed);
                return;
            }
        }
    }
}
