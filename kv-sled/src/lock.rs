//! Locks: acquisition (an in-process lock table per database, then the lock key written as a
//! TTL record), a holder task that renews the expiry and watches the key for loss, release.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use kv_core::lock::{lost_signal, LostNotifier};
use kv_core::raw::HeldLocks;
use kv_core::retry::timed;
use kv_core::{async_trait, Error, Lock, LockOptions, Result};

use crate::db::{Action, Shared};
use crate::expiry::ttl_ms;
use crate::hub::Subscription;
use crate::record::{now_ms, Record};
use crate::store::SledDriver;
use crate::BACKEND;

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// A fresh lock-holder token, unique in this process.
pub(crate) fn new_token() -> u64 {
    NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
}

/// A held lock, shared by its `Lock` handle, its holder task and its store handle.
pub(crate) struct Held {
    /// Weak, so a lock handle kept after `close` does not keep the database open; the holder
    /// task keeps it open while the lock is held.
    shared: Weak<Shared>,
    pub skey: Vec<u8>,
    pub token: u64,
    /// Version of our record at the lock key.
    pub version: u64,
    pub notifier: LostNotifier,
    stop: tokio::sync::watch::Sender<bool>,
    released: AtomicBool,
}

impl Held {
    /// Gives the lock up once: stops the holder task, removes our record if `delete_key`
    /// and it is still ours, frees the table entry and wakes waiters.
    pub fn give_up(&self, delete_key: bool) -> Result<()> {
        if self.released.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let _ = self.stop.send(true);
        let Some(shared) = self.shared.upgrade() else {
            return Ok(()); // the database is closed: nothing left to remove
        };
        let res = if delete_key {
            shared
                .write(&self.skey, |live| {
                    Ok(match live {
                        Some(r) if r.version == self.version => Action::Delete,
                        _ => Action::Skip,
                    })
                })
                .map(|_| ())
        } else {
            Ok(())
        };
        shared.free_lock(&self.skey, self.token);
        res
    }

    /// Flushes the database if it is still open.
    pub async fn flush(&self) -> Result<()> {
        match self.shared.upgrade() {
            Some(shared) => shared.flush().await,
            None => Ok(()),
        }
    }

    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }
}

/// Removes a half-taken lock when an acquisition is abandoned (future dropped or failed).
///
/// The clean-up is local and synchronous (a compare-and-swap on the in-process database and
/// the lock table), so it runs in `drop` itself: unlike a `CleanupGuard`'s background task it
/// needs no runtime and is done before the next waiter looks.
pub(crate) struct Acquiring {
    pub shared: Arc<Shared>,
    pub skey: Vec<u8>,
    pub token: u64,
    pub written: Option<u64>,
    pub armed: bool,
}

impl Drop for Acquiring {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(v) = self.written {
            let _ = self.shared.write(&self.skey, |live| {
                Ok(match live {
                    Some(r) if r.version == v => Action::Delete,
                    _ => Action::Skip,
                })
            });
        }
        self.shared.free_lock(&self.skey, self.token);
    }
}

/// Waits for and takes the lock at normalized `key` (the store's `new_lock`).
pub(crate) async fn acquire(driver: &SledDriver, key: &str, options: LockOptions) -> Result<Lock> {
    let shared = driver.shared()?;
    let life = driver.life();
    let skey = driver.skey(key);
    let token = new_token();
    // 1. Wait for the lock table entry (in-process exclusion among all handles).
    loop {
        let freed = shared.lock_freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        {
            let mut t = shared.locks.lock().unwrap_or_else(|e| e.into_inner());
            if let std::collections::hash_map::Entry::Vacant(v) = t.entry(skey.clone()) {
                v.insert(token);
                break;
            }
        }
        tokio::select! {
            _ = &mut freed => {}
            _ = life.closed() => return Err(Error::Closed),
        }
    }
    let mut guard = Acquiring {
        shared: shared.clone(),
        skey: skey.clone(),
        token,
        written: None,
        armed: true,
    };
    // 2. Write the lock record once the key holds no live lock record (a leftover lease of
    //    a crashed process frees itself at its expiry); a plain value is replaced.
    let mut sub = shared.hub.subscribe_key(&skey[..]);
    let record = loop {
        let exp = now_ms() + ttl_ms(options.ttl);
        let mut blocked_until = 0;
        let written = shared.write(&skey, |live| match live {
            Some(r) if r.lock => {
                blocked_until = r.expires_at;
                Ok(Action::Skip)
            }
            _ => Ok(Action::Put {
                value: options.value.clone(),
                expires_at: exp,
                lock: true,
            }),
        })?;
        if let Some(r) = written {
            break r;
        }
        let wait = if blocked_until == 0 {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(blocked_until.saturating_sub(now_ms()).clamp(1, 500))
        };
        tokio::select! {
            _ = sub.recv() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = life.closed() => return Err(Error::Closed),
        }
    };
    guard.written = Some(record.version);
    timed("lock", driver.config.timeout, driver.sync(&shared)).await?;
    // Events older than our write are ignored by version, so the subscription carries over.
    let (notifier, signal) = lost_signal(key.to_string());
    let held = start(shared.clone(), skey, token, record, notifier, sub, &options);
    guard.armed = false;
    let id = driver.held.insert(held.clone());
    if life.is_closed() {
        // `close` may have drained the registry before the insert: give it up here.
        driver.held.remove(id);
        held.notifier.fire("the store was closed");
        let _ = held.give_up(true);
    }
    let release = Release {
        held,
        owner: Arc::downgrade(&driver.held),
        id,
        flush: driver.config.flush,
    };
    Ok(Lock::new(
        key.to_string(),
        options.value,
        release.held.version,
        signal,
        Box::new(release),
    ))
}

