//! [`Fanout`]: items published under stored keys, handed to the subscriptions interested in
//! them: those of that exact key and those of a prefix of it.
//!
//! Subscriptions are indexed by stored key and by subtree start (a prefix that is empty or
//! ends in `/`), so publishing costs a hash lookup of the key and of each of its `/`-prefixes,
//! plus one queue push per interested subscription, however many are registered. Other
//! prefixes (none in practice) are matched one by one. A subscription is one small allocation
//! (its inbox: filter, queue, waker) whose filter the index shares; an idle inbox holds no
//! buffer. Publishing never blocks on a consumer: every inbox is unbounded.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a panic elsewhere is harmless.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The queue of one subscription: filled by publishers, drained by its owner.
struct Inbox<T> {
    /// Follows every key starting with `filter` (else exactly `filter`).
    prefix: bool,
    /// The stored key or prefix (the index map shares this allocation).
    filter: Arc<[u8]>,
    /// The last batch pushed here (a batch touching the subscription twice goes in once).
    stamp: AtomicU64,
    queue: Mutex<Queue<T>>,
}

struct Queue<T> {
    items: VecDeque<T>,
    waker: Option<Waker>,
    /// No more items will come (the fan-out closed).
    closed: bool,
}

impl<T> Inbox<T> {
    fn push(&self, item: T) {
        let mut q = lock(&self.queue);
        q.items.push_back(item);
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }

    fn close(&self) {
        let mut q = lock(&self.queue);
        q.closed = true;
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }
}

/// The inboxes of one key or prefix: nearly always one, which then needs no allocation.
enum Slot<T> {
    One(Arc<Inbox<T>>),
    Many(Vec<Arc<Inbox<T>>>),
}

impl<T> Slot<T> {
    fn as_slice(&self) -> &[Arc<Inbox<T>>] {
        match self {
            Slot::One(i) => std::slice::from_ref(i),
            Slot::Many(v) => v,
        }
    }

    /// Removes `inbox`; `true` when none is left.
    fn remove(&mut self, inbox: &Arc<Inbox<T>>) -> bool {
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

type Routes<T> = HashMap<Arc<[u8]>, Slot<T>>;

struct Index<T> {
    /// Subscriptions to exactly one stored key.
    keys: Routes<T>,
    /// Subscriptions to a prefix that is empty or ends in `/`.
    subtrees: Routes<T>,
    /// Subscriptions to other prefixes, matched one by one.
    other: Vec<Arc<Inbox<T>>>,
    /// Batches published so far (the inboxes' stamps).
    seq: u64,
    /// Set by [`Fanout::close`]: later subscriptions start closed.
    closed: bool,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Index {
            keys: HashMap::new(),
            subtrees: HashMap::new(),
            other: Vec::new(),
            seq: 0,
            closed: false,
        }
    }
}

impl<T> Index<T> {
    fn place(&mut self, inbox: &Inbox<T>) -> Option<&mut Routes<T>> {
        match inbox.prefix {
            false => Some(&mut self.keys),
            true if inbox.filter.is_empty() || inbox.filter.ends_with(b"/") => {
                Some(&mut self.subtrees)
            }
            true => None,
        }
    }

    fn insert(&mut self, inbox: Arc<Inbox<T>>) {
        let Some(map) = self.place(&inbox) else {
            return self.other.push(inbox);
        };
        match map.entry(inbox.filter.clone()) {
            Entry::Occupied(mut e) => {
                let slot = e.get_mut();
                match slot {
                    Slot::One(first) => *slot = Slot::Many(vec![first.clone(), inbox]),
                    Slot::Many(v) => v.push(inbox),
                }
            }
            Entry::Vacant(e) => {
                e.insert(Slot::One(inbox));
            }
        }
    }

    fn remove(&mut self, inbox: &Arc<Inbox<T>>) {
        let Some(map) = self.place(inbox) else {
            return self.other.retain(|i| !Arc::ptr_eq(i, inbox));
        };
        if map.get_mut(&inbox.filter).is_some_and(|s| s.remove(inbox)) {
            map.remove(&inbox.filter);
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Inbox<T>>> {
        let maps = [&self.keys, &self.subtrees].into_iter();
        let indexed = maps.flat_map(|m| m.values().flat_map(Slot::as_slice));
        indexed.chain(&self.other)
    }

    /// Calls `f` on every inbox interested in `key` (each once: an inbox has one filter).
    fn routes(&self, key: &[u8], mut f: impl FnMut(&Arc<Inbox<T>>)) {
        let mut send =
            |slot: Option<&Slot<T>>| slot.map_or(&[][..], Slot::as_slice).iter().for_each(&mut f);
        send(self.keys.get(key));
        if !self.subtrees.is_empty() {
            send(self.subtrees.get(&b""[..]));
            for (i, _) in key.iter().enumerate().filter(|(_, b)| **b == b'/') {
                send(self.subtrees.get(&key[..=i]));
            }
        }
        let others = self.other.iter().filter(|i| key.starts_with(&i.filter));
        others.for_each(f);
    }
}

/// Items published under stored keys, fanned out to [`Subscription`]s by exact key or by
/// prefix. Dropping it closes it (see [`close`](Self::close)).
pub struct Fanout<T> {
    index: Arc<Mutex<Index<T>>>,
}

impl<T> Default for Fanout<T> {
    fn default() -> Self {
        Fanout {
            index: Arc::default(),
        }
    }
}

impl<T> std::fmt::Debug for Fanout<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout").field("len", &self.len()).finish()
    }
}

impl<T> Drop for Fanout<T> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<T: Clone + Send> Fanout<T> {
    /// An empty, open fan-out.
    pub fn new() -> Self {
        Self::default()
    }

