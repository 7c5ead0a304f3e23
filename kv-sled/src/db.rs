//! The database shared by every handle of one path in this process: sled, versions, writes,
//! and the threads (reaper, flusher, watch hub) and lock table every handle shares.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use kv_core::{Error, Result};

use crate::error::{failed, io_err, map_err};
use crate::expiry::{spawn_reaper, ReaperSignal, TOMBSTONE_GRACE_MS};
use crate::flusher::Flusher;
use crate::hub::{spawn_dispatcher, Hub};
use crate::record::{now_ms, Record};

/// What a write does once it has seen the current live record (`None`: absent or expired).
pub(crate) enum Action {
    /// Write this value with this expiry (unix ms, 0 = none); `lock` marks a lock record.
    Put {
        value: Vec<u8>,
        expires_at: u64,
        lock: bool,
    },
    /// Replace the record by a tombstone.
    Delete,
    /// Write nothing; return `Ok(None)`.
    Skip,
}

/// State shared by every handle of one database.
pub(crate) struct Shared {
    /// The sled handles are handed to the flusher thread on drop (see [`Flusher`]), so sled's
    /// flushing drop never runs on an async worker thread.
    pub db: ManuallyDrop<sled::Db>,
    pub data: ManuallyDrop<sled::Tree>,
    pub expiry: ManuallyDrop<sled::Tree>,
    /// Owns every flush of this database (group commit).
    pub flusher: Arc<Flusher>,
    pub hub: Arc<Hub>,
    pub reaper: Arc<ReaperSignal>,
    pub stop: Arc<AtomicBool>,
    /// Held locks: stored key → holder token.
    pub locks: Mutex<HashMap<Vec<u8>, u64>>,
    /// Woken whenever a lock table entry is freed.
    pub lock_freed: tokio::sync::Notify,
    /// Open `SledStore` handles on this database (closing the last one releases it).
    pub handles: std::sync::atomic::AtomicUsize,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.reaper.wake();
        self.hub.close();
        // SAFETY: the fields are never used again; this is the end of `drop`.
        let handles = unsafe {
            (
                ManuallyDrop::take(&mut self.db),
                ManuallyDrop::take(&mut self.data),
                ManuallyDrop::take(&mut self.expiry),
            )
        };
        self.flusher.stop(Box::new(handles));
    }
}

/// A database of this process, by canonical path: the shared state while it is open, and its
/// flusher, which says when a closed database has really released its files.
struct Entry {
    shared: Weak<Shared>,
    flusher: Arc<Flusher>,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Entry>> {
    static R: OnceLock<Mutex<HashMap<PathBuf, Entry>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Opens (or joins) the database at `path`, first waiting (asynchronously) for a database of
/// this process at the same path that is still releasing its files after its last close.
pub(crate) async fn open(path: PathBuf) -> Result<Arc<Shared>> {
    loop {
        let p = path.clone();
        let opened = tokio::task::spawn_blocking(move || open_shared(&p))
            .await
            .map_err(|e| failed(format!("the open task failed: {e}")))??;
        match opened {
            Opened::Ready(shared) => return Ok(shared),
            Opened::Releasing(flusher) => flusher.released().await,
        }
    }
}

enum Opened {
    Ready(Arc<Shared>),
    /// The path's previous database in this process is still being released.
    Releasing(Arc<Flusher>),
}

/// One attempt to open or join the database at `path`. Blocking: runs in `spawn_blocking`.
fn open_shared(path: &Path) -> Result<Opened> {
    std::fs::create_dir_all(path).map_err(|e| {
        Error::config(format!(
            "cannot create the sled directory {}: {e}",
            path.display()
        ))
    })?;
    let canonical = path.canonicalize().map_err(|e| {
        Error::config(format!(
            "cannot resolve the sled path {}: {e}",
            path.display()
        ))
    })?;
    // The registry lock is held while opening, so two handles of one path never race.
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(entry) = reg.get(&canonical) {
        if let Some(shared) = entry.shared.upgrade() {
            tracing::debug!(backend = "sled", path = %canonical.display(), "joined the open database");
            return Ok(Opened::Ready(shared));
        }
        if !entry.flusher.is_released() {
            return Ok(Opened::Releasing(entry.flusher.clone()));
        }
    }
    reg.retain(|_, e| e.shared.strong_count() > 0 || !e.flusher.is_released());
    // sled's own flusher thread writes and fsyncs the log every 500 ms and cleans segments;
    // writes that must be durable at once wait for our flusher's group commit instead.
    let cfg = sled::Config::new()
        .path(&canonical)
        .flush_every_ms(Some(500));
    let db = match cfg.open() {
        Ok(db) => db,
        Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
            return Err(Error::config(format!(
                "the sled database at {} is in use by another process ({e})",
                canonical.display()
            )))
        }
        Err(e) => {
            return Err(map_err(
                &format!("open sled database at {}", canonical.display()),
                e,
            ))
        }
    };
    let data = db
        .open_tree("kv/records")
        .map_err(|e| map_err("open tree", e))?;
    let expiry = db
        .open_tree("kv/expiry")
        .map_err(|e| map_err("open tree", e))?;
    let hub = Arc::new(Hub::default());
    let stop = Arc::new(AtomicBool::new(false));
    spawn_dispatcher(hub.clone(), data.watch_prefix(vec![]))
        .map_err(|e| io_err("cannot start the watch thread", e))?;
    let flusher = Flusher::start(db.clone(), &canonical)?;
    let shared = Arc::new(Shared {
        db: ManuallyDrop::new(db),
        data: ManuallyDrop::new(data),
        expiry: ManuallyDrop::new(expiry),
        flusher: flusher.clone(),
        hub,
        reaper: Arc::new(ReaperSignal::default()),
        stop,
        locks: Mutex::new(HashMap::new()),
        lock_freed: tokio::sync::Notify::new(),
        handles: std::sync::atomic::AtomicUsize::new(0),
    });
    spawn_reaper(&shared)?;
    tracing::debug!(backend = "sled", path = %canonical.display(), "database opened");
    reg.insert(
        canonical,
        Entry {
            shared: Arc::downgrade(&shared),
            flusher,
        },
    );
    Ok(Opened::Ready(shared))
}

impl Shared {
    /// A fresh version: larger than every version handed out before (also across restarts).
    pub fn new_version(&self) -> Result<u64> {
        self.db
            .generate_id()
            .map(|id| id + 1)
            .map_err(|e| map_err("generate version", e))
    }

