//! The one watch engine: a driver supplies a [`Feed`] ("read the current state", "wait for
//! the next change after cursor X"); the engine owns the task, the loop, back-off, outage
//! reporting, resume, filtering, deduplication and the end of the stream.

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::events::{Cursor, EventStream};
use crate::key::in_subtree;
use crate::pair::KvPair;
use crate::raw::Lifecycle;
use crate::retry::Backoff;
use crate::watch::{key_watch, lossless_event_channel, tree_watch, TreeWatchStream, WatchStream};
use sinks::{Sink, State, Typed};

/// One change reported by a [`Feed`]. Keys are user keys (namespace stripped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The key was written; the pair carries its new version.
    Put(KvPair),
    /// The key was deleted (or expired) by the write with this version/revision.
    Delete {
        /// The deleted key.
        key: String,
        /// The backend's revision of the delete (0 when the backend has none).
        version: u64,
    },
}

impl Event {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put(p) => &p.key,
            Event::Delete { key, .. } => key,
        }
    }

    /// The revision of the write behind the event.
    pub fn version(&self) -> u64 {
        match self {
            Event::Put(p) => p.version,
            Event::Delete { version, .. } => *version,
        }
    }
}

/// What [`Feed::next`] found after its cursor.
#[derive(Debug)]
pub enum Update {
    /// These changes, in order, up to `cursor`. Events outside the watched key or subtree are
    /// ignored, so a feed may follow a wider range than it was asked for.
    Events(Vec<Event>, u64),
    /// The whole current state of the watched key or subtree at `cursor` (backends that
    /// re-read after each notification).
    State(Vec<KvPair>, u64),
    /// History after the cursor is gone (compaction, index reset): the engine re-reads.
    Resync,
}

/// A driver's source of changes for one watch.
#[async_trait]
pub trait Feed: Send + 'static {
    /// The current pairs of the watched key (0 or 1) or subtree, and the cursor after which
    /// changes are to be followed. Linearizable unless the store reads stale. The engine calls
    /// it again on `Resync` and after a reader overflow: whatever the feed had queued from
    /// before must then be dropped, so that `next` yields only changes after this read.
    async fn read(&mut self) -> Result<(Vec<KvPair>, u64)>;

    /// Waits for the next change after `cursor`. An `Err` is retried by the engine (with the
    /// same cursor), so a feed re-creates whatever server-side watch it needs.
    async fn next(&mut self, cursor: u64) -> Result<Update>;

    /// True when `next` can replay the history after any cursor of the backend (etcd, until
    /// compaction, which it reports as `Resync`), so [`watch_events`] resumes a saved cursor
    /// without a snapshot. `false` (the default): `next` only sees changes from now on, and a
    /// resumed stream starts with a `Resync`.
    fn replays(&self) -> bool {
        false
    }
}

/// Watches one key through `feed`. The initial read's error is returned directly.
pub async fn watch_key<F: Feed>(
    backend: &'static str,
    lifecycle: Lifecycle,
    key: String,
    feed: F,
) -> Result<WatchStream> {
    let (out, stream) = key_watch();
    start(backend, lifecycle, Scope::Key(key), out, feed, None).await?;
    Ok(stream)
}

/// Watches the subtree of `prefix` through `feed`. The initial read's error is returned directly.
pub async fn watch_tree<F: Feed>(
    backend: &'static str,
    lifecycle: Lifecycle,
    prefix: String,
    feed: F,
) -> Result<TreeWatchStream> {
    let (out, stream) = tree_watch();
    start(backend, lifecycle, Scope::Tree(prefix), out, feed, None).await?;
    Ok(stream)
}

/// The typed event stream of the subtree of `prefix` through `feed` (see
/// [`Store::watch_events`](crate::Store::watch_events)): without `from`, a `Resync` of the
/// current state first; with `from`, the changes after it (a feed that cannot
/// [replay](Feed::replays) starts with a `Resync` instead). The initial read's error is
/// returned directly.
pub async fn watch_events<F: Feed>(
    backend: &'static str,
    lifecycle: Lifecycle,
    prefix: String,
    from: Option<Cursor>,
    feed: F,
) -> Result<EventStream> {
    let (tx, stream) = lossless_event_channel();
    let resume = from.filter(|_| feed.replays()).map(Cursor::get);
    start(
        backend,
        lifecycle,
        Scope::Tree(prefix),
        Typed(tx, resume.unwrap_or(0)),
        feed,
        resume,
    )
    .await?;
    Ok(Box::pin(stream))
}

/// Reads the initial state (unless resuming a replaying feed from `resume`), reports it and
/// spawns the loop.
async fn start<S: Sink, F: Feed>(
    backend: &'static str,
    lifecycle: Lifecycle,
    scope: Scope,
    out: S,
    mut feed: F,
    resume: Option<u64>,
) -> Result<()> {
    let mut engine = Engine {
        backend,
        state: State::of(&scope, Vec::new()),
        scope,
        out,
        lifecycle,
    };
    let cursor = match resume {
        Some(c) => c,
        None => {
            let (pairs, cursor) = feed.read().await?;
            engine.state = engine.scoped(pairs);
            if !engine.out.reset(&engine.state, &engine.scope, cursor) {
                return Ok(());
            }
            cursor
        }
    };
    tokio::spawn(engine.run(feed, cursor));
    Ok(())
}

