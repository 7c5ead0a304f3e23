//! # kv-sled: the embedded driver of kv
//!
//! A [`kv_core::Store`] on a local [sled](https://docs.rs/sled/0.34) database, with the same
//! semantics as the network backends: versions, TTL keys, watches, locks and transactions.
//!
//! ```
//! # async fn demo() -> kv_core::Result<()> {
//! use kv_core::{PutOptions, Store};
//! let dir = tempfile::tempdir().unwrap();
//! let store = kv_sled::SledStore::from_url(&format!("sled://{}", dir.path().display())).await?;
//! let pair = store.put("app/port", b"8080", PutOptions::default()).await?;
//! assert_eq!(store.get("/app/port/").await?.version, pair.version);
//! store.close().await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! ## URLs
//! `sled:///absolute/path` or `sled://./relative/path`, with options `timeout=10s`,
//! `flush=true|false`, `namespace=app/x` (every key lives under the namespace) and
//! `consistency=linearizable|stale` (kv's shared read-consistency option, see
//! [`kv_core::Consistency`]). One process owns the database and every read sees every write
//! acknowledged before it, so both values give the same, linearizable reads: `stale` is
//! accepted (a URL written for a network backend works unchanged) and changes nothing. Any
//! other value is an [`Error::Config`] naming the allowed ones.
//!
//! ## How it works
//! - Every key is one record `[version][expires_at][flags][value]` (see the `record` module).
//!   Versions come from sled's `generate_id`, which is monotonic across restarts, and each write
//!   takes its version after reading the record it replaces and commits with compare-and-swap,
//!   so a key's versions strictly increase, also across a delete and re-create.
//! - A delete writes a *tombstone* with a fresh version; a background reaper thread (one per
//!   database) removes tombstones about a second later and turns expired records into
//!   tombstones at their expiry time, found through an expiry index. An expired record is
//!   invisible to every read at once (millisecond precision, checked on read); watchers get the
//!   deletion when the reaper writes the tombstone, normally within milliseconds of expiry.
//! - Watches: one sled subscriber per database is drained by a dedicated thread that fans
//!   events out without ever blocking, so an unread stream cannot stall writers. Watchers
//!   order events by version and ignore older ones, so every change of a key arrives, in
//!   order. A transaction's writes arrive one key at a time, so a subtree watch may show the
//!   snapshot between two writes of one transaction.
//! - Durability: see [below](#durability).
//! - One process owns a database: the same path opened twice in a process shares one database
//!   (locks and watches work across the handles); another process opening it gets
//!   [`Error::Config`] saying the path is in use.
//! - Locks are exclusive among all handles of the database in this process. The lock key holds
//!   `LockOptions::value` with the lock's TTL, so it is visible to `get`/`list`/`watch` and
//!   frees itself if the process dies. Keep-alive renewal (every TTL/3) extends the expiry
//!   *without* changing the version, so watchers see no change and a version read while the
//!   lock is held stays valid. Acquisition also waits while the key holds any other live value
//!   (for example the lease of a crashed process, until it expires).
//!
//! ## Durability
//! - **`flush=true` (default)**: a write (`put`, `atomic_put`, `delete`, `atomic_delete`,
//!   `delete_tree`, a `txn` with writes, lock acquisition and `unlock`) returns `Ok` only after
//!   it is on stable storage: one flusher thread per database runs *group-commit rounds* —
//!   sled's `flush` (which on Linux ends in `sync_file_range` only), then `fdatasync` of sled's
//!   log file, and `fsync` of every blob file sled created since the last round (values of
//!   more than about 128 KiB are stored out of line, and sled never syncs those) and of the
//!   blob directory. A write waits for a round that *started after* the write finished, so an
//!   acknowledged write survives a process kill, a kernel crash and a power cut, as far as the
//!   disk honours flush requests. Concurrent writers share rounds: one `fdatasync` serves
//!   every writer waiting, so durable throughput grows with the number of writers (figures in
//!   `benches/README.md`: about 4,400 puts/s with one writer, 70,000 with 64).
//! - **`flush=false`**: a write returns once it is in sled's memory. sled's own background
//!   thread writes and `fsync`s its log every 500 ms, and kv's flusher `fsync`s new blob files
//!   every 500 ms, so a crash or power cut loses at most the acknowledged writes of about the
//!   last half second (a lost write is lost whole: no torn values).
//! - Not flushed per call, whatever the setting: the reaper's expiry tombstones and lock
//!   renewals (they ride on the next round or sled's 500 ms flush; after a crash an expired key
//!   is still expired, and a lost renewal only makes a lock lease end sooner).
//! - `close()` on a database's last handle runs a final round (whatever the setting) and waits
//!   for it at most the store's timeout; past that it returns [`Error::Timeout`] saying the
//!   data is as durable as the last completed round (the round still finishes in the
//!   background). No flush ever runs on an async worker thread: the flusher thread also does
//!   sled's own flushing drop of the database.
//! - sled 0.34 deadlocks when several `flush_async` calls run at once (spacejam/sled #1308,
//!   #1241, #1357; fixed on sled's main branch, never released). kv never calls `flush_async`
//!   and never flushes from two threads at once, and `tests/concurrency.rs` runs 8 and 64
//!   handles of CAS, put, txn and delete traffic with `flush=true` to prove it.

