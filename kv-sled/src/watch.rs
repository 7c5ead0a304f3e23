//! Watches: a [`Feed`] per watch on kv-core's watch engine, fed by the database's hub.
//!
//! `read` returns the current pairs, and the highest version it read as the cursor; `next`
//! waits for the hub to hand over the next changes and returns them as events carrying the
//! record's version. The hub delivers changes of different keys in sled's order, which need not
//! be version order, so a feed drops a change only if it is not newer than the last version it
//! saw *of that key* (a write the initial read already saw, or a lock renewal, which keeps the
//! version). The feed holds the database only weakly: closing its last handle ends the hub's
//! channels, and the watch with [`Error::Closed`].

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use kv_core::raw::{watch_key, watch_tree, Event, Feed, Namespace, Update};
use kv_core::{async_trait, Error, KvPair, Result, TreeWatchStream, WatchStream};

use crate::db::Shared;
use crate::error::map_err;
use crate::hub::{Change, Subscription};
use crate::record::{now_ms, Record};
use crate::store::SledDriver;
use crate::BACKEND;

/// Most changes taken from the hub per `next` call.
const BATCH: usize = 256;

/// What one watch follows besides its subscription (which holds the stored key or subtree
/// start): the last version seen of the key, or of each stored key of the subtree.
enum Scope {
    Key(u64),
    Tree(HashMap<sled::IVec, u64>),
}

/// The feed of one watch: one pointer, so the engine's task (which holds the feed for the
/// watch's whole life, in a cell rounded up to 128 bytes) stays in its smallest size class.
struct SledFeed(Box<Inner>);

struct Inner {
    shared: Weak<Shared>,
    namespace: Arc<Namespace>,
    sub: Subscription,
    scope: Scope,
    /// An error met in a batch that also had events, reported by the next `next`.
    deferred: Option<Box<Error>>,
}

impl SledFeed {
    /// `sub` was subscribed before anything is read: every later change arrives through it.
    fn new(driver: &SledDriver, shared: &Arc<Shared>, sub: Subscription, scope: Scope) -> Self {
        SledFeed(Box::new(Inner {
            shared: Arc::downgrade(shared),
            namespace: driver.namespace_map().clone(),
            sub,
            scope,
            deferred: None,
        }))
    }
}

impl Inner {
    fn user_key(&self, skey: &[u8]) -> Option<String> {
        std::str::from_utf8(skey)
            .ok()
            .and_then(|s| self.namespace.user_key(s))
    }

    /// The event of one change, or `None` if it is not newer than what this watch saw.
    fn event(&mut self, (skey, bytes): Change) -> Result<Option<Event>> {
        let rec = Record::decode(&bytes)?;
        let Some(key) = self.user_key(&skey) else {
            return Ok(None);
        };
        let last = match &mut self.scope {
            Scope::Key(last) => last,
            Scope::Tree(last) => last.entry(skey).or_insert(0),
        };
        if rec.version <= *last {
            return Ok(None);
        }
        *last = rec.version;
        Ok(Some(if rec.is_live(now_ms()) {
            Event::Put(KvPair::new(key, rec.value, rec.version))
        } else {
            Event::Delete {
                key,
                version: rec.version,
            }
        }))
    }

