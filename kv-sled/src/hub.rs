//! Fan-out of sled change events to watches and lock holders.
//!
//! One sled subscriber per database is drained by a dedicated thread that never blocks on a
//! consumer: each interested watch gets the raw `(key, record bytes)` over an unbounded channel.
//! So an unread watch stream cannot fill sled's 1024-slot subscriber queue and stall writers.
//!
//! Interests are indexed by stored key and by subtree start, so dispatching one change costs
//! a hash lookup of the key and of each of its `/`-prefixes (plus one channel send per
//! interested watch), however many watches are registered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// A changed key and its new record bytes (physical removals are not forwarded).
pub(crate) type Change = (sled::IVec, sled::IVec);

type Senders = HashMap<u64, UnboundedSender<Change>>;

#[derive(Default)]
struct Index {
    /// Interests in exactly one stored key.
    keys: HashMap<Vec<u8>, Senders>,
    /// Interests in every stored key starting with a prefix that is empty or ends in `/`.
    subtrees: HashMap<Vec<u8>, Senders>,
    /// Interests in other prefixes (none in practice), matched one by one.
    other: HashMap<u64, (Vec<u8>, UnboundedSender<Change>)>,
}

enum Filter {
    Key(Vec<u8>),
    Prefix(Vec<u8>),
}

impl Index {
    fn insert(&mut self, id: u64, filter: &Filter, tx: UnboundedSender<Change>) {
        match filter {
            Filter::Key(k) => {
                self.keys.entry(k.clone()).or_default().insert(id, tx);
            }
            Filter::Prefix(p) if p.is_empty() || p.ends_with(b"/") => {
                self.subtrees.entry(p.clone()).or_default().insert(id, tx);
            }
            Filter::Prefix(p) => {
                self.other.insert(id, (p.clone(), tx));
            }
        }
    }

    fn remove(&mut self, id: u64, filter: &Filter) {
        fn take(map: &mut HashMap<Vec<u8>, Senders>, k: &[u8], id: u64) {
            if let Some(s) = map.get_mut(k) {
                s.remove(&id);
                if s.is_empty() {
                    map.remove(k);
                }
            }
        }
        match filter {
            Filter::Key(k) => take(&mut self.keys, k, id),
            Filter::Prefix(p) if p.is_empty() || p.ends_with(b"/") => {
                take(&mut self.subtrees, p, id)
            }
            Filter::Prefix(_) => {
                self.other.remove(&id);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let sum = |m: &HashMap<Vec<u8>, Senders>| m.values().map(HashMap::len).sum::<usize>();
        sum(&self.keys) + sum(&self.subtrees) + self.other.len()
    }
}

/// The interests of one database's watches and lock holders.
#[derive(Default)]
pub(crate) struct Hub {
    index: Mutex<Index>,
    next_id: AtomicU64,
}

/// A registered interest; unregisters on drop. `rx` yields `None` once the database closed.
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    filter: Filter,
    pub rx: UnboundedReceiver<Change>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().remove(self.id, &self.filter);
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(self: &Arc<Self>, filter: Filter) -> Subscription {
        let (tx, rx) = unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, &filter, tx);
        Subscription {
            hub: self.clone(),
            id,
            filter,
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

    /// How many interests are registered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn dispatch(&self, key: &sled::IVec, value: &sled::IVec) {
        let index = self.lock();
        let send = |senders: Option<&Senders>| {
            for tx in senders.into_iter().flat_map(HashMap::values) {
                let _ = tx.send((key.clone(), value.clone()));
            }
        };
        send(index.keys.get(key.as_ref()));
        if !index.subtrees.is_empty() {
            send(index.subtrees.get(&b""[..]));
            for (i, _) in key.iter().enumerate().filter(|(_, b)| **b == b'/') {
                send(index.subtrees.get(&key[..=i]));
            }
        }
        for (p, tx) in index.other.values() {
            if key.starts_with(p) {
                let _ = tx.send((key.clone(), value.clone()));
            }
        }
    }

    /// Drops every sender: each subscription's `rx` ends (the database is closing).
    pub fn shutdown(&self) {
        *self.lock() = Index::default();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn got(s: &mut Subscription) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| s.rx.try_recv().ok())
            .map(|(k, _)| k.to_vec())
            .collect()
    }

    #[test]
    fn index_routes_by_key_and_subtree_and_unregisters() {
        let hub = Arc::new(Hub::default());
        let mut key = hub.key(b"a/b");
        let mut root = hub.prefix(b"");
        let mut a = hub.prefix(b"a/");
        let mut ab = hub.prefix(b"a/b/");
        let mut odd = hub.prefix(b"a/b");
        let idle: Vec<_> = (0..1000)
            .map(|i| hub.key(format!("x/{i}").as_bytes()))
            .collect();
        assert_eq!(hub.len(), 1005);
        for k in ["a/b", "a/b/c", "a/bc", "b"] {
            hub.dispatch(&k.as_bytes().into(), &b"v".into());
        }
        let v = |ks: &[&str]| ks.iter().map(|k| k.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(got(&mut key), v(&["a/b"]));
        assert_eq!(got(&mut root), v(&["a/b", "a/b/c", "a/bc", "b"]));
        assert_eq!(got(&mut a), v(&["a/b", "a/b/c", "a/bc"]));
        assert_eq!(got(&mut ab), v(&["a/b/c"]));
        assert_eq!(got(&mut odd), v(&["a/b", "a/b/c", "a/bc"]));
        drop(idle);
        drop((key, a, ab, odd));
        assert_eq!(hub.len(), 1);
        hub.shutdown();
        assert_eq!(hub.len(), 0);
        assert!(matches!(
            root.rx.try_recv(),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
