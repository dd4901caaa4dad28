//! One JetStream consumer per followed job, shared by every `/events` client and synchronous
//! wait that follows it: a thousand clients of one job cost the server one consumer, not a
//! thousand. The job's events are read once into a [`Feed`] (what came so far, and a channel for
//! what comes next); each follower gets the part of the history it lacks, then the live events.
//! The consumer is dropped with the last follower.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::{Stream, StreamExt};
use jetscribe_nats::{ErrorChain, Pipeline, PipelineError, StoredEvent};
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::warn;
use uuid::Uuid;

/// Live events a follower may fall behind by before it catches up from the history.
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
    /// ends after the final event, or early if the feed fails.
    pub(crate) async fn follow(
        &self,
        pipeline: &Pipeline,
        job_id: Uuid,
        after: Option<u64>,
    ) -> Result<impl Stream<Item = StoredEvent> + Send + 'static + use<>, PipelineError> {
        let mut feed = self.feed(pipeline, job_id).await?;
        if feed.failed() {
            // It failed before this follower came: one fresh try.
            self.forget(job_id, &Arc::downgrade(&feed));
            feed = self.feed(pipeline, job_id).await?;
        }
        let mut follower = Follower {
            feed,
            last_seen: after,
            backlog: VecDeque::new(),
            live: None,
        };
        follower.catch_up();
        Ok(futures::stream::unfold(
            follower,
            |mut follower| async move {
                let next = follower.next().await?;
                Some((next, follower))
            },
        ))
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

impl Feed {
    /// The reader stopped before the job's final event.
    fn failed(&self) -> bool {
        let state = locked(&self.state);
        let ended = (state.history.last()).is_some_and(|stored| stored.event.kind.is_final());
        state.live.is_none() && !ended
    }
}

/// One follower's place in a feed.
struct Follower {
    feed: Arc<Feed>,
    last_seen: Option<u64>,
    /// Stored events not yet handed on.
    backlog: VecDeque<StoredEvent>,
    live: Option<broadcast::Receiver<StoredEvent>>,
}

impl Follower {
    /// Copies what the feed holds after `last_seen` and subscribes to what comes next, under
    /// the lock the reader appends under: nothing falls between.
    fn catch_up(&mut self) {
        let state = locked(&self.feed.state);
        let last_seen = self.last_seen;
        let missed = (state.history.iter())
            .filter(|stored| last_seen.is_none_or(|last| stored.sequence > last))
            .cloned();
        self.backlog.extend(missed);
        self.live = state.live.as_ref().map(broadcast::Sender::subscribe);
    }

    async fn next(&mut self) -> Option<StoredEvent> {
        loop {
            if let Some(stored) = self.backlog.pop_front() {
                self.last_seen = Some(stored.sequence);
                return Some(stored);
            }
            let live = self.live.as_mut()?;
            match live.recv().await {
                Ok(stored) if self.last_seen.is_some_and(|last| stored.sequence <= last) => {}
                Ok(stored) => {
                    self.last_seen = Some(stored.sequence);
                    return Some(stored);
                }
                // Fallen behind, or the feed ended: what was missed is in the history.
                Err(_) => self.catch_up(),
            }
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