/// Builds the held lock and starts its holder task.
pub(crate) fn start(
    shared: Arc<Shared>,
    skey: Vec<u8>,
    token: u64,
    record: Record,
    notifier: LostNotifier,
    sub: Subscription,
    options: &kv_core::LockOptions,
) -> Arc<Held> {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let held = Arc::new(Held {
        shared: Arc::downgrade(&shared),
        skey,
        token,
        version: record.version,
        notifier,
        stop,
        released: AtomicBool::new(false),
    });
    tokio::spawn(holder(
        shared,
        held.clone(),
        record,
        sub,
        stop_rx,
        options.ttl,
        options.keep_alive,
    ));
    held
}

async fn holder(
    shared: Arc<Shared>,
    held: Arc<Held>,
    mut record: Record,
    mut sub: Subscription,
    mut stop_rx: tokio::sync::watch::Receiver<bool>,
    ttl: Duration,
    keep_alive: bool,
) {
    let ttl_ms = ttl_ms(ttl);
    // Renew three times per TTL; renewal keeps the version (watchers see no change).
    let period = (ttl / 3).max(Duration::from_millis(1));
    let mut next_renew = tokio::time::Instant::now() + period;
    loop {
        if held.is_released() {
            return;
        }
        enum Ev {
            Stop,
            Change(Option<sled::IVec>),
            Renew,
        }
        let ev = tokio::select! {
            _ = stop_rx.wait_for(|s| *s) => Ev::Stop,
            c = sub.recv() => Ev::Change(c.map(|(_, v)| v)),
            _ = tokio::time::sleep_until(next_renew), if keep_alive => Ev::Renew,
        };
        match ev {
            Ev::Stop => return,
            Ev::Change(None) => {
                tracing::debug!(backend = BACKEND, "lock given up: the database was closed");
                held.notifier.fire("the database was closed");
                let _ = held.give_up(false);
                return;
            }
            Ev::Change(Some(bytes)) => {
                let Ok(rec) = Record::decode(&bytes) else {
                    continue;
                };
                if rec.version <= held.version {
                    continue; // our own renewal, or an older write
                }
                let reason = if !rec.tombstone {
                    "the lock key was overwritten by another writer"
                } else if record.expires_at != 0 && now_ms() >= record.expires_at {
                    "the lock expired (its TTL passed without renewal)"
                } else {
                    "the lock key was deleted by another caller"
                };
                tracing::info!(backend = BACKEND, reason, "lock lost");
                held.notifier.fire(reason);
                let _ = held.give_up(false);
                return;
            }
            Ev::Renew => {
                next_renew = tokio::time::Instant::now() + period;
                let renewed = Record {
                    expires_at: now_ms() + ttl_ms,
                    ..record.clone()
                };
                let ok = shared
                    .index_expiry(renewed.expires_at, &held.skey)
                    .and_then(|_| shared.swap_exact(&held.skey, &record, Some(&renewed)));
                match ok {
                    Ok(true) => record = renewed,
                    // Someone else wrote the key: the change event reports the loss. If the
                    // reaper expired it, that event arrives too.
                    Ok(false) => {
                        if let Ok(None) = shared.read_live(&held.skey) {
                            if now_ms() >= record.expires_at {
                                tracing::info!(backend = BACKEND, "lock lost: it expired");
                                held.notifier
                                    .fire("the lock expired (its TTL passed without renewal)");
                                let _ = held.give_up(false);
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::info!(backend = BACKEND, error = %e, "lock lost: renewal failed");
                        held.notifier.fire(format!("renewing the lock failed: {e}"));
                        let _ = held.give_up(true);
                        return;
                    }
                }
            }
        }
    }
}

/// `LockRelease` for a sled lock.
pub(crate) struct Release {
    pub held: Arc<Held>,
    /// The registry of the store handle that took it, and the lock's id there.
    pub owner: Weak<HeldLocks<Arc<Held>>>,
    pub id: u64,
    pub flush: bool,
}

#[async_trait]
impl kv_core::LockRelease for Release {
    async fn release(self: Box<Self>) -> Result<()> {
        if let Some(set) = self.owner.upgrade() {
            set.remove(self.id);
        }
        let was_released = self.held.is_released();
        self.held.give_up(true)?;
        if self.flush && !was_released {
            self.held.flush().await?;
        }
        Ok(())
    }
}
