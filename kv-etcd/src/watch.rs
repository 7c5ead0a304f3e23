//! `watch` and `watch_tree`: one background task per watch, resumed from the last seen
//! revision after a broken stream and re-read after a compaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use etcd_client::{Event, EventType, WatchOptions};
use kv_core::retry::{timed, Backoff};
use kv_core::watch::{key_watch, tree_watch, KeyWatcher, TreeWatcher};
use kv_core::{Error, KvPair, Result, TreeWatchStream, WatchStream};

use crate::error::map_err;
use crate::{version_of, Inner};

/// What a watch task follows and feeds.
enum Target {
    Key {
        key: String,
        out: KeyWatcher,
    },
    Tree {
        prefix: String,
        snapshot: BTreeMap<String, KvPair>,
        out: TreeWatcher,
    },
}

impl Target {
    fn name(&self) -> &str {
        match self {
            Target::Key { key, .. } => key,
            Target::Tree { prefix, .. } => prefix,
        }
    }

    /// `(start, end)` of the watched range in stored form (`end` empty: one key).
    fn range(&self, inner: &Inner) -> (Vec<u8>, Vec<u8>) {
        match self {
            Target::Key { key, .. } => (inner.full(key).into_bytes(), Vec::new()),
            Target::Tree { prefix, .. } => inner.subtree(prefix),
        }
    }

    async fn dropped(&self) {
        match self {
            Target::Key { out, .. } => out.closed().await,
            Target::Tree { out, .. } => out.closed().await,
        }
    }

    fn error(&mut self, e: Error) -> bool {
        match self {
            Target::Key { out, .. } => out.error(e),
            Target::Tree { out, .. } => out.error(e),
        }
    }

    fn emit_tree(snapshot: &BTreeMap<String, KvPair>, out: &mut TreeWatcher) -> bool {
        out.emit(snapshot.values().cloned().collect())
    }

    /// Reads the current state, emits it and returns the revision of the read.
    async fn reload(&mut self, inner: &Inner) -> Result<i64> {
        match self {
            Target::Key { key, out } => {
                let (pair, rev) = inner.read_key(key, true).await?;
                out.emit(pair);
                Ok(rev)
            }
            Target::Tree {
                prefix,
                snapshot,
                out,
            } => {
                let (pairs, rev) = inner.read_tree(prefix).await?;
                *snapshot = pairs.into_iter().map(|p| (p.key.clone(), p)).collect();
                Self::emit_tree(snapshot, out);
                Ok(rev)
            }
        }
    }

    /// Applies a batch of events; `false` once the caller dropped the stream.
    fn apply(&mut self, inner: &Inner, events: &[Event]) -> bool {
        match self {
            Target::Key { key, out } => {
                for ev in events {
                    let Some(kv) = ev.kv() else { continue };
                    let state = match ev.event_type() {
                        EventType::Put => Some(KvPair {
                            key: key.clone(),
                            value: kv.value().to_vec(),
                            version: version_of(kv.mod_revision()),
                        }),
                        EventType::Delete => None,
                    };
                    if !out.emit(state) {
                        return false;
                    }
                }
                true
            }
            Target::Tree { snapshot, out, .. } => {
                let mut current_rev = None;
                for ev in events {
                    let Some(kv) = ev.kv() else { continue };
                    let rev = kv.mod_revision();
                    if current_rev.is_some_and(|r| r != rev) && !Self::emit_tree(snapshot, out) {
                        return false;
                    }
                    current_rev = Some(rev);
                    let Some(key) = inner.user_key(kv.key()) else {
                        continue;
                    };
                    match ev.event_type() {
                        EventType::Put => {
                            snapshot.insert(
                                key.clone(),
                                KvPair {
                                    key,
                                    value: kv.value().to_vec(),
                                    version: version_of(rev),
                                },
                            );
                        }
                        EventType::Delete => {
                            snapshot.remove(&key);
                        }
                    }
                }
                if current_rev.is_some() {
                    return Self::emit_tree(snapshot, out);
                }
                true
            }
        }
    }
}

/// Starts a watch of one key: reads it (errors are returned directly), then follows it.
pub(crate) async fn watch_key(inner: Arc<Inner>, key: String) -> Result<WatchStream> {
    let (out, stream) = key_watch();
    let mut target = Target::Key { key, out };
    let rev = target.reload(&inner).await?;
    tokio::spawn(run(inner, target, rev));
    Ok(stream)
}

