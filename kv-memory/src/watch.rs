//! Watches: each watch is a [`Subscription`] of the store's [`Fanout`] of change batches
//! (by stored key or subtree start), fed to kv-core's watch engine.
//!
//! A batch (the changes of one call, which share a revision) goes only to the watches of a key
//! or subtree it touches, once per watch, so a put costs a hash lookup per `/`-prefix of its
//! key however many watches the store has, and wakes only its own watchers.

use std::sync::{Arc, Weak};

use kv_core::raw::{Event, Fanout, Feed, Namespace, Subscription, Update};
use kv_core::{async_trait, Error, KvPair, Result};

use crate::state::{Change, Shared};
use crate::store::MemoryDriver;

/// The store's watches; dropped with the store, which ends them all.
pub(crate) type Watches = Fanout<Arc<[Change]>>;

/// One watch's changes. Weak: a watch does not keep a dropped store alive (it then ends with
/// `Err(Closed)`). Boxed, so the engine's task holding it stays in its smallest size class.
pub(crate) struct MemFeed(Box<Inner>);

struct Inner {
    shared: Weak<Shared>,
    ns: Arc<Namespace>,
    /// Follows the stored key, or (prefix) the stored start of the subtree, watched.
    sub: Subscription<Arc<[Change]>>,
}

impl MemFeed {
    pub fn new(d: &MemoryDriver, key: String, tree: bool) -> Self {
        let key = Arc::<str>::from(key); // shared with the index
        let sub = d.shared.with(|st| match tree {
            false => st.watches.subscribe_key(key),
            true => st.watches.subscribe_prefix(key),
        });
        let (shared, ns) = (Arc::downgrade(&d.shared), d.ns.clone());
        MemFeed(Box::new(Inner { shared, ns, sub }))
    }
}

impl Inner {
    fn read(&mut self) -> Result<(Vec<KvPair>, u64)> {
        let shared = self.shared.upgrade().ok_or(Error::Closed)?;
        let key = std::str::from_utf8(self.sub.filter()).map_err(|_| Error::Closed)?;
        // Under the lock that publishes: what is queued now is older than this read.
        Ok(shared.with(|st| {
            self.sub.clear();
            let pairs = match self.sub.is_prefix() {
                false => st.pair(&self.ns, key).into_iter().collect(),
                true => st.list(&self.ns, key),
            };
            (pairs, st.rev)
        }))
    }

    async fn next(&mut self) -> Result<Update> {
        // `None`: the store is gone.
        let batches = self.sub.recv_batch(usize::MAX).await.ok_or(Error::Closed)?;
        let (filter, prefix) = (self.sub.filter(), self.sub.is_prefix());
        let covers = |k: &str| k.as_bytes() == filter || prefix && k.as_bytes().starts_with(filter);
        let changes = batches.iter().flat_map(|b| b.iter());
        let events = changes.filter(|(stored, _, _)| covers(stored));
        let events = events.filter_map(|(stored, change, rev)| {
            let key = self.ns.user_key(stored)?;
            Some(match change {
                Some((value, version)) => Event::Put(KvPair::new(key, value.clone(), *version)),
                None => Event::Delete { key, version: *rev },
            })
        });
        let events: Vec<Event> = events.collect();
        let cursor = batches.last().and_then(|b| b.last()).map_or(0, |c| c.2);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watches_subscribe_by_key_and_subtree_and_unregister_on_drop() {
        let store = crate::new_store();
        let watches = || store.shared.with(|st| st.watches.len());
        let wants = |k: &str| store.shared.with(|st| st.watches.wants(k.as_bytes()));
        let (mut a, mut tree) = (
            store.watch("a/b").await.unwrap(),
            store.watch_tree("a").await,
        );
        let mut other = store.watch("c").await.unwrap();
        assert_eq!(a.next().await.unwrap().unwrap(), None);
        assert_eq!(watches(), 3);
        assert!(wants("a/b") && wants("a/x") && !wants("b") && !wants("zzz"));
        store.put("a/x", b"1", PutOptions::default()).await.unwrap();
        let tree = tree.as_mut().unwrap();
        assert_eq!(tree.next().await.unwrap().unwrap(), vec![]);
        assert_eq!(tree.next().await.unwrap().unwrap().len(), 1);
        drop((a, store.watch_tree("").await.unwrap()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while watches() > 2 {
            assert!(Instant::now() < deadline, "dropped watches unregister");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A change nobody watches builds no batch at all.
        assert!(!wants("zzz") && wants("a/y") && wants("c"));
        assert_eq!(other.next().await.unwrap().unwrap(), None);
        let p = store.put("c", b"v", PutOptions::default()).await.unwrap();
        assert_eq!(other.next().await.unwrap().unwrap(), Some(p));
    }
}