#![warn(missing_docs)]

mod db;
mod flusher;
mod hub;
mod lock;
mod record;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv_core::key::{check_previous, check_value_size, join, strip_namespace, subtree_start};
use kv_core::retry::{timed, DEFAULT_TIMEOUT};
use kv_core::watch::{key_watch, tree_watch, WatchSink};
use kv_core::{
    async_trait, normalize_key, normalize_prefix, Capabilities, ConnectUrl, Error, KvPair, Lock,
    LockOptions, PutOptions, Result, Store, TreeWatchStream, Txn, TxnOp, TxnResult, WatchStream,
};

use crate::db::{map_err, Action, Shared, TOMBSTONE_GRACE_MS};
use crate::hub::Subscription;
use crate::lock::{Acquiring, HeldSet};
use crate::record::{expiry_key, now_ms, Record};

/// The URL scheme of this driver.
pub const URL_SCHEME: &str = "sled";

pub(crate) const BACKEND: &str = "sled";

/// Largest value accepted (16 MiB).
pub const MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// Most compares + operations in one transaction.
pub const MAX_TXN_OPS: usize = 1024;

const CAPABILITIES: Capabilities = Capabilities {
    watch: true,
    watch_tree: true,
    watch_every_change: true,
    lock: true,
    ttl: true,
    txn: true,
    max_value_size: MAX_VALUE_SIZE,
    max_txn_ops: MAX_TXN_OPS,
    min_ttl: Duration::from_millis(1),
    max_ttl: None,
    lock_min_ttl: Duration::ZERO,
};

/// TTL in whole milliseconds, rounded up.
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    ttl.as_nanos().div_ceil(1_000_000) as u64
}

fn expires_at(ttl: Option<Duration>) -> u64 {
    ttl.map(|t| now_ms() + ttl_ms(t)).unwrap_or(0)
}

/// Configuration of a [`SledStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SledConfig {
    /// Directory of the database (created if missing).
    pub path: PathBuf,
    /// Bound on every call (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Every write waits until it is on stable storage, `fdatasync` included (default `true`;
    /// see [Durability](crate#durability) for exactly what each setting guarantees).
    pub flush: bool,
    /// Every key lives under this namespace (default `""`: none).
    pub namespace: String,
}

impl SledConfig {
    /// Default configuration for the database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SledConfig {
            path: path.into(),
            timeout: DEFAULT_TIMEOUT,
            flush: true,
            namespace: String::new(),
        }
    }

    /// Sets the call timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets whether every write waits for stable storage ([Durability](crate#durability)).
    pub fn flush(mut self, flush: bool) -> Self {
        self.flush = flush;
        self
    }

    /// Sets the namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
}