/// Starts a watch of a subtree: lists it (errors are returned directly), then follows it.
pub(crate) async fn watch_tree(inner: Arc<Inner>, prefix: String) -> Result<TreeWatchStream> {
    let (out, stream) = tree_watch();
    let mut target = Target::Tree {
        prefix,
        snapshot: BTreeMap::new(),
        out,
    };
    let rev = target.reload(&inner).await?;
    tokio::spawn(run(inner, target, rev));
    Ok(stream)
}

/// Opens an etcd watch of `(start, end)` from revision `from`.
pub(crate) async fn open(
    inner: &Inner,
    start: Vec<u8>,
    end: Vec<u8>,
    from: i64,
    name: &str,
) -> Result<etcd_client::WatchStream> {
    let mut client = inner.watch.clone();
    let ctx = inner.ctx("watch", name);
    let mut opts = WatchOptions::new().with_start_revision(from);
    if !end.is_empty() {
        opts = opts.with_range(end);
    }
    timed("watch", inner.timeout, async {
        client
            .watch(start, Some(opts))
            .await
            .map_err(|e| map_err(e, &ctx))
    })
    .await
}

enum Step {
    Dropped,
    Closed,
    Message(std::result::Result<Option<etcd_client::WatchResponse>, etcd_client::Error>),
}

/// Follows the target from revision `rev` + 1 until the caller drops the stream or the store
/// is closed.
async fn run(inner: Arc<Inner>, mut target: Target, mut rev: i64) {
    let mut backoff = Backoff::default();
    // Consecutive failures: the first broken stream is re-opened at once without an error item.
    let mut failures = 0u32;
    loop {
        if inner.is_closed() {
            target.error(Error::Closed);
            return;
        }
        let (start, end) = target.range(&inner);
        let opened = tokio::select! {
            _ = target.dropped() => return,
            _ = inner.wait_closed() => None,
            r = open(&inner, start, end, rev + 1, target.name()) => Some(r),
        };
        let mut stream = match opened {
            None => {
                target.error(Error::Closed);
                return;
            }
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                failures += 1;
                if !target.error(e) {
                    return;
                }
                if !pause(&inner, &target, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        let broken: Option<Error> = loop {
            let step = tokio::select! {
                _ = target.dropped() => Step::Dropped,
                _ = inner.wait_closed() => Step::Closed,
                m = stream.message() => Step::Message(m),
            };
            match step {
                Step::Dropped => return,
                Step::Closed => {
                    target.error(Error::Closed);
                    return;
                }
                Step::Message(Ok(Some(resp))) => {
                    if resp.compact_revision() > 0 {
                        // History up to there is gone: re-read and go on from the read.
                        match target.reload(&inner).await {
                            Ok(r) => {
                                rev = r;
                                break None;
                            }
                            Err(e) => break Some(e),
                        }
                    }
                    if resp.canceled() {
                        break Some(Error::Unreachable {
                            endpoint: inner.endpoints.clone(),
                            message: format!("etcd cancelled the watch: {}", resp.cancel_reason()),
                            source: None,
                        });
                    }
                    let events = resp.events();
                    if let Some(last) = events
                        .iter()
                        .filter_map(|e| e.kv())
                        .map(|kv| kv.mod_revision())
                        .max()
                    {
                        rev = rev.max(last);
                    }
                    if !events.is_empty() && !target.apply(&inner, events) {
                        return;
                    }
                    failures = 0;
                    backoff.reset();
                }
                Step::Message(Ok(None)) => {
                    break Some(Error::Unreachable {
                        endpoint: inner.endpoints.clone(),
                        message: "the etcd watch stream ended".into(),
                        source: None,
                    })
                }
                Step::Message(Err(e)) => {
                    break Some(map_err(e, &inner.ctx("watch", target.name())))
                }
            }
        };
        drop(stream);
        if let Some(e) = broken {
            if failures > 0 && !target.error(e) {
                return;
            }
            failures += 1;
            if failures > 1 && !pause(&inner, &target, &mut backoff).await {
                return;
            }
        }
    }
}

/// Waits for the next back-off delay; `false` if the stream was dropped or the store closed
/// meanwhile (the closed case has sent its final error item).
async fn pause(inner: &Inner, target: &Target, backoff: &mut Backoff) -> bool {
    tokio::select! {
        _ = target.dropped() => false,
        _ = inner.wait_closed() => true, // the loop head reports Closed
        _ = backoff.wait() => true,
    }
}
