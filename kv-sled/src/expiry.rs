//! TTLs and expiry: TTL rounding, the expiry index and the reaper thread (one per database)
//! that turns expired records into tombstones at their expiry time and removes tombstones
//! after their grace period.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use kv_core::Result;

use crate::db::Shared;
use crate::error::{io_err, map_err};
use crate::record::{expiry_key, now_ms, parse_expiry_key, Record};

/// How long a tombstone stays before the reaper removes it physically (ms).
pub(crate) const TOMBSTONE_GRACE_MS: u64 = 1_000;

/// TTL in whole milliseconds, rounded up.
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    ttl.as_nanos().div_ceil(1_000_000) as u64
}

/// The expiry time (unix ms) of a write with `ttl` made now; 0 = never.
pub(crate) fn expires_at(ttl: Option<Duration>) -> u64 {
    ttl.map(|t| now_ms() + ttl_ms(t)).unwrap_or(0)
}

/// Wake-up signal of the reaper thread.
#[derive(Default)]
pub(crate) struct ReaperSignal {
    dirty: Mutex<bool>,
    cv: Condvar,
}

impl ReaperSignal {
    pub fn wake(&self) {
        *self.dirty.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let guard = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |dirty| !*dirty)
            .unwrap_or_else(|e| e.into_inner());
        *guard = false;
    }
}

pub(crate) fn spawn_reaper(shared: &Arc<Shared>) -> Result<()> {
    let weak = Arc::downgrade(shared);
    let signal = shared.reaper.clone();
    let stop = shared.stop.clone();
    std::thread::Builder::new()
        .name("kv-sled-reaper".into())
        .spawn(move || loop {
            if stop.load(Ordering::Acquire) {
                break;
            }
            let wait = match weak.upgrade() {
                None => break,
                Some(shared) => shared.reap_due().unwrap_or(Duration::from_millis(200)),
            };
            signal.wait(wait.min(Duration::from_secs(1)));
        })
        .map(|_| ())
        .map_err(|e| io_err("cannot start the reaper thread", e))
}

impl Shared {
    /// Processes every due expiry entry; returns how long to sleep until the next one.
    fn reap_due(&self) -> Result<Duration> {
        loop {
            let Some(entry) = self.expiry.iter().next() else {
                return Ok(Duration::from_secs(1));
            };
            let (ikey, _) = entry.map_err(|e| map_err("reap", e))?;
            let Some((due, skey)) = parse_expiry_key(&ikey) else {
                self.expiry.remove(&ikey).map_err(|e| map_err("reap", e))?;
                continue;
            };
            let now = now_ms();
            if due > now {
                return Ok(Duration::from_millis(due - now));
            }
            self.reap_key(skey, now)?;
            self.expiry.remove(&ikey).map_err(|e| map_err("reap", e))?;
        }
    }

    /// Expires or removes one stored key if it is due; CAS so a newer write always wins.
    fn reap_key(&self, skey: &[u8], now: u64) -> Result<()> {
        loop {
            let Some(cur) = self.data.get(skey).map_err(|e| map_err("reap", e))? else {
                return Ok(());
            };
            let Ok(rec) = Record::decode(&cur) else {
                return Ok(());
            };
            let new = if rec.tombstone {
                if rec.expires_at > now {
                    return Ok(());
                }
                None
            } else if rec.expires_at != 0 && rec.expires_at <= now {
                let remove_after = now + TOMBSTONE_GRACE_MS;
                self.index_expiry(remove_after, skey)?;
                Some(Record::tombstone(self.new_version()?, remove_after).encode())
            } else {
                return Ok(());
            };
            match self
                .data
                .compare_and_swap(skey, Some(&cur), new)
                .map_err(|e| map_err("reap", e))?
            {
                Ok(()) => return Ok(()),
                Err(_) => continue,
            }
        }
    }

    /// Adds an expiry index entry (written before its record) and wakes the reaper.
    pub fn index_expiry(&self, due: u64, skey: &[u8]) -> Result<()> {
        self.expiry
            .insert(expiry_key(due, skey), &[])
            .map_err(|e| map_err("index expiry", e))?;
        self.reaper.wake();
        Ok(())
    }

    /// Wakes the reaper (after a transaction added index entries).
    pub fn wake_reaper(&self) {
        self.reaper.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_ms(Duration::from_micros(1)), 1);
        assert_eq!(ttl_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_ms(Duration::from_nanos(1_000_001)), 2);
    }
}