struct Inner {
    config: SledConfig,
    namespace: String,
    shared: Mutex<Option<Arc<Shared>>>,
    closed: tokio::sync::watch::Sender<bool>,
    held: Arc<HeldSet>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let shared = self.shared.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = shared.take() {
            shared
                .handles
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// A [`Store`] on a local sled database. Cheap to clone (clones share the handle).
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.inner.config.path)
            .field("namespace", &self.inner.namespace)
            .finish()
    }
}

impl SledStore {
    /// Opens (or joins, if this process already has it open) the database of `config`.
    pub async fn connect(config: SledConfig) -> Result<Self> {
        if config.path.as_os_str().is_empty() {
            return Err(Error::config("the sled store needs a path"));
        }
        let namespace = normalize_prefix(&config.namespace)
            .map_err(|e| Error::config(format!("bad namespace: {e}")))?;
        let shared = timed("connect", config.timeout, db::open(config.path.clone())).await?;
        shared
            .handles
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let (closed, _) = tokio::sync::watch::channel(false);
        Ok(SledStore {
            inner: Arc::new(Inner {
                config,
                namespace,
                shared: Mutex::new(Some(shared)),
                closed,
                held: Arc::new(Mutex::new(HashMap::new())),
            }),
        })
    }

    /// Opens a store from a `sled://` URL (see the [crate docs](crate)).
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::connect(parse_url(url)?).await
    }

    /// The database path, as configured.
    pub fn path(&self) -> &std::path::Path {
        &self.inner.config.path
    }

    fn shared(&self) -> Result<Arc<Shared>> {
        self.inner
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::Closed)
    }

    fn skey(&self, key: &str) -> Vec<u8> {
        join(&self.inner.namespace, key).into_bytes()
    }

    /// Stored-key prefix of the subtree of normalized `prefix`.
    fn subtree(&self, prefix: &str) -> Vec<u8> {
        let start = subtree_start(prefix);
        if self.inner.namespace.is_empty() {
            start.into_bytes()
        } else {
            format!("{}/{start}", self.inner.namespace).into_bytes()
        }
    }

    fn relative(&self, skey: &[u8]) -> Option<String> {
        relative(&self.inner.namespace, skey)
    }

    async fn sync(&self, shared: &Shared) -> Result<()> {
        if self.inner.config.flush {
            shared.flush().await?;
        }
        Ok(())
    }

    async fn bounded<T>(
        &self,
        op: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        if *self.inner.closed.borrow() {
            return Err(Error::Closed);
        }
        timed(op, self.inner.config.timeout, fut).await
    }

    fn closed_rx(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closed.subscribe()
    }
}

/// True when `path`'s last component is a name (not `/`, `.` or `..`).
fn ends_in_a_name(path: &str) -> bool {
    matches!(
        std::path::Path::new(path).components().next_back(),
        Some(std::path::Component::Normal(_))
    )
}

fn parse_url(url: &str) -> Result<SledConfig> {
    let mut u = ConnectUrl::parse(url)?;
    if u.scheme != URL_SCHEME {
        return Err(Error::config(format!(
            "{url:?} is not a sled URL (expected sled:///path or sled://./relative/path)"
        )));
    }
    let path = match u.hosts.as_slice() {
        [] => u.path.clone(),
        [h] if h == "." => u.path.trim_start_matches('/').to_string(),
        _ => {
            return Err(Error::config(format!(
            "{url:?}: a sled URL has no host; use sled:///absolute/path or sled://./relative/path"
        )))
        }
    };
    // The path must name the database directory: "/", "//", "." or "a/.." do not.
    if !ends_in_a_name(&path) {
        return Err(Error::config(format!(
            "{url:?} has no database path (it must end in a directory name); use sled:///absolute/path or sled://./relative/path"
        )));
    }
    let mut config = SledConfig::new(path);
    if let Some(t) = u.take_duration("timeout")? {
        config.timeout = t;
    }
    if let Some(f) = u.take_bool("flush")? {
        config.flush = f;
    }
    if let Some(ns) = u.take("namespace") {
        config.namespace = ns;
    }
    // Validated, then ignored: every read of a single-process store is linearizable.
    u.take_consistency()?;
    u.finish()?;
    Ok(config)
}