enum Scope {
    Key(String),
    Tree(String),
}

impl Scope {
    fn contains(&self, key: &str) -> bool {
        match self {
            Scope::Key(k) => k == key,
            Scope::Tree(p) => in_subtree(p, key),
        }
    }

    fn name(&self) -> &str {
        match self {
            Scope::Key(k) | Scope::Tree(k) => k,
        }
    }
}

struct Engine<S> {
    backend: &'static str,
    scope: Scope,
    state: State,
    out: S,
    lifecycle: Lifecycle,
}

enum Step<T> {
    Dropped,
    Closed,
    Done(Result<T>),
}

impl<S: Sink> Engine<S> {
    fn scoped(&self, pairs: Vec<KvPair>) -> State {
        State::of(&self.scope, pairs)
    }

    /// Runs `fut` unless the stream is dropped or the store closed first.
    async fn step<T>(&self, fut: impl std::future::Future<Output = Result<T>>) -> Step<T> {
        if self.lifecycle.is_closed() {
            return Step::Closed;
        }
        tokio::select! {
            _ = self.out.closed() => Step::Dropped,
            _ = self.lifecycle.closed() => Step::Closed,
            r = fut => Step::Done(r),
        }
    }

    /// Waits out a back-off delay; `false` if the stream was dropped or the store closed.
    async fn pause(&self, backoff: &mut Backoff) -> bool {
        let d = backoff.next_delay();
        matches!(
            self.step(async {
                tokio::time::sleep(d).await;
                Ok(())
            })
            .await,
            Step::Done(_)
        )
    }

    async fn run<F: Feed>(mut self, mut feed: F, mut cursor: u64) {
        let mut backoff = Backoff::default();
        // Consecutive failures: the first one is retried at once without an error item, so a
        // single broken connection (a member restart) is invisible; a lasting outage is not.
        let mut failures = 0u32;
        let mut resync = false;
        loop {
            resync |= self.out.needs_resync();
            let step = if resync {
                match self.step(feed.read()).await {
                    Step::Done(Ok((pairs, c))) => Step::Done(Ok(Err((pairs, c)))),
                    Step::Done(Err(e)) => Step::Done(Err(e)),
                    Step::Dropped => Step::Dropped,
                    Step::Closed => Step::Closed,
                }
            } else {
                match self.step(feed.next(cursor)).await {
                    Step::Done(Ok(u)) => Step::Done(Ok(Ok(u))),
                    Step::Done(Err(e)) => Step::Done(Err(e)),
                    Step::Dropped => Step::Dropped,
                    Step::Closed => Step::Closed,
                }
            };
            let name = self.scope.name();
            let alive = match step {
                Step::Dropped => return,
                Step::Closed | Step::Done(Err(Error::Closed)) => {
                    self.out.error(Error::Closed);
                    return;
                }
                Step::Done(Ok(Err((pairs, c)))) => {
                    tracing::debug!(
                        backend = self.backend,
                        watch = name,
                        cursor = c,
                        "watch re-read"
                    );
                    resync = false;
                    cursor = c;
                    self.state = self.scoped(pairs);
                    self.out.reset(&self.state, &self.scope, c)
                }
                Step::Done(Ok(Ok(Update::Resync))) => {
                    tracing::debug!(
                        backend = self.backend,
                        watch = name,
                        cursor,
                        "watch history gone, re-reading"
                    );
                    resync = true;
                    continue;
                }
                Step::Done(Ok(Ok(Update::Events(events, c)))) => {
                    cursor = cursor.max(c);
                    let events: Vec<Event> = events
                        .into_iter()
                        .filter(|e| self.scope.contains(e.key()))
                        .collect();
                    events.is_empty()
                        || self
                            .out
                            .events(&mut self.state, &self.scope, events, cursor)
                }
                Step::Done(Ok(Ok(Update::State(pairs, c)))) => {
                    cursor = c;
                    let new = self.scoped(pairs);
                    self.out.replace(&mut self.state, &self.scope, new, c)
                }
                Step::Done(Err(e)) => {
                    failures += 1;
                    tracing::debug!(backend = self.backend, watch = name, failures, error = %e, "watch interrupted, resuming");
                    if failures > 1 && !self.out.error(e) {
                        return;
                    }
                    if failures > 1 && !self.pause(&mut backoff).await {
                        if self.lifecycle.is_closed() {
                            self.out.error(Error::Closed);
                        }
                        return;
                    }
                    continue;
                }
            };
            if !alive {
                return;
            }
            failures = 0;
            backoff.reset();
        }
    }
}

mod sinks;
#[cfg(test)]
mod tests;
