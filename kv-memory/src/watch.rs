//! Watches: a subscription to the store's change batches, fed to kv-core's watch engine.

use std::sync::{Arc, Weak};

use kv_core::raw::{Event, Feed, Namespace, Update};
use kv_core::{async_trait, Error, KvPair, Result};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::state::{Change, Shared};
use crate::store::MemoryDriver;

/// One watch's changes. The engine keeps only those of the watched key or subtree. Weak: a
/// watch does not keep a dropped store alive (it then ends with `Err(Closed)`).
pub(crate) struct MemFeed {
    shared: Weak<Shared>,
    ns: Namespace,
    /// The stored key watched, or (`tree`) the stored start of the subtree watched.
    key: String,
    tree: bool,
    rx: Option<UnboundedReceiver<Arc<[Change]>>>,
}

impl MemFeed {
    pub fn new(d: &MemoryDriver, key: String, tree: bool) -> Self {
        let (shared, ns) = (Arc::downgrade(&d.shared), d.ns.clone());
        MemFeed {
            shared,
            ns,
            key,
            tree,
            rx: None,
        }
    }
}

#[async_trait]
impl Feed for MemFeed {
    async fn read(&mut self) -> Result<(Vec<KvPair>, u64)> {
        let shared = self.shared.upgrade().ok_or(Error::Closed)?;
        let (tx, rx) = unbounded_channel();
        self.rx = Some(rx);
        // Subscribing under the same lock as the read: no change falls between them.
        Ok(shared.with(|st| {
            st.subs.push(tx);
            let pairs = match self.tree {
                false => st.pair(&self.ns, &self.key).into_iter().collect(),
                true => st.list(&self.ns, &self.key),
            };
            (pairs, st.rev)
        }))
    }

    async fn next(&mut self, _cursor: u64) -> Result<Update> {
        let rx = self.rx.as_mut().ok_or(Error::Closed)?;
        let mut batches = vec![rx.recv().await.ok_or(Error::Closed)?]; // None: store gone
        while let Ok(more) = rx.try_recv() {
            batches.push(more);
        }
        let changes = batches.iter().flat_map(|b| b.iter());
        let events = changes.filter_map(|(stored, change, rev)| {
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