    /// Items published under exactly `stored_key`.
    pub fn subscribe_key(&self, stored_key: impl Into<Arc<[u8]>>) -> Subscription<T> {
        self.subscribe(false, stored_key.into())
    }

    /// Items published under every key starting with `subtree_start` (any prefix; those that
    /// are empty or end in `/` are indexed, others matched one by one).
    pub fn subscribe_prefix(&self, subtree_start: impl Into<Arc<[u8]>>) -> Subscription<T> {
        self.subscribe(true, subtree_start.into())
    }

    fn subscribe(&self, prefix: bool, filter: Arc<[u8]>) -> Subscription<T> {
        let inbox = Arc::new(Inbox {
            prefix,
            filter,
            stamp: AtomicU64::new(0),
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                waker: None,
                closed: false,
            }),
        });
        let mut index = lock(&self.index);
        match index.closed {
            true => inbox.close(),
            false => index.insert(inbox.clone()),
        }
        drop(index);
        Subscription {
            index: self.index.clone(),
            inbox,
        }
    }

    /// Hands `item` to every subscription of `key` or of a prefix of it.
    pub fn publish(&self, key: &[u8], item: T) {
        lock(&self.index).routes(key, |inbox| inbox.push(item.clone()));
    }

    /// Hands `item`, which touches every key of `keys`, to every subscription of one of them
    /// or of a prefix of one, once per subscription.
    pub fn publish_batch<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>, item: T) {
        let mut index = lock(&self.index);
        index.seq += 1;
        let seq = index.seq;
        for key in keys {
            index.routes(key, |inbox| {
                // Under the index lock: no other batch stamps at the same time.
                if inbox.stamp.swap(seq, Ordering::Relaxed) != seq {
                    inbox.push(item.clone());
                }
            });
        }
    }

    /// Whether some subscription would get an item published under `key`.
    pub fn wants(&self, key: &[u8]) -> bool {
        let mut any = false;
        lock(&self.index).routes(key, |_| any = true);
        any
    }
}

impl<T> Fanout<T> {
    /// Closes every subscription, now and later: each `recv` returns `None` once its queue is
    /// drained. Publishing after this reaches nobody.
    pub fn close(&self) {
        let mut index = lock(&self.index);
        let old = std::mem::take(&mut *index);
        index.closed = true;
        drop(index);
        old.all().for_each(|i| i.close());
    }

    /// How many subscriptions are registered (for tests and benches).
    pub fn len(&self) -> usize {
        lock(&self.index).all().count()
    }

    /// Whether no subscription is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many items wait in all inboxes together (for tests and benches).
    pub fn queued(&self) -> usize {
        let index = lock(&self.index);
        index.all().map(|i| lock(&i.queue).items.len()).sum()
    }
}

/// One subscription of a [`Fanout`]: an unbounded queue of the items for its key or prefix.
/// Unregisters on drop.
pub struct Subscription<T> {
    index: Arc<Mutex<Index<T>>>,
    inbox: Arc<Inbox<T>>,
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        lock(&self.index).remove(&self.inbox);
    }
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("prefix", &self.inbox.prefix)
            .field("filter", &String::from_utf8_lossy(&self.inbox.filter))
            .finish()
    }
}

impl<T> Subscription<T> {
    /// The stored key or prefix followed.
    pub fn filter(&self) -> &[u8] {
        &self.inbox.filter
    }

    /// Whether this follows a prefix (else one key).
    pub fn is_prefix(&self) -> bool {
        self.inbox.prefix
    }

    /// The next item; `None` once the fan-out closed and the queue is drained. Cancel-safe.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut q = lock(&self.inbox.queue);
            if let Some(item) = q.items.pop_front() {
                if q.items.is_empty() {
                    q.items = VecDeque::new(); // an idle inbox keeps no capacity
                }
                return Poll::Ready(Some(item));
            }
            if q.closed {
                return Poll::Ready(None);
            }
            q.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Waits for items and takes up to `max` of them (at least one); `None` once the fan-out
    /// closed and nothing is left. Cancel-safe: nothing is taken until it returns.
    pub async fn recv_batch(&mut self, max: usize) -> Option<Vec<T>> {
        poll_fn(|cx| {
            let mut q = lock(&self.inbox.queue);
            if q.items.is_empty() {
                if q.closed {
                    return Poll::Ready(None);
                }
                q.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Some(match q.items.len() <= max {
                // Hands the buffer over: an idle inbox keeps no capacity.
                true => Vec::from(std::mem::take(&mut q.items)),
                false => q.items.drain(..max).collect(),
            }))
        })
        .await
    }

    /// Drops every queued item (e.g. after a re-read that makes them stale).
    pub fn clear(&self) {
        lock(&self.inbox.queue).items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests;
