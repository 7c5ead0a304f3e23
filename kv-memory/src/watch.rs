//! Watches: each watch's inbox of change batches, indexed by watched key and subtree, fed to
//! kv-core's watch engine.
//!
//! A batch (the changes of one call, which share a revision) goes only to the watches of a key
//! or subtree it touches, once per watch, so a put costs a hash lookup per `/`-prefix of its
//! key however many watches the store has, and wakes only its own watchers. An idle inbox
//! holds no buffer.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};

use kv_core::raw::{Event, Feed, Namespace, Update};
use kv_core::{async_trait, Error, KvPair, Result};

use crate::state::{Change, Shared};
use crate::store::MemoryDriver;

/// One watch's queue of batches, filled under the store's lock.
struct Inbox {
    /// The last publication pushed here (a batch touching the watch twice goes in once).
    stamp: AtomicU64,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Arc<[Change]>>,
    waker: Option<Waker>,
    /// The store is gone: no more batches.
    closed: bool,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, batch: &Arc<[Change]>) {
        let mut q = self.lock();
        q.batches.push_back(batch.clone());
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }

    fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }
}

type Inboxes = HashMap<Arc<str>, Vec<Arc<Inbox>>>;

/// The store's watches, by stored key and by subtree start (`""` or ending in `/`).
#[derive(Default)]
pub(crate) struct Watches {
    keys: Inboxes,
    subtrees: Inboxes,
    /// Publications so far (the inboxes' stamps).
    seq: u64,
}

impl Drop for Watches {
    /// The store is gone: every watch ends once it has read what was queued.
    fn drop(&mut self) {
        for inbox in self.keys.values().chain(self.subtrees.values()).flatten() {
            inbox.close();
        }
    }
}

impl Watches {
    fn map(&mut self, tree: bool) -> &mut Inboxes {
        if tree {
            &mut self.subtrees
        } else {
            &mut self.keys
        }
    }

    fn insert(&mut self, tree: bool, key: &Arc<str>, inbox: Arc<Inbox>) {
        self.map(tree).entry(key.clone()).or_default().push(inbox);
    }

    fn remove(&mut self, tree: bool, key: &Arc<str>, inbox: &Arc<Inbox>) {
        let map = self.map(tree);
        if let Some(v) = map.get_mut(key) {
            v.retain(|i| !Arc::ptr_eq(i, inbox));
            if v.is_empty() {
                map.remove(key);
            }
        }
    }

    /// The inboxes interested in stored key `key`.
    fn routes<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Arc<Inbox>> + 'a {
        let starts =
            std::iter::once("").chain(key.match_indices('/').map(move |(i, _)| &key[..=i]));
        let subtrees = starts
            .filter(|_| !self.subtrees.is_empty())
            .filter_map(|s| self.subtrees.get(s));
        self.keys.get(key).into_iter().chain(subtrees).flatten()
    }

    /// Whether a change of `key` is watched (otherwise no change record is built).
    pub fn wants(&self, key: &str) -> bool {
        self.routes(key).next().is_some()
    }

    /// Hands `batch` to every watch of a key or subtree it touches, once each.
    pub fn publish(&mut self, batch: Arc<[Change]>) {
        self.seq += 1;
        for (key, _, _) in batch.iter() {
            for inbox in self.routes(key) {
                if inbox.stamp.swap(self.seq, Ordering::Relaxed) != self.seq {
                    inbox.push(&batch);
                }
            }
        }
    }
}

/// One watch's changes: its inbox, registered under the store's lock by the first read.
/// Weak: a watch does not keep a dropped store alive (it then ends with `Err(Closed)`).
/// Boxed, so the engine's task holding it stays in its smallest size class.
pub(crate) struct MemFeed(Box<Inner>);

struct Inner {
    shared: Weak<Shared>,
    ns: Arc<Namespace>,
    /// The stored key watched, or (`tree`) the stored start of the subtree watched.
    key: Arc<str>,
    tree: bool,
    inbox: Option<Arc<Inbox>>,
}

impl MemFeed {
    pub fn new(d: &MemoryDriver, key: String, tree: bool) -> Self {
        MemFeed(Box::new(Inner {
            shared: Arc::downgrade(&d.shared),
            ns: d.ns.clone(),
            key: key.into(),
            tree,
            inbox: None,
        }))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let (Some(inbox), Some(shared)) = (&self.inbox, self.shared.upgrade()) {
            shared.with(|st| st.watches.remove(self.tree, &self.key, inbox));
        }
    }
}

