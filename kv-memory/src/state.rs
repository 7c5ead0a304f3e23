//! The shared store: one `Mutex<State>` per store, held only for short synchronous sections,
//! and the process-wide registry of named stores.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use kv_core::lock::LostNotifier;
use kv_core::raw::{Event, Namespace};
use kv_core::KvPair;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Named stores, alive while a handle holds them.
static REGISTRY: Mutex<BTreeMap<String, Weak<Shared>>> = Mutex::new(BTreeMap::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent, so a panic elsewhere is harmless.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One store, shared by its handles.
pub(crate) struct Shared {
    name: String,
    state: Mutex<State>,
}

impl Shared {
    /// The store named `name` (a new one if no handle holds it), or a private one for `""`.
    pub fn get(name: &str) -> Arc<Shared> {
        let new = || {
            Arc::new(Shared {
                name: name.to_string(),
                state: Mutex::new(State::default()),
            })
        };
        if name.is_empty() {
            return new();
        }
        let mut reg = lock(&REGISTRY);
        if let Some(s) = reg.get(name).and_then(Weak::upgrade) {
            return s;
        }
        let s = new();
        reg.insert(name.to_string(), Arc::downgrade(&s));
        s
    }

    /// Locks the state, first expiring every key whose TTL has passed. Changes are published
    /// to watches when the guard drops.
    pub fn lock(self: &Arc<Self>) -> Guard<'_> {
        let mut g = Guard {
            shared: self,
            state: lock(&self.state),
        };
        g.purge();
        g
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let mut reg = lock(&REGISTRY);
            if reg.get(&self.name).is_some_and(|w| w.strong_count() == 0) {
                reg.remove(&self.name);
            }
        }
    }
}

/// A stored value.
pub(crate) struct Entry {
    pub value: Vec<u8>,
    pub version: u64,
    expires: Option<Instant>,
}

/// A lock key's holder and queue (FIFO: the front waiter takes the lock when it is free).
#[derive(Default)]
pub(crate) struct Slot {
    pub holder: Option<Holder>,
    pub queue: VecDeque<u64>,
    pub notify: Arc<Notify>,
}

/// The acquisition holding a lock: the version it wrote and its lost signal.
pub(crate) struct Holder {
    pub id: u64,
    pub version: u64,
    pub notifier: LostNotifier,
}

/// What a watch follows, in stored keys.
#[derive(Clone)]
pub(crate) enum Scope {
    Key(String),
    /// Stored keys starting with this (`""`: all).
    Tree(String),
}

impl Scope {
    fn contains(&self, stored: &str) -> bool {
        match self {
            Scope::Key(k) => k == stored,
            Scope::Tree(start) => stored.starts_with(start.as_str()) && stored != start,
        }
    }
}

/// A watch's subscription: every change in its scope, one batch per store operation.
pub(crate) struct Sub {
    pub ns: Namespace,
    pub scope: Scope,
    pub tx: mpsc::UnboundedSender<(Vec<Event>, u64)>,
}

struct Change {
    key: String,
    entry: Option<(Vec<u8>, u64)>,
    rev: u64,
}

/// The store's data, TTL index, watches and locks.
#[derive(Default)]
pub(crate) struct State {
    /// Store-wide revision: every write takes the next one as its version, so a key's
    /// versions strictly increase, also across a delete and re-create.
    pub rev: u64,
    ids: u64,
    pub data: BTreeMap<String, Entry>,
    expiry: BTreeSet<(Instant, String)>,
    pub subs: Vec<Sub>,
    pub locks: HashMap<String, Slot>,
    pending: Vec<Change>,
    timers: Vec<Instant>,
}

impl State {
    /// The next revision (one per write operation; all writes of a transaction share it).
    pub fn next_rev(&mut self) -> u64 {
        self.rev += 1;
        self.rev
    }

    /// A fresh id for a lock acquisition.
    pub fn next_id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    /// The version of a stored key, `None` when absent.
    pub fn version(&self, stored: &str) -> Option<u64> {
        self.data.get(stored).map(|e| e.version)
    }

    /// The pair at a stored key, with its user key.
    pub fn pair(&self, ns: &Namespace, stored: &str) -> Option<KvPair> {
        let e = self.data.get(stored)?;
        Some(KvPair::new(
            ns.user_key(stored)?,
            e.value.clone(),
            e.version,
        ))
    }