/// Waits until `rx` says closed; pends forever if the handle is gone without closing.
async fn wait_closed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await
    }
}

/// The key relative to `namespace` of stored key `skey`; `None` if it lies outside.
fn relative(namespace: &str, skey: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(skey).ok()?;
    strip_namespace(namespace, s).map(str::to_string)
}

/// A subtree watch's state: stored key → (last version seen, current pair if present).
type Tree = BTreeMap<Vec<u8>, (u64, Option<KvPair>)>;

/// The present pairs of `tree`, in key order.
fn snapshot(tree: &Tree) -> Vec<KvPair> {
    tree.values().filter_map(|(_, p)| p.clone()).collect()
}

/// Runs one watch task (for `watch` and `watch_tree`): feeds `sink` from `sub` until the
/// stream is dropped, or until the store closes or the database goes away (then it sends
/// `Error::Closed` and ends). `apply` turns a change (stored key, record bytes) into the state
/// to emit, or `None` to skip it; its error is sent as an error item and the watch goes on.
fn spawn_watch<S, F>(
    mut sink: S,
    mut sub: Subscription,
    mut closed: tokio::sync::watch::Receiver<bool>,
    mut apply: F,
) where
    S: WatchSink + 'static,
    F: FnMut(&[u8], &[u8]) -> Result<Option<S::State>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                _ = wait_closed(&mut closed) => None,
                _ = sink.closed() => return,
                c = sub.rx.recv() => c,
            };
            let Some((key, bytes)) = change else {
                sink.error(Error::Closed);
                return;
            };
            let sent = match apply(&key, &bytes) {
                Ok(None) => continue,
                Ok(Some(state)) => sink.emit(state),
                Err(e) => sink.error(e),
            };
            if !sent {
                return;
            }
        }
    });
}

