//! Locks: a FIFO queue per lock key in the shared state; the holder's record at the key
//! carries the lock's value and, for a lease (`keep_alive = false`), its TTL.

use std::sync::{Arc, Weak};

use kv_core::raw::{lost_signal, HeldLocks, LockRelease};
use kv_core::{async_trait, Error, Lock, LockOptions, Result};

use crate::state::{Holder, Shared};
use crate::store::MemoryDriver;

/// Takes a waiter out of the queue when its acquisition ends, however it ends (taken, store
/// closed, future dropped), and lets the next waiter look again.
struct Waiting<'a>(&'a Arc<Shared>, &'a str, u64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Waiting(shared, key, id) = *self;
        shared.with(|st| {
            if let Some(slot) = st.locks.get_mut(key) {
                if let Some(i) = slot.queue.iter().position(|w| *w == id) {
                    slot.queue.remove(i);
                    slot.notify.notify_waiters();
                }
            }
            st.gc(key);
        });
    }
}

pub(crate) async fn acquire(d: &MemoryDriver, key: &str, options: LockOptions) -> Result<Lock> {
    let sk = d.stored(key);
    let (id, notify) = d.shared.with(|st| {
        let id = st.next_rev(); // unique, like every revision
        let slot = st.locks.entry(sk.clone()).or_default();
        slot.queue.push_back(id);
        (id, slot.notify.clone())
    });
    let _waiting = Waiting(&d.shared, &sk, id);
    let ttl = (!options.keep_alive).then_some(options.ttl); // a lease expires
    let (version, signal) = loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable(); // before looking: a release from now on wakes us
        let taken = d.shared.with(|st| {
            let slot = st.locks.get_mut(&sk)?;
            if slot.holder.is_some() || slot.queue.front() != Some(&id) {
                return None;
            }
            slot.queue.pop_front();
            // A plain value at the key (held by no lock) is replaced.
            let version = st.set(&sk, &options.value, ttl);
            let (notifier, signal) = lost_signal(key);
            let holder = Holder {
                id,
                version,
                notifier,
            };
            st.locks.entry(sk.clone()).or_default().holder = Some(holder);
            Some((version, signal))
        });
        if let Some(t) = taken {
            break t;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = d.life.closed() => return Err(Error::Closed),
        }
    };
    let held_id = d.held.insert((sk.clone(), id));
    if d.life.is_closed() {
        // Closed while we took it: `close` may have drained the registry already.
        d.held.remove(held_id);
        release(&d.shared, &sk, id, Some("the store was closed"));
    }
    let (shared, held) = (Arc::downgrade(&d.shared), Arc::downgrade(&d.held));
    let release = Release {
        shared,
        held,
        held_id,
        key: sk.clone(),
        id,
    };
    Ok(Lock::new(
        key,
        options.value,
        version,
        signal,
        Box::new(release),
    ))
}

/// Gives up acquisition `id` of the lock at stored `key` if it still holds it: removes its
/// record (if still its own), fires its signal with `lost` if given, wakes the waiters.
pub(crate) fn release(shared: &Arc<Shared>, key: &str, id: u64, lost: Option<&str>) {
    shared.with(|st| {
        let Some(slot) = st.locks.get_mut(key) else {
            return;
        };
        let Some(h) = slot.holder.take_if(|h| h.id == id) else {
            return;
        };
        slot.notify.notify_waiters();
        if let Some(reason) = lost {
            h.notifier.fire(reason);
        }
        if st.version(key) == Some(h.version) {
            st.delete(key);
        }
        st.gc(key);
    });
}

/// A held lock's release: weak, so a kept `Lock` does not keep a dropped store alive.
struct Release {
    shared: Weak<Shared>,
    held: Weak<HeldLocks<(String, u64)>>,
    held_id: u64,
    key: String,
    id: u64,
}

#[async_trait]
impl LockRelease for Release {
    async fn release(self: Box<Self>) -> Result<()> {
        if let Some(held) = self.held.upgrade() {
            held.remove(self.held_id);
        }
        if let Some(shared) = self.shared.upgrade() {
            release(&shared, &self.key, self.id, None);
        }
        Ok(())
    }
}