impl Inner {
    fn covers(&self, stored: &str) -> bool {
        match self.tree {
            false => stored == &*self.key,
            true => stored.starts_with(&*self.key),
        }
    }

    fn read(&mut self) -> Result<(Vec<KvPair>, u64)> {
        let shared = self.shared.upgrade().ok_or(Error::Closed)?;
        // Registering under the same lock as the read: no change falls between them.
        Ok(shared.with(|st| {
            match &self.inbox {
                // A re-read: what is queued is older than the state read now.
                Some(inbox) => inbox.lock().batches.clear(),
                None => {
                    let inbox = Arc::new(Inbox {
                        stamp: AtomicU64::new(0),
                        queue: Mutex::default(),
                    });
                    st.watches.insert(self.tree, &self.key, inbox.clone());
                    self.inbox = Some(inbox);
                }
            }
            let pairs = match self.tree {
                false => st.pair(&self.ns, &self.key).into_iter().collect(),
                true => st.list(&self.ns, &self.key),
            };
            (pairs, st.rev)
        }))
    }

    async fn next(&mut self) -> Result<Update> {
        let inbox = self.inbox.clone().ok_or(Error::Closed)?;
        let batches = poll_fn(|cx| {
            let mut q = inbox.lock();
            if !q.batches.is_empty() {
                return Poll::Ready(Ok(std::mem::take(&mut q.batches)));
            }
            if q.closed {
                return Poll::Ready(Err(Error::Closed)); // the store is gone
            }
            q.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        let changes = batches.iter().flat_map(|b| b.iter());
        let events = changes.filter(|(stored, _, _)| self.covers(stored));
        let events = events.filter_map(|(stored, change, rev)| {
            let key = self.ns.user_key(stored)?;
            Some(match change {
                Some((value, version)) => Event::Put(KvPair::new(key, value.clone(), *version)),
                None => Event::Delete { key, version: *rev },
            })
        });
        let events: Vec<Event> = events.collect();
        let cursor = batches.back().and_then(|b| b.last()).map_or(0, |c| c.2);
        Ok(Update::Events(events, cursor))
    }
}

#[async_trait]
impl Feed for MemFeed {
    async fn read(&mut self) -> Result<(Vec<KvPair>, u64)> {
        self.0.read()
    }

    async fn next(&mut self, _cursor: u64) -> Result<Update> {
        self.0.next().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use futures::StreamExt;
    use kv_core::{PutOptions, Store};

    use super::*;

    impl Watches {
        fn len(&self) -> usize {
            self.keys
                .values()
                .chain(self.subtrees.values())
                .map(Vec::len)
                .sum()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routes_only_to_interested_watches_and_unregisters_on_drop() {
        let store = crate::new_store();
        let count = || store.shared.with(|st| st.watches.len());
        let mut a = store.watch("a/b").await.unwrap();
        let mut twin = store.watch("a/b").await.unwrap();
        let mut tree = store.watch_tree("a").await.unwrap();
        let mut root = store.watch_tree("").await.unwrap();
        let mut other = store.watch("c").await.unwrap();
        for w in [&mut a, &mut twin, &mut other] {
            assert_eq!(w.next().await.unwrap().unwrap(), None);
        }
        for t in [&mut tree, &mut root] {
            assert_eq!(t.next().await.unwrap().unwrap(), vec![]);
        }
        assert_eq!(count(), 5);
        let inbox = |w: bool| {
            store.shared.with(|st| {
                let map = if w {
                    &st.watches.subtrees
                } else {
                    &st.watches.keys
                };
                map.values()
                    .flatten()
                    .map(|i| i.lock().batches.len())
                    .sum::<usize>()
            })
        };
        store.put("a/x", b"1", PutOptions::default()).await.unwrap();
        assert_eq!(inbox(false), 0, "no key watch gets another key's change");
        assert_eq!(tree.next().await.unwrap().unwrap().len(), 1);
        assert_eq!(root.next().await.unwrap().unwrap().len(), 1);
        store
            .shared
            .with(|st| assert!(st.watches.wants("zzz"), "the root watch"));
        drop((a, twin, tree, root));
        let deadline = Instant::now() + Duration::from_secs(10);
        while count() > 1 {
            assert!(Instant::now() < deadline, "dropped watches unregister");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A change nobody watches builds no batch at all.
        store
            .shared
            .with(|st| assert!(!st.watches.wants("a/b") && st.watches.wants("c")));
        let p = store.put("c", b"v", PutOptions::default()).await.unwrap();
        assert_eq!(other.next().await.unwrap().unwrap(), Some(p));
    }
}
