//! Locks: an in-process lock table per database, the lock key written as a TTL record, and a
//! holder task that renews the expiry and watches the key for loss.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kv_core::lock::LostNotifier;
use kv_core::{async_trait, Result};

use crate::db::{Action, Shared};
use crate::hub::Subscription;
use crate::record::{now_ms, Record};

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

/// The set of locks a store handle holds (released by `close`).
pub(crate) type HeldSet = Mutex<std::collections::HashMap<u64, Arc<Held>>>;

/// Removes a half-taken lock when an acquisition is abandoned (future dropped or failed).
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
    let ttl_ms = crate::ttl_ms(ttl);
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
            c = sub.rx.recv() => Ev::Change(c.map(|(_, v)| v)),
            _ = tokio::time::sleep_until(next_renew), if keep_alive => Ev::Renew,
        };
        match ev {
            Ev::Stop => return,
            Ev::Change(None) => {
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
                                held.notifier
                                    .fire("the lock expired (its TTL passed without renewal)");
                                let _ = held.give_up(false);
                                return;
                            }
                        }
                    }
                    Err(e) => {
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
    pub owner: Weak<HeldSet>,
    pub flush: bool,
}

#[async_trait]
impl kv_core::LockRelease for Release {
    async fn release(self: Box<Self>) -> Result<()> {
        if let Some(set) = self.owner.upgrade() {
            set.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.held.token);
        }
        let was_released = self.held.is_released();
        self.held.give_up(true)?;
        if self.flush && !was_released {
            self.held.flush().await?;
        }
        Ok(())
    }
}