    /// The live record at `skey`, if any.
    pub fn read_live(&self, skey: &[u8]) -> Result<Option<Record>> {
        let now = now_ms();
        match self.data.get(skey).map_err(|e| map_err("read", e))? {
            None => Ok(None),
            Some(b) => Ok(Some(Record::decode(&b)?).filter(|r| r.is_live(now))),
        }
    }

    /// Read-modify-write of one key with compare-and-swap; retries on conflict. `decide` sees
    /// the live record and may fail; returns the record written.
    pub fn write<F>(&self, skey: &[u8], mut decide: F) -> Result<Option<Record>>
    where
        F: FnMut(Option<&Record>) -> Result<Action>,
    {
        loop {
            let cur = self.data.get(skey).map_err(|e| map_err("read", e))?;
            let now = now_ms();
            let live = match &cur {
                None => None,
                Some(b) => Some(Record::decode(b)?).filter(|r| r.is_live(now)),
            };
            let new = match decide(live.as_ref())? {
                Action::Skip => return Ok(None),
                Action::Put {
                    value,
                    expires_at,
                    lock,
                } => {
                    if expires_at != 0 {
                        self.index_expiry(expires_at, skey)?;
                    }
                    // The version is taken after reading, so it beats the record just read.
                    Record {
                        lock,
                        ..Record::live(self.new_version()?, expires_at, value)
                    }
                }
                Action::Delete => {
                    let remove_after = now + TOMBSTONE_GRACE_MS;
                    self.index_expiry(remove_after, skey)?;
                    Record::tombstone(self.new_version()?, remove_after)
                }
            };
            match self
                .data
                .compare_and_swap(skey, cur.as_ref(), Some(new.encode()))
                .map_err(|e| map_err("write", e))?
            {
                Ok(()) => return Ok(Some(new)),
                Err(_) => continue,
            }
        }
    }

    /// Replaces the record at `skey` by `new` only if it still is exactly `old` (no retry).
    pub fn swap_exact(&self, skey: &[u8], old: &Record, new: Option<&Record>) -> Result<bool> {
        let old = old.encode();
        self.data
            .compare_and_swap(skey, Some(old), new.map(Record::encode))
            .map(|r| r.is_ok())
            .map_err(|e| map_err("write", e))
    }

    /// Returns once every write this caller finished is on stable storage (group commit).
    pub async fn flush(&self) -> Result<()> {
        self.flusher.sync().await
    }

    /// Frees the lock table entry of `skey` if `token` holds it, and wakes waiters.
    pub fn free_lock(&self, skey: &[u8], token: u64) {
        let mut t = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if t.get(skey) == Some(&token) {
            t.remove(skey);
        }
        drop(t);
        self.lock_freed.notify_waiters();
    }
}