#[async_trait]
impl Store for SledStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> Result<KvPair> {
        self.bounded("put", async {
            let shared = self.shared()?;
            let key = normalize_key(key)?;
            check_value_size(&key, value, MAX_VALUE_SIZE, BACKEND)?;
            CAPABILITIES.check_ttl(options.ttl, BACKEND)?;
            let exp = expires_at(options.ttl);
            let rec = shared
                .write(&self.skey(&key), |_| {
                    Ok(Action::Put {
                        value: value.to_vec(),
                        expires_at: exp,
                        lock: false,
                    })
                })?
                .ok_or_else(|| Error::invalid_argument("internal: put wrote nothing"))?;
            self.sync(&shared).await?;
            Ok(KvPair::new(key, rec.value, rec.version))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<KvPair> {
        self.bounded("get", async {
            let shared = self.shared()?;
            let key = normalize_key(key)?;
            match shared.read_live(&self.skey(&key))? {
                Some(r) => Ok(KvPair::new(key, r.value, r.version)),
                None => Err(Error::not_found(key)),
            }
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.bounded("delete", async {
            let shared = self.shared()?;
            let key = normalize_key(key)?;
            shared.write(&self.skey(&key), |live| match live {
                Some(_) => Ok(Action::Delete),
                None => Err(Error::not_found(&key)),
            })?;
            self.sync(&shared).await
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.bounded("exists", async {
            let shared = self.shared()?;
            let key = normalize_key(key)?;
            Ok(shared.read_live(&self.skey(&key))?.is_some())
        })
        .await
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        self.bounded("watch", async {
            let shared = self.shared()?;
            let key = normalize_key(key)?;
            let skey = self.skey(&key);
            // Subscribe first, then read: every later change arrives with a larger version.
            let sub = shared.hub.key(&skey);
            let now = now_ms();
            let (mut last, state) = match shared.data.get(&skey).map_err(|e| map_err("watch", e))? {
                None => (0, None),
                Some(b) => {
                    let r = Record::decode(&b)?;
                    let live = r.is_live(now);
                    (
                        r.version,
                        live.then(|| KvPair::new(key.clone(), r.value, r.version)),
                    )
                }
            };
            drop(shared);
            let (mut w, stream) = key_watch();
            w.emit(state);
            spawn_watch(w, sub, self.closed_rx(), move |_, bytes| {
                let rec = Record::decode(bytes)?;
                if rec.version <= last {
                    return Ok(None);
                }
                last = rec.version;
                Ok(Some(
                    rec.is_live(now_ms())
                        .then(|| KvPair::new(key.clone(), rec.value, rec.version)),
                ))
            });
            Ok(stream)
        })
        .await
    }

    async fn watch_tree(&self, prefix: &str) -> Result<TreeWatchStream> {
        self.bounded("watch_tree", async {
            let shared = self.shared()?;
            let prefix = normalize_prefix(prefix)?;
            let start = self.subtree(&prefix);
            let sub = shared.hub.prefix(&start);
            let now = now_ms();
            let mut tree = Tree::new();
            for item in shared.data.scan_prefix(&start) {
                let (k, v) = item.map_err(|e| map_err("watch_tree", e))?;
                let Some(rel) = self.relative(&k) else {
                    continue;
                };
                let r = Record::decode(&v)?;
                let pair = r.is_live(now).then(|| KvPair::new(rel, r.value, r.version));
                tree.insert(k.to_vec(), (r.version, pair));
            }
            drop(shared);
            let (mut w, stream) = tree_watch();
            w.emit(snapshot(&tree));
            let namespace = self.inner.namespace.clone();
            spawn_watch(w, sub, self.closed_rx(), move |k, bytes| {
                let Some(rel) = relative(&namespace, k) else {
                    return Ok(None);
                };
                let rec = Record::decode(bytes)?;
                let entry = tree.entry(k.to_vec()).or_insert((0, None));
                if rec.version <= entry.0 {
                    return Ok(None);
                }
                let pair = rec
                    .is_live(now_ms())
                    .then(|| KvPair::new(rel, rec.value, rec.version));
                *entry = (rec.version, pair);
                Ok(Some(snapshot(&tree)))
            });
            Ok(stream)
        })
        .await
    }

    async fn new_lock(&self, key: &str, options: LockOptions) -> Result<Lock> {
        if *self.inner.closed.borrow() {
            return Err(Error::Closed);
        }
        let shared = self.shared()?;
        let key = normalize_key(key)?;
        check_value_size(&key, &options.value, MAX_VALUE_SIZE, BACKEND)?;
        CAPABILITIES.check_ttl(Some(options.ttl), BACKEND)?;
        let skey = self.skey(&key);
        let token = lock::new_token();
        let mut closed = self.closed_rx();
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
                _ = wait_closed(&mut closed) => return Err(Error::Closed),
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
        let mut sub = shared.hub.key(&skey);
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
                _ = sub.rx.recv() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = wait_closed(&mut closed) => return Err(Error::Closed),
            }
        };
        guard.written = Some(record.version);
        timed("lock", self.inner.config.timeout, self.sync(&shared)).await?;
        // Events older than our write are ignored by version, so the subscription carries over.
        let (notifier, signal) = kv_core::lock::lost_signal(key.clone());
        let held = lock::start(shared.clone(), skey, token, record, notifier, sub, &options);
        guard.armed = false;
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, held.clone());
        if *self.inner.closed.borrow() {
            held.notifier.fire("the store was closed");
            let _ = held.give_up(true);
        }
        let release = lock::Release {
            held,
            owner: Arc::downgrade(&self.inner.held),
            flush: self.inner.config.flush,
        };
        Ok(Lock::new(
            key,
            options.value,
            release.held.version,
            signal,
            Box::new(release),
        ))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.bounded("list", async {
            let shared = self.shared()?;
            let prefix = normalize_prefix(prefix)?;
            let now = now_ms();
            let mut out = Vec::new();
            for item in shared.data.scan_prefix(self.subtree(&prefix)) {
                let (k, v) = item.map_err(|e| map_err("list", e))?;
                let r = Record::decode(&v)?;
                if !r.is_live(now) {
                    continue;
                }
                if let Some(rel) = self.relative(&k) {
                    out.push(KvPair::new(rel, r.value, r.version));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_tree(&self, prefix: &str) -> Result<()> {
        self.bounded("delete_tree", async {
            let shared = self.shared()?;
            let prefix = normalize_prefix(prefix)?;
            let keys: Vec<sled::IVec> = shared
                .data
                .scan_prefix(self.subtree(&prefix))
                .keys()
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| map_err("delete_tree", e))?;
            let mut any = false;
            for k in keys {
                let done = shared.write(&k, |live| {
                    Ok(if live.is_some() {
                        Action::Delete
                    } else {
                        Action::Skip
                    })
                })?;
                any |= done.is_some();
            }
            if any {
                self.sync(&shared).await?;
            }
            Ok(())
        })
        .await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair> {
        self.bounded("atomic_put", async {
            let shared = self.shared()?;
            let key = normalize_key(key)?;
            if let Some(p) = previous {
                check_previous(&key, p)?;
            }
            check_value_size(&key, value, MAX_VALUE_SIZE, BACKEND)?;
            CAPABILITIES.check_ttl(options.ttl, BACKEND)?;
            let exp = expires_at(options.ttl);
            let rec = shared
                .write(&self.skey(&key), |live| {
                    match (previous, live) {
                        (None, Some(_)) => return Err(Error::KeyExists { key: key.clone() }),
                        (Some(_), None) => return Err(Error::not_found(&key)),
                        (Some(p), Some(r)) if r.version != p.version => {
                            return Err(Error::KeyModified {
                                key: key.clone(),
                                expected: p.version,
                                actual: r.version,
                            })
                        }
                        _ => {}
                    }
                    Ok(Action::Put {
                        value: value.to_vec(),
                        expires_at: exp,
                        lock: false,
                    })
                })?
                .ok_or_else(|| Error::invalid_argument("internal: atomic_put wrote nothing"))?;
            self.sync(&shared).await?;
            Ok(KvPair::new(key, rec.value, rec.version))
        })
        .await
    }

    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        self.bounded("atomic_delete", async {
            let shared = self.shared()?;
            let key = normalize_key(key)?;
            check_previous(&key, previous)?;
            shared.write(&self.skey(&key), |live| match live {
                None => Err(Error::not_found(&key)),
                Some(r) if r.version != previous.version => Err(Error::KeyModified {
                    key: key.clone(),
                    expected: previous.version,
                    actual: r.version,
                }),
                Some(_) => Ok(Action::Delete),
            })?;
            self.sync(&shared).await
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<TxnResult>> {
        self.bounded("txn", async {
            let shared = self.shared()?;
            let txn = txn.prepare(&CAPABILITIES, BACKEND)?;
            let results = self.run_txn(&shared, &txn)?;
            if txn.ops.iter().any(|op| !matches!(op, TxnOp::Get { .. })) {
                self.sync(&shared).await?;
            }
            Ok(results)
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        let _ = self.inner.closed.send(true);
        let held: Vec<_> = self
            .inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        let mut first_err = None;
        for h in &held {
            h.notifier.fire("the store was closed");
            if let Err(e) = h.give_up(true) {
                first_err.get_or_insert(e);
            }
        }
        let shared = self
            .inner
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(shared) = &shared {
            if !held.is_empty() && self.inner.config.flush {
                if let Err(e) = timed("close", self.inner.config.timeout, shared.flush()).await {
                    first_err.get_or_insert(e);
                }
            }
        }
        drop(held);
        if let Some(shared) = shared {
            let last = shared
                .handles
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
                == 1;
            let flusher = shared.flusher.clone();
            drop(shared);
            if last {
                // Watch and lock tasks wind down after the close signal; the flusher thread then
                // runs the final flush and drops sled. Wait (bounded) until it has, so another
                // process can open the path as soon as close returns.
                let released = timed(
                    "close (the final flush did not finish in time; the data is as durable as \
                     the last completed flush, and the database is released when it finishes)",
                    self.inner.config.timeout,
                    async {
                        flusher.released().await;
                        Ok(())
                    },
                )
                .await;
                if let Err(e) = released {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl SledStore {
    fn run_txn(&self, shared: &Shared, txn: &Txn) -> Result<Vec<TxnResult>> {
        use sled::transaction::{ConflictableTransactionError as Abort, TransactionError};
        let now = now_ms();
        // Expiry index entries go in first (a stale entry is harmless, a missing one is not).
        let mut expiry: HashMap<usize, u64> = HashMap::new();
        for (i, op) in txn.ops.iter().enumerate() {
            let due = match op {
                TxnOp::Put { options, .. } => expires_at(options.ttl),
                TxnOp::Delete { .. } => now + TOMBSTONE_GRACE_MS,
                TxnOp::Get { .. } => 0,
            };
            if due != 0 {
                shared
                    .expiry
                    .insert(expiry_key(due, &self.skey(op.key())), &[])
                    .map_err(|e| map_err("txn", e))?;
                expiry.insert(i, due);
            }
        }
        let res = shared.data.transaction(|tx| {
            let now = now_ms();
            let read = |key: &str| -> std::result::Result<Option<Record>, Abort<Error>> {
                match tx.get(self.skey(key))? {
                    None => Ok(None),
                    Some(b) => Record::decode(&b)
                        .map(|r| Some(r).filter(|r| r.is_live(now)))
                        .map_err(Abort::Abort),
                }
            };
            for (i, c) in txn.compares.iter().enumerate() {
                let cur = read(c.key())?.map(|r| r.version);
                c.evaluate(i, cur).map_err(Abort::Abort)?;
            }
            let mut out = Vec::with_capacity(txn.ops.len());
            for (i, op) in txn.ops.iter().enumerate() {
                match op {
                    TxnOp::Get { key } => out.push(TxnResult::Get(
                        read(key)?.map(|r| KvPair::new(key.clone(), r.value, r.version)),
                    )),
                    TxnOp::Put { key, value, .. } => {
                        let version = tx.generate_id()? + 1;
                        let exp = expiry.get(&i).copied().unwrap_or(0);
                        let rec = Record::live(version, exp, value.clone());
                        tx.insert(self.skey(key), rec.encode())?;
                        out.push(TxnResult::Put(KvPair::new(
                            key.clone(),
                            value.clone(),
                            version,
                        )));
                    }
                    TxnOp::Delete { key } => {
                        if read(key)?.is_some() {
                            let version = tx.generate_id()? + 1;
                            let due = expiry.get(&i).copied().unwrap_or(now + TOMBSTONE_GRACE_MS);
                            tx.insert(self.skey(key), Record::tombstone(version, due).encode())?;
                        }
                        out.push(TxnResult::Delete);
                    }
                }
            }
            Ok(out)
        });
        shared.wake_reaper();
        match res {
            Ok(out) => Ok(out),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(map_err("txn", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let c = parse_url("sled:///var/lib/x?timeout=2s&flush=false&namespace=app/a").unwrap();
        assert_eq!(c.path, PathBuf::from("/var/lib/x"));
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert!(!c.flush);
        assert_eq!(c.namespace, "app/a");
        let c = parse_url("sled://./data/db").unwrap();
        assert_eq!(c.path, PathBuf::from("data/db"));
        assert!(c.flush);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        for ok in ["stale", "linearizable"] {
            let c = parse_url(&format!("sled:///x?consistency={ok}")).unwrap();
            assert_eq!(c, SledConfig::new("/x"), "{ok}");
        }
        let e = parse_url("sled:///x?consistency=eventual").unwrap_err();
        assert!(e.to_string().contains("linearizable, stale"), "{e}");
        for bad in [
            "sled://",
            "sled:///",
            "sled://./",
            "sled://host/x",
            "sled:///x?bogus=1",
            "sled:///x?flush=maybe",
            "sled:///x?consistency=eventual",
            "etcd:///x",
        ] {
            assert!(
                matches!(parse_url(bad), Err(Error::Config { .. })),
                "{bad}: {:?}",
                parse_url(bad)
            );
        }
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_ms(Duration::from_micros(1)), 1);
        assert_eq!(ttl_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_ms(Duration::from_nanos(1_000_001)), 2);
    }

    mod fuzz {
        //! Property tests of `parse_url` (private: `from_url` opens the database right after).

        use super::*;
        use kv_testkit::fuzz;
        use proptest::prelude::*;

        const OPTIONS: &[&str] = &["timeout", "flush", "namespace"];

        fn config_error<T: std::fmt::Debug>(r: &Result<T>) -> bool {
            matches!(r, Err(Error::Config { message }) if !message.is_empty())
        }

        proptest! {
            #![proptest_config(fuzz::config())]

            /// Garbage never panics; every rejection is `Config`; an accepted URL has a path.
            #[test]
            fn garbage_is_a_config_error(url in prop_oneof![fuzz::url_garbage("sled://"), fuzz::url_garbage("")]) {
                let parsed = parse_url(&url);
                match &parsed {
                    Ok(c) => prop_assert!(
                        matches!(c.path.components().next_back(), Some(std::path::Component::Normal(_))),
                        "{:?} accepted with database path {:?}", url, c.path
                    ),
                    Err(_) => prop_assert!(config_error(&parsed), "{:?}: {:?}", url, parsed),
                }
            }

            /// `sled:///abs` and `sled://./rel` with random options: the config holds what the
            /// URL says; a host other than `.` and a missing path are rejected.
            #[test]
            fn structured_urls(
                host in prop_oneof![3 => Just(String::new()), 3 => Just(".".to_string()), 1 => "[a-z]{1,4}"],
                path in prop_oneof![3 => "(/[a-z0-9._-]{1,6}){1,3}", 1 => Just("/".to_string()), 1 => Just(String::new())],
                opts in fuzz::options(OPTIONS),
            ) {
                let url = format!("sled://{host}{path}{}", fuzz::query(&opts));
                let mut r = ConnectUrl::parse(&url).unwrap();
                let parsed = parse_url(&url);
                let expected_path = match host.as_str() {
                    "" => Some(path.clone()),
                    "." => Some(path.trim_start_matches('/').to_string()),
                    _ => None,
                }
                .filter(|p| ends_in_a_name(p));
                let timeout = r.take_duration("timeout");
                let flush = r.take_bool("flush");
                let bogus = opts.iter().any(|(k, _)| k == "bogus");
                match (parsed, expected_path) {
                    (Ok(c), Some(p)) if !bogus => {
                        prop_assert_eq!(c.path, PathBuf::from(p));
                        prop_assert_eq!(c.timeout, timeout.unwrap().unwrap_or(DEFAULT_TIMEOUT));
                        prop_assert_eq!(c.flush, flush.unwrap().unwrap_or(true));
                        prop_assert_eq!(c.namespace, r.take("namespace").unwrap_or_default());
                    }
                    (Err(e), p) => {
                        prop_assert!(matches!(e, Error::Config { .. }), "{:?}", e);
                        prop_assert!(p.is_none() || bogus || timeout.is_err() || flush.is_err(), "{:?}: {}", url, e);
                    }
                    (Ok(c), _) => prop_assert!(false, "{:?} accepted as {:?}", url, c),
                }
            }
        }

        /// Regression found by the properties: `sled:////` was accepted with the database
        /// path `//` (the root directory); so were `.` and `..`.
        #[test]
        fn database_path_must_end_in_a_name() {
            for bad in [
                "sled:////",
                "sled:///.",
                "sled://./.",
                "sled://./..",
                "sled:///a/..",
            ] {
                let r = parse_url(bad);
                assert!(config_error(&r), "{bad}: {r:?}");
            }
            assert_eq!(
                parse_url("sled:///a/b/.").unwrap().path,
                PathBuf::from("/a/b/.")
            );
            assert_eq!(parse_url("sled://./a").unwrap().path, PathBuf::from("a"));
        }
    }
}