    /// Stored keys starting with `start` (a subtree start: `"ns/p/"` or `""`).
    pub fn keys(&self, start: &str) -> Vec<String> {
        self.data
            .range(start.to_string()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(start))
            .cloned()
            .collect()
    }

    /// The pairs of a subtree in key order.
    pub fn list(&self, ns: &Namespace, start: &str) -> Vec<KvPair> {
        self.keys(start)
            .iter()
            .filter_map(|k| self.pair(ns, k))
            .collect()
    }

    /// Writes (`Some`) or deletes (`None`) a stored key with version `rev`. A lock held on
    /// the key is lost (the lock's own writes take the holder out first). `false` when a
    /// delete found nothing.
    pub fn write(&mut self, key: &str, new: Option<(Vec<u8>, Option<Instant>)>, rev: u64) -> bool {
        let is_put = new.is_some();
        let written = match &new {
            Some((v, _)) if !self.subs.is_empty() => Some((v.clone(), rev)),
            _ => None,
        };
        let old = match new {
            Some((value, expires)) => {
                if let Some(at) = expires {
                    self.expiry.insert((at, key.to_string()));
                    self.timers.push(at);
                }
                let entry = Entry {
                    value,
                    version: rev,
                    expires,
                };
                self.data.insert(key.to_string(), entry)
            }
            None => self.data.remove(key),
        };
        let expired = match old.as_ref() {
            Some(Entry {
                expires: Some(at), ..
            }) => {
                self.expiry.remove(&(*at, key.to_string()));
                *at <= Instant::now()
            }
            Some(_) => false,
            None if !is_put => return false,
            None => false,
        };
        if let Some(slot) = self.locks.get_mut(key) {
            if let Some(h) = slot.holder.take() {
                h.notifier.fire(match (is_put, expired) {
                    (true, _) => "the lock key was overwritten by another writer",
                    (false, true) => "the lock expired (its TTL passed without renewal)",
                    (false, false) => "the lock key was deleted by another caller",
                });
                tracing::debug!(backend = "memory", key, "lock lost");
                slot.notify.notify_waiters();
            }
            self.gc(key);
        }
        if !self.subs.is_empty() {
            self.pending.push(Change {
                key: key.to_string(),
                entry: written,
                rev,
            });
        }
        true
    }

    /// Drops the lock slot of `key` when nobody holds or waits for it.
    pub fn gc(&mut self, key: &str) {
        if self
            .locks
            .get(key)
            .is_some_and(|s| s.holder.is_none() && s.queue.is_empty())
        {
            self.locks.remove(key);
        }
    }

    /// Deletes every key whose TTL has passed (one revision for all of them).
    fn purge(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        while self.expiry.first().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, k)) = self.expiry.pop_first() {
                due.push(k);
            }
        }
        if !due.is_empty() {
            let rev = self.next_rev();
            for k in due {
                self.write(&k, None, rev);
            }
        }
    }

    /// Sends the pending changes to every watch they concern; drops dead watches.
    fn publish(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.pending);
        let rev = self.rev;
        self.subs.retain(|s| {
            let events: Vec<Event> = changes
                .iter()
                .filter(|c| s.scope.contains(&c.key))
                .filter_map(|c| {
                    let key = s.ns.user_key(&c.key)?;
                    Some(match &c.entry {
                        Some((v, ver)) => Event::Put(KvPair::new(key, v.clone(), *ver)),
                        None => Event::Delete {
                            key,
                            version: c.rev,
                        },
                    })
                })
                .collect();
            if events.is_empty() {
                !s.tx.is_closed()
            } else {
                s.tx.send((events, rev)).is_ok()
            }
        });
    }
}

/// The locked state of a store; publishes changes and starts expiry timers when dropped.
pub(crate) struct Guard<'a> {
    shared: &'a Arc<Shared>,
    state: MutexGuard<'a, State>,
}

impl std::ops::Deref for Guard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.state.publish();
        let timers = std::mem::take(&mut self.state.timers);
        if timers.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // expired keys still vanish at the next call
        };
        for at in timers {
            let weak = Arc::downgrade(self.shared);
            rt.spawn(async move {
                tokio::time::sleep_until(at).await;
                if let Some(shared) = weak.upgrade() {
                    drop(shared.lock());
                }
            });
        }
    }
}