    /// The events of one batch; an error is kept for the next call when events came too.
    fn events(&mut self, batch: Vec<Change>, cursor: &mut u64) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        for change in batch {
            match self.event(change) {
                Ok(Some(ev)) => {
                    *cursor = (*cursor).max(version(&ev));
                    events.push(ev);
                }
                Ok(None) => {}
                Err(e) => {
                    self.deferred.get_or_insert(Box::new(e));
                }
            }
        }
        match self.deferred.take() {
            Some(e) if events.is_empty() => Err(*e),
            d => {
                self.deferred = d;
                Ok(events)
            }
        }
    }

    fn read(&mut self) -> Result<(Vec<KvPair>, u64)> {
        let shared = self.shared.upgrade().ok_or(Error::Closed)?;
        let now = now_ms();
        let mut pairs = Vec::new();
        let mut cursor = 0;
        let filter = self.sub.filter();
        match &mut self.scope {
            Scope::Key(last) => {
                if let Some(b) = shared.data.get(filter).map_err(|e| map_err("watch", e))? {
                    let r = Record::decode(&b)?;
                    *last = (*last).max(r.version);
                    cursor = r.version;
                    if r.is_live(now) {
                        let key = std::str::from_utf8(filter)
                            .ok()
                            .and_then(|s| self.namespace.user_key(s))
                            .ok_or_else(|| Error::invalid_argument("internal: bad stored key"))?;
                        pairs.push(KvPair::new(key, r.value, r.version));
                    }
                }
            }
            Scope::Tree(last) => {
                for item in shared.data.scan_prefix(filter) {
                    let (k, v) = item.map_err(|e| map_err("watch_tree", e))?;
                    let Some(key) = std::str::from_utf8(&k)
                        .ok()
                        .and_then(|s| self.namespace.user_key(s))
                    else {
                        continue;
                    };
                    let r = Record::decode(&v)?;
                    let seen = last.entry(k).or_insert(0);
                    *seen = (*seen).max(r.version);
                    cursor = cursor.max(r.version);
                    if r.is_live(now) {
                        pairs.push(KvPair::new(key, r.value, r.version));
                    }
                }
            }
        }
        Ok((pairs, cursor))
    }

    async fn next(&mut self, cursor: u64) -> Result<Update> {
        if let Some(e) = self.deferred.take() {
            return Err(*e);
        }
        let mut cursor = cursor;
        loop {
            // Cancel-safe: the engine drops this future when the stream is dropped.
            let batch = self.sub.recv_batch(BATCH).await.ok_or(Error::Closed)?;
            let events = self.events(batch, &mut cursor)?;
            if !events.is_empty() {
                return Ok(Update::Events(events, cursor));
            }
        }
    }
}

#[async_trait]
impl Feed for SledFeed {
    async fn read(&mut self) -> Result<(Vec<KvPair>, u64)> {
        self.0.read()
    }

    async fn next(&mut self, cursor: u64) -> Result<Update> {
        self.0.next(cursor).await
    }
}

fn version(ev: &Event) -> u64 {
    match ev {
        Event::Put(p) => p.version,
        Event::Delete { version, .. } => *version,
    }
}

/// Watches the normalized `key`.
pub(crate) async fn key(driver: &SledDriver, key: &str) -> Result<WatchStream> {
    let shared = driver.shared()?;
    let sub = shared.hub.subscribe_key(driver.skey(key));
    let feed = SledFeed::new(driver, &shared, sub, Scope::Key(0));
    drop(shared);
    watch_key(BACKEND, driver.life().clone(), key.to_string(), feed).await
}

/// Watches the subtree of the normalized `prefix`.
/// The typed event stream of a subtree (see `Store::watch_events`): the same feed as `tree`.
pub(crate) async fn events(
    driver: &SledDriver,
    prefix: &str,
    from: Option<kv_core::Cursor>,
) -> Result<kv_core::EventStream> {
    let shared = driver.shared()?;
    let sub = shared.hub.subscribe_prefix(driver.subtree(prefix));
    let feed = SledFeed::new(driver, &shared, sub, Scope::Tree(HashMap::new()));
    drop(shared);
    let life = driver.life().clone();
    kv_core::raw::watch_events(BACKEND, life, prefix.to_string(), from, feed).await
}

pub(crate) async fn tree(driver: &SledDriver, prefix: &str) -> Result<TreeWatchStream> {
    let shared = driver.shared()?;
    let sub = shared.hub.subscribe_prefix(driver.subtree(prefix));
    let feed = SledFeed::new(driver, &shared, sub, Scope::Tree(HashMap::new()));
    drop(shared);
    watch_tree(BACKEND, driver.life().clone(), prefix.to_string(), feed).await
}
