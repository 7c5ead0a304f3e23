//! Group commit: one flusher thread per database owns every flush to stable storage.
//!
//! sled 0.34 deadlocks when several `flush_async` calls run at once (spacejam/sled #1308,
//! #1241, #1357), and its flush ends in `sync_file_range`, which reaches neither the disk's
//! write cache nor the file's metadata. So no writer flushes by itself: a writer that needs
//! durability takes a ticket and waits; the flusher thread runs one round — sled's `flush`,
//! then `fdatasync` of the log file and `fsync` of every blob file sled created since the last
//! round (and of the blob directory) — and releases every writer whose ticket it covers. One
//! round serves every writer that finished its write before the round started, so durable
//! throughput grows with the number of writers.
//!
//! The thread also holds the last clone of the sled database: when the database is dropped,
//! the thread runs a final round and then drops sled (whose drop flushes again), so that slow
//! work never runs on an async worker thread.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use kv_core::{Error, Result};

use crate::error::{failed, io_err, map_err};

/// How often an idle flusher syncs blob files written by `flush=false` writes.
const BLOB_SWEEP: std::time::Duration = std::time::Duration::from_millis(500);

/// The outcome of the latest completed round.
#[derive(Clone, Debug, Default)]
struct Round {
    /// Every ticket up to this one is covered by a completed round.
    upto: u64,
    /// Why the latest round failed (`None`: it succeeded).
    error: Option<Arc<str>>,
}

/// The sled handles of a dropped database, dropped by the flusher thread after its last round.
pub(crate) type Leftovers = Box<dyn Send>;

#[derive(Default)]
struct State {
    /// The last ticket handed out.
    requested: u64,
    /// Set when the database is dropped: run a final round, drop these, and exit.
    stop: Option<Leftovers>,
}

/// The handle writers use to wait for durability (see the module docs).
pub(crate) struct Flusher {
    state: Mutex<State>,
    wake: Condvar,
    done: tokio::sync::watch::Sender<Round>,
    /// True once the thread has dropped sled, which releases its files and file lock.
    released: tokio::sync::watch::Sender<bool>,
}

impl Flusher {
    /// Starts the flusher thread of the database `db` at `dir` (blocking: opens files and
    /// syncs the directory once, so files sled created at open are on stable storage too).
    pub fn start(db: sled::Db, dir: &Path) -> Result<Arc<Flusher>> {
        let mut files = Files::open(dir)?;
        files.sync_all_once()?;
        let flusher = Arc::new(Flusher {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            done: tokio::sync::watch::channel(Round::default()).0,
            released: tokio::sync::watch::channel(false).0,
        });
        let me = flusher.clone();
        std::thread::Builder::new()
            .name("kv-sled-flusher".into())
            .spawn(move || me.run(db, files))
            .map_err(|e| io_err("cannot start the flusher thread", e))?;
        Ok(flusher)
    }

    /// Returns once a completed round covers every write this caller finished before calling
    /// (`fdatasync` included), or with the error of the round that should have covered it.
    pub async fn sync(&self) -> Result<()> {
        // Subscribe before taking the ticket, so the round that covers it cannot be missed.
        let mut rx = self.done.subscribe();
        let ticket = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.requested += 1;
            s.requested
        };
        self.wake.notify_one();
        let round = rx
            .wait_for(|r| r.upto >= ticket)
            .await
            .map_err(|_| Error::Closed)?
            .clone();
        match round.error {
            None => Ok(()),
            Some(e) => Err(failed(format!("flush to stable storage failed: {e}"))),
        }
    }

    /// Asks the thread to run a final round, drop `leftovers` and the database, and exit.
    pub fn stop(&self, leftovers: Leftovers) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stop = Some(leftovers);
        self.wake.notify_one();
    }

    /// True once the database's files are released (its last handle is gone and dropped).
    pub fn is_released(&self) -> bool {
        *self.released.borrow()
    }

    /// Waits until [`is_released`](Self::is_released).
    pub async fn released(&self) {
        let _ = self.released.subscribe().wait_for(|r| *r).await;
    }

    fn run(&self, db: sled::Db, mut files: Files) {
        let mut covered = 0;
        loop {
            let (target, leftovers) = {
                let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let (mut s, idle) = self
                    .wake
                    .wait_timeout_while(s, BLOB_SWEEP, |s| {
                        s.requested == covered && s.stop.is_none()
                    })
                    .unwrap_or_else(|e| e.into_inner());
                if idle.timed_out() {
                    drop(s);
                    // sled fsyncs its log every 500 ms by itself, but never its blob files.
                    let _ = files.sync_new_blobs();
                    continue;
                }
                (s.requested, s.stop.take())
            };
            // Every ticket up to `target` was taken after its write finished, and this round
            // starts after the ticket was taken, so the round covers those writes.
            let error = files.round(&db).err().map(|e| Arc::from(e.to_string()));
            covered = target;
            self.done.send_replace(Round {
                upto: target,
                error,
            });
            if let Some(leftovers) = leftovers {
                // sled's own drop (flush, file lock release) runs here, off the async threads.
                drop(leftovers);
                drop(db);
                self.released.send_replace(true);
                return;
            }
        }
    }
}

/// The files of one database that a round syncs.
struct Files {
    log: File,
    dir: PathBuf,
    /// Blob files already synced (sled writes a blob file per oversized item, without sync).
    synced_blobs: HashSet<std::ffi::OsString>,
}

impl Files {
    fn open(dir: &Path) -> Result<Files> {
        let log = File::open(dir.join("db")).map_err(|e| io_err("open the log file", e))?;
        Ok(Files {
            log,
            dir: dir.to_path_buf(),
            synced_blobs: HashSet::new(),
        })
    }

    /// Syncs every file sled created at open, and the directory entries naming them.
    fn sync_all_once(&mut self) -> Result<()> {
        for name in ["conf", "db"] {
            let path = self.dir.join(name);
            if path.exists() {
                sync_path(&path)?;
            }
        }
        self.sync_new_blobs()?;
        sync_path(&self.dir)
    }

    /// One group-commit round: sled's flush, then the syncs that make it stable.
    fn round(&mut self, db: &sled::Db) -> Result<()> {
        db.flush().map_err(|e| map_err("flush", e))?;
        self.log
            .sync_data()
            .map_err(|e| io_err("fdatasync the log file", e))?;
        self.sync_new_blobs()
    }

    /// `fsync`s blob files not synced yet, then the blob directory if any was new.
    fn sync_new_blobs(&mut self) -> Result<()> {
        let blobs = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("list the blob directory", e)),
        };
        let mut present = HashSet::new();
        let mut any_new = false;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("list the blob directory", e))?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match sync_path(&entry.path()) {
                    Ok(()) => any_new = true,
                    // sled's garbage collection may remove a blob while we list.
                    Err(_) if !entry.path().exists() => continue,
                    Err(e) => return Err(e),
                }
            }
            present.insert(name);
        }
        self.synced_blobs = present;
        if any_new {
            sync_path(&blobs)?;
        }
        Ok(())
    }
}

/// `fsync` of a file or directory by path.
fn sync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(&format!("fsync {}", path.display()), e))
}
