//! Fan-out of sled change events to watches and lock holders.
//!
//! One sled subscriber per database is drained by a dedicated thread that never blocks on a
//! consumer: each interested subscription gets the raw `(key, record bytes)` in its own
//! unbounded [`Inbox`]. So an unread watch stream cannot fill sled's 1024-slot subscriber queue
//! and stall writers.
//!
//! Interests are indexed by stored key and by subtree start, so dispatching one change costs
//! a hash lookup of the key and of each of its `/`-prefixes (plus one queue push per
//! interested subscription), however many are registered. A subscription costs one small
//! allocation (its inbox, which also holds the watched key the index shares) and an index
//! slot: an idle inbox holds no buffer, so 10,000 watches cost well under 1 KiB each here.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// A changed key and its new record bytes (physical removals are not forwarded).
pub(crate) type Change = (sled::IVec, sled::IVec);

/// What one subscription follows: a stored key, or every stored key starting with a prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Key,
    Prefix,
}

/// The queue of one subscription: filled by the dispatcher thread, drained by its task.
struct Inbox {
    kind: Kind,
    /// The stored key or prefix (the index map shares this allocation).
    filter: Arc<[u8]>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    changes: VecDeque<Change>,
    waker: Option<Waker>,
    /// No more changes will come (the database closed).
    closed: bool,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, change: Change) {
        let mut q = self.lock();
        q.changes.push_back(change);
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

/// The inboxes of one key or prefix: nearly always one, which then needs no allocation.
enum Slot {
    One(Arc<Inbox>),
    Many(Vec<Arc<Inbox>>),
}

impl Slot {
    fn as_slice(&self) -> &[Arc<Inbox>] {
        match self {
            Slot::One(i) => std::slice::from_ref(i),
            Slot::Many(v) => v,
        }
    }

    fn push(&mut self, inbox: Arc<Inbox>) {
        match self {
            Slot::One(first) => *self = Slot::Many(vec![first.clone(), inbox]),
            Slot::Many(v) => v.push(inbox),
        }
    }

    /// Removes `inbox`; `true` when none is left.
    fn remove(&mut self, inbox: &Arc<Inbox>) -> bool {
        match self {
            Slot::One(i) => Arc::ptr_eq(i, inbox),
            Slot::Many(v) => {
                v.retain(|i| !Arc::ptr_eq(i, inbox));
                let empty = v.is_empty();
                if v.len() == 1 {
                    *self = Slot::One(v.remove(0));
                }
                empty
            }
        }
    }
}

type Inboxes = HashMap<Arc<[u8]>, Slot>;

#[derive(Default)]
struct Index {
    /// Interests in exactly one stored key.
    keys: Inboxes,
    /// Interests in every stored key starting with a prefix that is empty or ends in `/`.
    subtrees: Inboxes,
    /// Interests in other prefixes (none in practice), matched one by one.
    other: Vec<Arc<Inbox>>,
    /// Set by [`Hub::shutdown`]: later subscriptions start closed.
    closed: bool,
}

impl Index {
    fn place(&mut self, inbox: &Inbox) -> Option<&mut Inboxes> {
        match inbox.kind {
            Kind::Key => Some(&mut self.keys),
            Kind::Prefix if inbox.filter.is_empty() || inbox.filter.ends_with(b"/") => {
                Some(&mut self.subtrees)
            }
            Kind::Prefix => None,
        }
    }

    fn insert(&mut self, inbox: Arc<Inbox>) {
        let Some(map) = self.place(&inbox) else {
            return self.other.push(inbox);
        };
        match map.entry(inbox.filter.clone()) {
            Entry::Occupied(mut e) => e.get_mut().push(inbox),
            Entry::Vacant(e) => {
                e.insert(Slot::One(inbox));
            }
        }
    }

    fn remove(&mut self, inbox: &Arc<Inbox>) {
        let Some(map) = self.place(inbox) else {
            return self.other.retain(|i| !Arc::ptr_eq(i, inbox));
        };
        if map.get_mut(&inbox.filter).is_some_and(|s| s.remove(inbox)) {
            map.remove(&inbox.filter);
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Inbox>> {
        let maps = [&self.keys, &self.subtrees];
        maps.into_iter()
            .flat_map(|m| m.values().flat_map(Slot::as_slice))
            .chain(&self.other)
    }
}

/// The interests of one database's watches and lock holders.
#[derive(Default)]
pub(crate) struct Hub {
    index: Mutex<Index>,
}

/// A registered interest; unregisters on drop. [`recv`](Self::recv) yields `None` once the
/// database closed (after every change queued before).
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    inbox: Arc<Inbox>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().remove(&self.inbox);
    }
}

impl Subscription {
    /// The stored key or prefix this subscription follows.
    pub fn filter(&self) -> &[u8] {
        &self.inbox.filter
    }

    /// Waits for queued changes and takes up to `max` of them (at least one); `None` once the
    /// database closed and nothing is left. Cancel-safe: nothing is taken until it returns.
    pub async fn recv_batch(&mut self, max: usize) -> Option<Vec<Change>> {
        poll_fn(|cx| {
            let mut q = self.inbox.lock();
            if q.changes.is_empty() {
                if q.closed {
                    return Poll::Ready(None);
                }
                q.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let batch = if q.changes.len() <= max {
                // Hands the buffer over: an idle inbox keeps no capacity.
                Vec::from(std::mem::take(&mut q.changes))
            } else {
                q.changes.drain(..max).collect()
            };
            Poll::Ready(Some(batch))
        })
        .await
    }

    /// Waits for the next change; `None` once the database closed. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Change> {
        poll_fn(|cx| {
            let mut q = self.inbox.lock();
            if let Some(c) = q.changes.pop_front() {
                if q.changes.is_empty() {
                    q.changes = VecDeque::new();
                }
                return Poll::Ready(Some(c));
            }
            if q.closed {
                return Poll::Ready(None);
            }
            q.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(self: &Arc<Self>, kind: Kind, filter: &[u8]) -> Subscription {
        let inbox = Arc::new(Inbox {
            kind,
            filter: filter.into(),
            queue: Mutex::default(),
        });
        let mut index = self.lock();
        if index.closed {
            inbox.close();
        } else {
            index.insert(inbox.clone());
        }
        drop(index);
        Subscription {
            hub: self.clone(),
            inbox,
        }
    }

    /// Changes of exactly `key` (stored form).
    pub fn key(self: &Arc<Self>, key: &[u8]) -> Subscription {
        self.add(Kind::Key, key)
    }

    /// Changes of every stored key starting with `prefix`.
    pub fn prefix(self: &Arc<Self>, prefix: &[u8]) -> Subscription {
        self.add(Kind::Prefix, prefix)
    }

    /// How many interests are registered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().all().count()
    }

    fn dispatch(&self, key: &sled::IVec, value: &sled::IVec) {
        let index = self.lock();
        let send = |slot: Option<&Slot>| {
            for inbox in slot.map_or(&[][..], Slot::as_slice) {
                inbox.push((key.clone(), value.clone()));
            }
        };
        send(index.keys.get(key.as_ref()));
        if !index.subtrees.is_empty() {
            send(index.subtrees.get(&b""[..]));
            for (i, _) in key.iter().enumerate().filter(|(_, b)| **b == b'/') {
                send(index.subtrees.get(&key[..=i]));
            }
        }
        for inbox in &index.other {
            if key.starts_with(&inbox.filter) {
                inbox.push((key.clone(), value.clone()));
            }
        }
    }

    /// Closes every subscription, now and later: each `recv` ends once its queue is drained
    /// (the database is closing).
    pub fn shutdown(&self) {
        let mut index = self.lock();
        let old = std::mem::take(&mut *index);
        index.closed = true;
        drop(index);
        old.all().for_each(|i| i.close());
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
mod tests;
