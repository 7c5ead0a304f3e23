//! Fan-out of sled change events to watches and lock holders.
//!
//! One sled subscriber per database is drained by a dedicated thread that never blocks on a
//! consumer: each interested watch gets the raw `(key, record bytes)` over an unbounded channel.
//! So an unread watch stream cannot fill sled's 1024-slot subscriber queue and stall writers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// A changed key and its new record bytes (physical removals are not forwarded).
pub(crate) type Change = (sled::IVec, sled::IVec);

enum Filter {
    Key(Vec<u8>),
    Prefix(Vec<u8>),
}

impl Filter {
    fn matches(&self, key: &[u8]) -> bool {
        match self {
            Filter::Key(k) => k.as_slice() == key,
            Filter::Prefix(p) => key.starts_with(p),
        }
    }
}

#[derive(Default)]
pub(crate) struct Hub {
    subs: Mutex<HashMap<u64, (Filter, UnboundedSender<Change>)>>,
    next_id: AtomicU64,
}

/// A registered interest; unregisters on drop. `rx` yields `None` once the database closed.
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    pub rx: UnboundedReceiver<Change>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().remove(&self.id);
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Filter, UnboundedSender<Change>)>> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(self: &Arc<Self>, filter: Filter) -> Subscription {
        let (tx, rx) = unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (filter, tx));
        Subscription {
            hub: self.clone(),
            id,
            rx,
        }
    }

    /// Changes of exactly `key` (stored form).
    pub fn key(self: &Arc<Self>, key: &[u8]) -> Subscription {
        self.add(Filter::Key(key.to_vec()))
    }

    /// Changes of every stored key starting with `prefix`.
    pub fn prefix(self: &Arc<Self>, prefix: &[u8]) -> Subscription {
        self.add(Filter::Prefix(prefix.to_vec()))
    }

    fn dispatch(&self, key: &sled::IVec, value: &sled::IVec) {
        let subs = self.lock();
        for (filter, tx) in subs.values() {
            if filter.matches(key) {
                let _ = tx.send((key.clone(), value.clone()));
            }
        }
    }

    /// Drops every sender: each subscription's `rx` ends (the database is closing).
    pub fn shutdown(&self) {
        self.lock().clear();
    }
}

/// Drains `subscriber` on its own thread until the tree goes away (its subscriber channel then
/// disconnects). The blocking iterator is used on purpose: sled 0.34's `next_timeout` reports a
/// write that lost its compare-and-swap (a dropped reservation) as a disconnect.
pub(crate) fn spawn_dispatcher(hub: Arc<Hub>, subscriber: sled::Subscriber) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("kv-sled-watch".into())
        .spawn(move || {
            for event in subscriber {
                if let sled::Event::Insert { key, value } = event {
                    hub.dispatch(&key, &value);
                }
            }
            hub.shutdown();
        })
        .map(|_| ())
}
