//! The shared store: one `Mutex<State>` per store, held only for short synchronous sections,
//! and the process-wide registry of named stores.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use kv_core::raw::{LostNotifier, Namespace};
use kv_core::KvPair;

use crate::watch::Watches;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Named stores, alive while a handle holds them.
static REGISTRY: Mutex<BTreeMap<String, Weak<Shared>>> = Mutex::new(BTreeMap::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent, so a panic elsewhere is harmless.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One store, shared by its handles.
pub(crate) struct Shared {
    pub name: String,
    state: Mutex<State>,
}

impl Shared {
    /// The store named `name` (a new one if no handle holds it), or a private one for `""`.
    pub fn get(name: &str) -> Arc<Shared> {
        let (name, state) = (name.to_string(), Mutex::default());
        if name.is_empty() {
            return Arc::new(Shared { name, state });
        }
        let mut reg = lock(&REGISTRY);
        let live = reg.get(&name).and_then(Weak::upgrade);
        live.unwrap_or_else(|| {
            let s = Arc::new(Shared { name, state });
            reg.insert(s.name.clone(), Arc::downgrade(&s));
            s
        })
    }

    /// Runs `f` on the locked state, after expiring every key whose TTL has passed; then
    /// publishes the changes to watches and starts the expiry timers of new TTLs.
    pub fn with<T>(self: &Arc<Self>, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = lock(&self.state);
        st.purge();
        let out = f(&mut st);
        if !st.pending.is_empty() {
            let batch: Arc<[Change]> = std::mem::take(&mut st.pending).into();
            let keys = batch.iter().map(|c| c.0.as_bytes());
            st.watches.publish_batch(keys, batch.clone());
        }
        let timers = std::mem::take(&mut st.timers);
        drop(st);
        self.start_timers(timers);
        out
    }

    /// A task per TTL deadline expires what is due then, so that watches and lock holders
    /// learn of it on time. Outside a runtime, expired keys vanish at the next call.
    fn start_timers(self: &Arc<Self>, timers: Vec<Instant>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for at in timers {
            let weak = Arc::downgrade(self);
            rt.spawn(async move {
                tokio::time::sleep_until(at).await;
                if let Some(shared) = weak.upgrade() {
                    shared.with(|_| ());
                }
            });
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut reg = lock(&REGISTRY);
        if reg.get(&self.name).is_some_and(|w| w.strong_count() == 0) {
            reg.remove(&self.name);
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("name", &self.name).finish()
    }
}

/// A change: the stored key, its new value and version (`None`: deleted), the revision.
pub(crate) type Change = (String, Option<(Vec<u8>, u64)>, u64);

/// A stored value.
struct Entry {
    value: Vec<u8>,
    version: u64,
    expires: Option<Instant>,
}

/// A lock key's holder and FIFO queue of waiting acquisitions.
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

/// The store's data, TTL index, watches and locks.
#[derive(Default)]
pub(crate) struct State {
    /// Store-wide revision: every write takes the next one as its version, so a key's
    /// versions strictly increase, also across a delete and re-create.
    pub rev: u64,
    data: BTreeMap<String, Entry>,
    expiry: BTreeSet<(Instant, String)>,
    /// Watches, by key and subtree: each gets the batches of changes that touch it.
    pub watches: Watches,
    pub locks: HashMap<String, Slot>,
    pending: Vec<Change>,
    timers: Vec<Instant>,
}

impl State {
    /// The next revision (one per operation: the writes of a transaction share it).
    pub fn next_rev(&mut self) -> u64 {
        self.rev += 1;
        self.rev
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

    /// Stored keys starting with `start` (a subtree start: `"ns/p/"`, or `""` for all).
    pub fn keys(&self, start: &str) -> Vec<String> {
        let keys = self.data.range(start.to_string()..).map(|(k, _)| k);
        keys.take_while(|k| k.starts_with(start)).cloned().collect()
    }

    /// The pairs of a subtree in key order.
    pub fn list(&self, ns: &Namespace, start: &str) -> Vec<KvPair> {
        let keys = self.keys(start);
        keys.iter().filter_map(|k| self.pair(ns, k)).collect()
    }

    /// Writes (`Some`) or deletes (`None`) a stored key with version `rev`; a lock held on it
    /// is lost (the lock's own writes take the holder out first).
    /// A TTL too long to represent makes the key permanent.
    pub fn write(&mut self, key: &str, new: Option<(Vec<u8>, Option<Duration>)>, rev: u64) {
        let (is_put, watched) = (new.is_some(), self.watches.wants(key.as_bytes()));
        let change = new
            .as_ref()
            .filter(|_| watched)
            .map(|(v, _)| (v.clone(), rev));
        let old = match new {
            Some((value, ttl)) => {
                let expires = ttl.and_then(|t| Instant::now().checked_add(t));
                self.expiry.extend(expires.map(|at| (at, key.to_string())));
                self.timers.extend(expires);
                let entry = Entry {
                    value,
                    version: rev,
                    expires,
                };
                self.data.insert(key.to_string(), entry)
            }
            None => self.data.remove(key),
        };
        let expired = old.and_then(|e| e.expires).is_some_and(|at| {
            self.expiry.remove(&(at, key.to_string()));
            at <= Instant::now()
        });
        if let Some(h) = self.locks.get_mut(key).and_then(|s| s.holder.take()) {
            h.notifier.fire(match (is_put, expired) {
                (true, _) => "the lock key was overwritten by another writer",
                (false, true) => "the lock expired (its TTL passed without renewal)",
                (false, false) => "the lock key was deleted by another caller",
            });
            tracing::debug!(backend = "memory", key, "lock lost");
            self.locks[key].notify.notify_waiters();
            self.gc(key);
        }
        if watched {
            self.pending.push((key.to_string(), change, rev));
        }
    }

    /// Writes `value` at a stored key with a new revision; returns the version.
    pub fn set(&mut self, key: &str, value: &[u8], ttl: Option<Duration>) -> u64 {
        let rev = self.next_rev();
        self.write(key, Some((value.to_vec(), ttl)), rev);
        rev
    }

    /// Deletes a stored key with a new revision; `false` when it was absent.
    pub fn delete(&mut self, key: &str) -> bool {
        let present = self.data.contains_key(key);
        if present {
            let rev = self.next_rev();
            self.write(key, None, rev);
        }
        present
    }

    /// Drops the lock slot of `key` when nobody holds or waits for it.
    pub fn gc(&mut self, key: &str) {
        let idle = |s: &Slot| s.holder.is_none() && s.queue.is_empty();
        if self.locks.get(key).is_some_and(idle) {
            self.locks.remove(key);
        }
    }

    /// Deletes every key whose TTL has passed (one revision for all of them).
    fn purge(&mut self) {
        let now = Instant::now();
        let mut rev = None;
        while let Some((_, k)) = self.expiry.first().filter(|(at, _)| *at <= now).cloned() {
            let rev = *rev.get_or_insert_with(|| self.next_rev());
            self.write(&k, None, rev); // removes the index entry, sees that the key expired
        }
    }
}
