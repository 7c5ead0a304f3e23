//! The one watch engine: a driver supplies a [`Feed`] ("read the current state", "wait for
//! the next change after cursor X"); the engine owns the task, the loop, back-off, outage
//! reporting, resume, filtering, deduplication and the end of the stream.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::key::in_subtree;
use crate::pair::KvPair;
use crate::raw::Lifecycle;
use crate::retry::Backoff;
use crate::watch::{key_watch, tree_watch, TreeWatchStream, WatchSink, WatchStream};

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

    fn version(&self) -> u64 {
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
    /// changes are to be followed. Linearizable unless the store reads stale.
    async fn read(&mut self) -> Result<(Vec<KvPair>, u64)>;

    /// Waits for the next change after `cursor`. An `Err` is retried by the engine (with the
    /// same cursor), so a feed re-creates whatever server-side watch it needs.
    async fn next(&mut self, cursor: u64) -> Result<Update>;
}

/// Watches one key through `feed`. The initial read's error is returned directly.
pub async fn watch_key<F: Feed>(
    backend: &'static str,
    lifecycle: Lifecycle,
    key: String,
    mut feed: F,
) -> Result<WatchStream> {
    let (out, stream) = key_watch();
    let (pairs, cursor) = feed.read().await?;
    let mut engine = Engine {
        backend,
        scope: Scope::Key(key),
        state: BTreeMap::new(),
        out,
        lifecycle,
    };
    engine.replace(pairs);
    if engine.emit() {
        tokio::spawn(engine.run(feed, cursor));
    }
    Ok(stream)
}

/// Watches the subtree of `prefix` through `feed`. The initial read's error is returned directly.
pub async fn watch_tree<F: Feed>(
    backend: &'static str,
    lifecycle: Lifecycle,
    prefix: String,
    mut feed: F,
) -> Result<TreeWatchStream> {
    let (out, stream) = tree_watch();
    let (pairs, cursor) = feed.read().await?;
    let mut engine = Engine {
        backend,
        scope: Scope::Tree(prefix),
        state: BTreeMap::new(),
        out,
        lifecycle,
    };
    engine.replace(pairs);
    if engine.emit() {
        tokio::spawn(engine.run(feed, cursor));
    }
    Ok(stream)
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

/// Emits the engine's state in the form its sink takes.
trait Emit: WatchSink + 'static {
    fn emit_state(&mut self, state: &BTreeMap<String, KvPair>, key: &str) -> bool;
}

impl Emit for crate::watch::KeyWatcher {
    fn emit_state(&mut self, state: &BTreeMap<String, KvPair>, key: &str) -> bool {
        self.emit(state.get(key).cloned())
    }
}

impl Emit for crate::watch::TreeWatcher {
    fn emit_state(&mut self, state: &BTreeMap<String, KvPair>, _: &str) -> bool {
        self.emit(state.values().cloned().collect())
    }
}

struct Engine<S> {
    backend: &'static str,
    scope: Scope,
    state: BTreeMap<String, KvPair>,
    out: S,
    lifecycle: Lifecycle,
}

enum Step<T> {
    Dropped,
    Closed,
    Done(Result<T>),
}

impl<S: Emit> Engine<S> {
    fn replace(&mut self, pairs: Vec<KvPair>) {
        self.state = pairs
            .into_iter()
            .filter(|p| self.scope.contains(&p.key))
            .map(|p| (p.key.clone(), p))
            .collect();
    }

    fn emit(&mut self) -> bool {
        let key = self.scope.name().to_string();
        self.out.emit_state(&self.state, &key)
    }

    /// Applies events; emits after each run of events with one version (one snapshot per
    /// revision) and after each event of a key watch. `false` once the stream was dropped.
    fn apply(&mut self, events: Vec<Event>) -> bool {
        let mut pending: Option<u64> = None;
        for ev in events {
            if !self.scope.contains(ev.key()) {
                continue;
            }
            if pending.is_some_and(|v| v != ev.version()) && !self.emit() {
                return false;
            }
            pending = Some(ev.version());
            match ev {
                Event::Put(p) => {
                    self.state.insert(p.key.clone(), p);
                }
                Event::Delete { key, .. } => {
                    self.state.remove(&key);
                }
            }
        }
        pending.is_none() || self.emit()
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
            let step = if resync {
                match self.step(feed.read()).await {
                    Step::Done(Ok((pairs, c))) => {
                        self.replace(pairs);
                        cursor = c;
                        resync = false;
                        Step::Done(Ok(None))
                    }
                    Step::Done(Err(e)) => Step::Done(Err(e)),
                    Step::Dropped => Step::Dropped,
                    Step::Closed => Step::Closed,
                }
            } else {
                match self.step(feed.next(cursor)).await {
                    Step::Done(Ok(u)) => Step::Done(Ok(Some(u))),
                    Step::Done(Err(e)) => Step::Done(Err(e)),
                    Step::Dropped => Step::Dropped,
                    Step::Closed => Step::Closed,
                }
            };
            let alive = match step {
                Step::Dropped => return,
                Step::Closed => {
                    self.out.error(Error::Closed);
                    return;
                }
                Step::Done(Ok(None)) => {
                    tracing::debug!(
                        backend = self.backend,
                        watch = self.scope.name(),
                        cursor,
                        "watch re-read"
                    );
                    self.emit()
                }
                Step::Done(Ok(Some(Update::Resync))) => {
                    tracing::debug!(
                        backend = self.backend,
                        watch = self.scope.name(),
                        cursor,
                        "watch history gone, re-reading"
                    );
                    resync = true;
                    continue;
                }
                Step::Done(Ok(Some(Update::Events(events, c)))) => {
                    cursor = cursor.max(c);
                    self.apply(events)
                }
                Step::Done(Ok(Some(Update::State(pairs, c)))) => {
                    cursor = c;
                    self.replace(pairs);
                    self.emit()
                }
                Step::Done(Err(Error::Closed)) => {
                    self.out.error(Error::Closed);
                    return;
                }
                Step::Done(Err(e)) => {
                    failures += 1;
                    tracing::debug!(backend = self.backend, watch = self.scope.name(), failures, error = %e, "watch interrupted, resuming");
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

#[cfg(test)]
mod tests;
