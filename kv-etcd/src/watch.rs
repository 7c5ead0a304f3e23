//! `watch` and `watch_tree` on kv-core's watch engine: the feed reads the key or subtree with
//! its revision, and follows it with one watch id on the handle's shared watch stream
//! ([`crate::hub`]) from the cursor's revision + 1. A compaction past the cursor is a
//! [`Update::Resync`]; a broken stream is an error while the hub re-creates the watch from
//! its last revision; a watch id etcd cancelled is an error after which the feed registers
//! again from the engine's cursor.

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{EventType, WatchOptions};
use kv_core::raw::{self, Event, Feed, Update};
use kv_core::{Error, KvPair, Result, TreeWatchStream, WatchStream};

use crate::client::version_of;
use crate::connect::Inner;
use crate::error::map_err;
use crate::hub::{Next, Registration};
use crate::BACKEND;

/// Opens an etcd watch of `(start, end)` (`end` empty: one key) from revision `from`,
/// bounded by the store's timeout.
pub(crate) async fn open(
    inner: &Inner,
    start: Vec<u8>,
    end: Vec<u8>,
    from: i64,
    name: &str,
) -> Result<etcd_client::WatchStream> {
    let mut client = inner.watch.clone();
    let mut opts = WatchOptions::new().with_start_revision(from);
    if !end.is_empty() {
        opts = opts.with_range(end);
    }
    inner
        .bounded("watch", async {
            client
                .watch(start, Some(opts))
                .await
                .map_err(|e| map_err(e, &inner.ctx("watch", name)))
        })
        .await
}

/// What a feed follows: one key or the subtree of a prefix (normalized, namespace-relative).
enum Target {
    Key(String),
    Tree(String),
}

/// The [`Feed`] of one watch: a watch id on the handle's shared stream, registered on demand.
struct EtcdFeed {
    inner: Arc<Inner>,
    target: Target,
    reg: Option<Registration>,
}

impl EtcdFeed {
    /// The watched range in stored form.
    fn range(&self) -> (Vec<u8>, Vec<u8>) {
        match &self.target {
            Target::Key(key) => (self.inner.full(key).into_bytes(), Vec::new()),
            Target::Tree(prefix) => self.inner.subtree(prefix),
        }
    }

    /// The user key of an event's stored key (`None`: not a visible kv key).
    fn user_key(&self, stored: &[u8]) -> Option<String> {
        match &self.target {
            // A key watch's range is exactly its key.
            Target::Key(key) => Some(key.clone()),
            Target::Tree(_) => self.inner.user_key(stored),
        }
    }

    fn broken(&mut self, message: String) -> Error {
        self.reg = None;
        Error::Unreachable {
            endpoint: self.inner.endpoints.clone(),
            message,
            source: None,
        }
    }
}

#[async_trait]
impl Feed for EtcdFeed {
    async fn read(&mut self) -> Result<(Vec<KvPair>, u64)> {
        // Events the server sent for an older position must not follow this read: `next`
        // registers again from the read's revision.
        self.reg = None;
        let inner = &self.inner;
        let (pairs, rev) = match &self.target {
            Target::Key(key) => {
                let (pair, rev) = inner.bounded("get", inner.read_key_batched(key)).await?;
                (pair.into_iter().collect(), rev)
            }
            Target::Tree(prefix) => inner.bounded("list", inner.read_tree(prefix)).await?,
        };
        Ok((pairs, version_of(rev)))
    }

    /// etcd keeps the history (until compaction, reported as `Resync`): a saved revision
    /// resumes exactly.
    fn replays(&self) -> bool {
        true
    }

    async fn next(&mut self, cursor: u64) -> Result<Update> {
        let reg = match &mut self.reg {
            Some(r) => r,
            None => {
                let (start, end) = self.range();
                let from = i64::try_from(cursor).unwrap_or(i64::MAX - 1) + 1;
                self.reg.insert(self.inner.hub().register(start, end, from))
            }
        };
        let resp = match reg.next().await {
            Next::Response(resp) => resp,
            Next::Failed(e) => return Err(e),
            Next::Ended => return Err(Error::Closed),
        };
        if resp.compact_revision() > 0 {
            // History after the cursor is gone: the engine re-reads, then asks again.
            self.reg = None;
            return Ok(Update::Resync);
        }
        if resp.canceled() {
            let why = format!("etcd cancelled the watch: {}", resp.cancel_reason());
            return Err(self.broken(why));
        }
        // The creation answer and progress notices carry no events: still a sign of life.
        let mut last = cursor;
        let mut events = Vec::with_capacity(resp.events().len());
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let version = version_of(kv.mod_revision());
            last = last.max(version);
            let Some(key) = self.user_key(kv.key()) else {
                continue;
            };
            events.push(match ev.event_type() {
                EventType::Put => Event::Put(KvPair {
                    key,
                    value: kv.value().to_vec(),
                    version,
                }),
                EventType::Delete => Event::Delete { key, version },
            });
        }
        Ok(Update::Events(events, last))
    }
}

/// Starts a watch of one key: reads it (errors are returned directly), then follows it.
pub(crate) async fn watch_key(inner: &Arc<Inner>, key: &str) -> Result<WatchStream> {
    let feed = EtcdFeed {
        inner: inner.clone(),
        target: Target::Key(key.to_string()),
        reg: None,
    };
    raw::watch_key(BACKEND, inner.life.clone(), key.to_string(), feed).await
}

/// Starts a watch of a subtree: lists it (errors are returned directly), then follows it.
pub(crate) async fn watch_tree(inner: &Arc<Inner>, prefix: &str) -> Result<TreeWatchStream> {
    let feed = EtcdFeed {
        inner: inner.clone(),
        target: Target::Tree(prefix.to_string()),
        reg: None,
    };
    raw::watch_tree(BACKEND, inner.life.clone(), prefix.to_string(), feed).await
}

/// The typed event stream of a subtree: the tree watch's feed, resumable from a revision.
pub(crate) async fn watch_events(
    inner: &Arc<Inner>,
    prefix: &str,
    from: Option<kv_core::Cursor>,
) -> Result<kv_core::EventStream> {
    let feed = EtcdFeed {
        inner: inner.clone(),
        target: Target::Tree(prefix.to_string()),
        reg: None,
    };
    raw::watch_events(BACKEND, inner.life.clone(), prefix.to_string(), from, feed).await
}
