//! # kv-zookeeper: the ZooKeeper driver of kv
//!
//! Implements [`kv_core::Store`] over ZooKeeper 3.6+ (tested with 3.8.0) with the
//! [`zookeeper-client`](https://docs.rs/zookeeper-client) crate. Open it with
//! `kv::open("zk://...")` or [`ZkStore::from_url`] / [`ZkStore::connect`].
//!
//! ## URL
//! `zk://[user:password@]h1:2181,h2:2181/optional/chroot?option=value&...`
//!
//! - hosts: `host:port` (port 2181 when omitted), tried in turn;
//! - path: the namespace (chroot); every key is a znode below it and nothing outside it is
//!   visible. It is created on the first write. `zk://h:2181` (no path) uses the server root,
//!   where the first key segment `zookeeper` (ZooKeeper's system node) is refused with
//!   [`Error::InvalidKey`]: use a namespace;
//! - `user:password@` or `digest=user:password`: digest authentication (`addAuth digest`).
//!   With credentials, every znode the store creates gets the `auth` ACL (full rights for
//!   that user only); without, the open ACL (`world:anyone`). A refused access is
//!   [`Error::Unauthorized`];
//! - `timeout=10s`: bound on every call (default 10 s);
//! - `session_timeout=10s`: ZooKeeper session timeout asked for (default 10 s; the server
//!   clamps it to 2..20 × its `tickTime`);
//! - `ca=/path/ca.pem`, `cert=/path/client.pem`, `key=/path/client.key` (PEM files), `tls=true`:
//!   connect with TLS (rustls, TLS 1.2/1.3) to the servers' `secureClientPort`; the server
//!   certificate must match the host name or IP address of the URL. Needs the `tls` cargo
//!   feature; without it these options are an [`Error::Config`].
//!
//! Unknown options are rejected.
//!
//! ## How keys map to znodes
//! - Key `a/b` is the znode `<chroot>/a/b`; missing parents are created as plain znodes
//!   that hold no value, so they are not keys (`exists("a")` is `false` after `put("a/b")`).
//! - Every value is stored with a small header (1 byte, or 9 with a TTL): znodes whose data
//!   has no kv header (parents, znodes written by other programs) are not keys.
//! - Deleting a key that has keys below it keeps the znode (it becomes a parent without
//!   value) so the keys below survive.
//! - [`KvPair::version`](kv_core::KvPair::version) is the znode's `mzxid` (the zxid of its
//!   last write): never 0, and it grows on every write, also across a delete and re-create.
//!   Compare-and-swap reads the stat and then writes with the znode's data version, so a
//!   write that slips in between is detected (a delete and re-create of the same key with as
//!   many writes, within that one round trip, is the only case it cannot tell apart).
//! - `put` costs one round trip when the znode exists (`setData`); parents are created only
//!   when the server answers `NoNode`. The znode's type (permanent, TTL, ephemeral lock
//!   value) is fixed at creation and ZooKeeper does not report TTL znodes as such
//!   (`ephemeralOwner` reads 0), so each store remembers the type of the znodes it created
//!   or wrote, keyed by `czxid`. The first put of a path by a store sends a read of the old
//!   znode pipelined with the write (still one round trip); when the znode had the wrong
//!   type (a TTL znode, a lock's ephemeral znode, or one re-created meanwhile by someone else)
//!   the put then replaces it by a permanent znode in one `multi` (a second round trip).
//! - Characters ZooKeeper refuses in znode names (outside the Basic Multilingual Plane, and
//!   U+E000–U+F8FF, U+FFF0–U+FFFF) and `%` are stored as `%XX` escapes of their UTF-8
//!   bytes: `emoji/🦀` is the znode `emoji/%F0%9F%A6%80`. Keys come back unescaped.
//! - The first key segment `.kv-locks` is reserved (lock bookkeeping).
//! - Values up to [`MAX_VALUE_SIZE`] (1,000,000) bytes: ZooKeeper's `jute.maxbuffer` is 1 MiB
//!   per request, including path and header. A transaction's values together must stay under
//!   the same bound.
//!
//! ## TTL
//! A key with a TTL is a TTL znode (`CreateMode::PersistentWithTtl`, server setting
//! `extendedTypesEnabled=true`; without it a TTL write is
//! [`Error::Unsupported`] naming that setting). The server only
//! removes such znodes in a background sweep (every 60 s by default,
//! `znode.container.checkIntervalMs`), so the driver also stores the TTL in the value header and
//! treats a key whose `mtime + ttl` has passed as absent at once (using the local clock
//! against the server's `mtime`: precision is the clock skew between client and server, a
//! few ms on one machine), and deletes it when it sees it. Watches report the expiry when it
//! is due. [`MIN_TTL`] is 1 s. A write changes the znode type when needed (TTL to permanent
//! or another TTL) by deleting and re-creating it in one `multi`, except when the znode has
//! children: then the header alone decides (reads stay exact, the server sweep may not apply).
//!
//! ## Watches
//! `watch` and `watch_tree` use one persistent recursive watch each (ZooKeeper 3.6+) on the
//! key or prefix (which may be missing), re-read after each event, and emit the state read,
//! so the latest state always arrives but fast changes may be coalesced
//! (`watch_every_change` is `false`). A child's value change is seen by `watch_tree`. After a
//! reconnect the driver adds the watch again (zookeeper-client 0.11 re-registers only one-shot
//! watches after a reconnect) and re-reads and emits the current state (persistent watches
//! can also lose events across a reconnect, ZOOKEEPER-4698); an outage longer than the store timeout is
//! reported as an [`Error::Unreachable`] item, and the stream
//! goes on. A session expiry is terminal in the client: the store builds a new session and
//! every watch re-arms on it and re-reads.
//!
//! ## Locks
//! The ephemeral-sequential recipe: each contender creates an ephemeral sequential znode
//! under `<chroot>/.kv-locks/<key>` (invisible to `list`/`watch_tree`), waits for its
//! predecessor to go, then writes `options.value` at the key as an *ephemeral* znode (or, if
//! keys exist below the lock key, as a plain value). Dropping the `new_lock` future removes its
//! contender node (and the value, if it was being written). The lock is lost (its [`LostSignal`](kv_core::LostSignal) fires) when the
//! key is deleted or overwritten, when the ZooKeeper session expires (the store then opens a
//! new session), when the store is closed, or, with `keep_alive = false`, `ttl` after it was
//! taken (the lock is then released). While held, the ZooKeeper session keeps it alive; if
//! the holder crashes or is cut off, the lock frees itself when its session expires, that is
//! within the *session timeout* (`session_timeout=`, default 10 s), not the lock `ttl`.
//!
//! ## Transactions
//! `txn` reads the compared and written keys in one `multi` read, evaluates the compares
//! (reporting the first failing one), then applies every write in one atomic `multi` write
//! guarded by the versions read (`check` operations, and conditional `setData`/`delete`); a
//! compared or read key that was absent is guarded by creating and deleting its znode in the
//! same `multi`. If anything changed in between, it starts over (within the store timeout).
//! Every write of a transaction gets the same version (the `multi`'s zxid).
//!
//! ## Errors and timeouts
//! Connection loss and unreachable servers are [`Error::Unreachable`]
//! (reads retry by themselves until the store timeout; writes report it at once, since a
//! lost write may or may not have been applied), a call over the timeout is
//! [`Error::Timeout`], `NoAuth`/`AuthFailed` are
//! [`Error::Unauthorized`], a TLS handshake failure at connect
//! is `Unreachable` with a message naming TLS. Every call is bounded by the store timeout
//! with `kv_core::retry::timed`.
//!
//! ## Performance (kv versus zookeeper-client used directly)
//! `cargo bench -p kv-zookeeper --bench vs_raw` (`KV_BENCH_N`, default 8000), 2026-11-28,
//! ZooKeeper 3.8.0 standalone (Debian package, `tickTime=500`) on the same 2-core machine as
//! the benchmark, which other builds were loading (load average 4.5–5), so single figures
//! vary by about ±10%. 100-byte values on existing keys; kv and raw interleaved in 8 rounds;
//! 64 tasks share one session on each side. One run, and the kv ÷ raw range over three
//! consecutive runs:
//!
//! | operation | kv ops/s | raw ops/s | kv/raw | kv/raw, 3 runs |
//! |---|---|---|---|---|
//! | sequential put | 1806 | 1764 | 1.02 | 0.86–1.02 |
//! | sequential get | 4626 | 4798 | 0.96 | 0.89–0.96 |
//! | 64-task concurrent put | 20254 | 21676 | 0.93 | 0.93–1.02 |
//! | 64-task concurrent get | 22222 | 22812 | 0.97 | 0.97–1.10 |
//!
//! ### Second run, otherwise idle machine
//!
//! Same bench, same day, with no other job running on the machine, after calls were switched
//! to `kv_core::retry::timed` for their bound (two consecutive runs, N = 8000):
//!
//! | operation | kv ops/s | raw ops/s | kv/raw | kv/raw, other run |
//! |---|---|---|---|---|
//! | sequential put | 3079 | 3229 | 0.95 | 1.01 |
//! | sequential get | 6471 | 6856 | 0.94 | 0.92 |
//! | 64-task concurrent put | 18378 | 16895 | 1.09 | 1.13 |
//! | 64-task concurrent get | 18462 | 18660 | 0.99 | 0.95 |

#![warn(missing_docs)]

mod codec;
pub mod config;
mod lock;
mod tree;
mod txn;
mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv_core::{
    async_trait, normalize_key, normalize_prefix, retry, Capabilities, Error, KvPair, Lock,
    LockOptions, PutOptions, Result, Store, TreeWatchStream, Txn, TxnResult, WatchStream,
};
use tokio::sync::watch as tokio_watch;
use zookeeper_client as zk;
use zookeeper_client::{Acls, Client, CreateMode, CreateOptions, Stat};

pub use config::{ZkConfig, ZkTls, DEFAULT_SESSION_TIMEOUT};

use codec::Decoded;

/// URL scheme of this driver: `zk://host:2181/namespace`.
pub const URL_SCHEME: &str = "zk";
/// Backend name used in errors.
pub const BACKEND: &str = "zookeeper";
/// Largest value accepted (ZooKeeper's `jute.maxbuffer` of 1 MiB minus room for path and header).
pub const MAX_VALUE_SIZE: usize = 1_000_000;
/// Most compares + operations in one transaction.
pub const MAX_TXN_OPS: usize = 128;
/// Shortest TTL honoured, for keys and lock leases.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Reserved first key segment holding lock contenders.
pub const LOCKS_DIR: &str = ".kv-locks";

/// The current ZooKeeper session of a store.
#[derive(Clone)]
pub(crate) struct Conn {
    pub client: Arc<Client>,
    pub gen: u64,
}

pub(crate) struct Inner {
    pub cfg: ZkConfig,
    /// Namespace as a znode path prefix: `""` (server root) or `"/app"`.
    pub base: String,
    pub endpoints: String,
    pub conn: tokio_watch::Sender<Option<Conn>>,
    pub closed: tokio_watch::Sender<bool>,
    pub locks: Mutex<HashMap<u64, Arc<lock::Held>>>,
    pub next_id: AtomicU64,
    pub is_closed: AtomicBool,
    /// Znode types this store knows: path -> (czxid, TTL in ms of a TTL znode). The type of
    /// a znode is fixed when it is created, and ZooKeeper does not report it (a TTL znode
    /// shows `ephemeralOwner = 0`), so a put checks the `czxid` its `setData` returns against
    /// this cache, and reads the znode first only on a miss.
    pub types: Mutex<HashMap<String, (i64, Option<u64>)>>,
}

const TYPE_CACHE_MAX: usize = 100_000;

/// What a znode read found.
pub(crate) enum Node {
    Missing,
    NoValue(Stat),
    /// Value, stat, TTL (ms) of the header.
    Value(Vec<u8>, Stat, Option<u64>),
    Expired(Stat),
}

/// A ZooKeeper-backed [`Store`].
pub struct ZkStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ZkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkStore")
            .field("config", &self.inner.cfg)
            .finish()
    }
}

/// Maps a client error to kv's error; `key` names the key involved (may be empty).
pub(crate) fn map_err(e: zk::Error, key: &str, endpoints: &str) -> Error {
    use zk::Error as Z;
    match e {
        Z::NoNode => Error::not_found(key),
        Z::NodeExists => Error::KeyExists { key: key.to_string() },
        Z::ConnectionLoss => Error::Unreachable {
            endpoint: endpoints.to_string(),
            message: "connection to ZooKeeper lost".into(),
            source: Some(Box::new(e)),
        },
        Z::NoHosts => Error::Unreachable {
            endpoint: endpoints.to_string(),
            message: "no ZooKeeper server could be reached (connection refused, or TLS handshake failed)"
                .into(),
            source: Some(Box::new(e)),
        },
        Z::SessionExpired | Z::SessionMoved => Error::Unreachable {
            endpoint: endpoints.to_string(),
            message: "ZooKeeper session expired; a new session is being opened".into(),
            source: Some(Box::new(e)),
        },
        Z::Timeout => Error::Timeout {
            operation: format!("ZooKeeper request on {key:?}"),
            after: Duration::ZERO,
        },
        Z::NoAuth => Error::Unauthorized {
            message: format!("not authorized to access {key:?} (znode ACL)"),
            source: Some(Box::new(e)),
        },
        Z::AuthFailed => Error::Unauthorized {
            message: "ZooKeeper authentication failed".into(),
            source: Some(Box::new(e)),
        },
        Z::ClientClosed => Error::Closed,
        Z::Unimplemented => Error::unsupported(
            "this request (the ZooKeeper server is too old or lacks a setting)",
            BACKEND,
        ),
        Z::NoChildrenForEphemerals => Error::invalid_argument(format!(
            "cannot write {key:?}: its parent is held as a lock value (an ephemeral znode cannot have children)"
        )),
        Z::BadArguments(m) => Error::invalid_argument(format!("{key:?}: {m}")),
        Z::Custom(_) => Error::Unreachable {
            endpoint: endpoints.to_string(),
            message: format!("{e}"),
            source: Some(Box::new(e)),
        },
        other => Error::backend(BACKEND, format!("{other} (key {key:?})"), other),
    }
}

fn is_retryable_read(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::ConnectionLoss | zk::Error::SessionExpired | zk::Error::SessionMoved
    )
}

impl Inner {
    pub fn check_open(&self) -> Result<()> {
        if self.is_closed.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub fn conn(&self) -> Result<Conn> {
        self.check_open()?;
        self.conn.borrow().clone().ok_or(Error::Closed)
    }

    pub fn err(&self, e: zk::Error, key: &str) -> Error {
        match map_err(e, key, &self.endpoints) {
            Error::Timeout { operation, .. } => Error::Timeout {
                operation,
                after: self.cfg.timeout,
            },
            other => other,
        }
    }

    pub fn acls(&self) -> Acls<'static> {
        if self.cfg.digest.is_some() {
            Acls::creator_all()
        } else {
            Acls::anyone_all()
        }
    }

    pub fn create_opts(&self, ttl: Option<Duration>) -> CreateOptions<'static> {
        let o = CreateMode::Persistent.with_acls(self.acls());
        match ttl {
            Some(t) => o.with_ttl(t),
            None => o,
        }
    }

    /// Znode path of a normalized key.
    pub fn path(&self, key: &str) -> String {
        format!("{}/{}", self.base, codec::escape_path(key, false))
    }

    /// Znode path of a normalized prefix (`""` = the namespace root).
    pub fn prefix_path(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            if self.base.is_empty() {
                "/".to_string()
            } else {
                self.base.clone()
            }
        } else {
            self.path(prefix)
        }
    }

    /// The key of a znode path below the namespace.
    pub fn key_of(&self, path: &str) -> Option<String> {
        path.strip_prefix(&self.base)?
            .strip_prefix('/')
            .map(codec::unescape_path)
    }

    /// Names at the namespace root that are never keys.
    pub fn is_reserved_root_child(&self, name: &str) -> bool {
        name == LOCKS_DIR || (self.base.is_empty() && name == "zookeeper")
    }

    fn check_reserved(&self, original: &str, key: &str) -> Result<()> {
        let first = key.split('/').next().unwrap_or("");
        if first == LOCKS_DIR {
            return Err(Error::InvalidKey {
                key: original.to_string(),
                reason: format!("the first segment {LOCKS_DIR:?} is reserved for kv's lock bookkeeping on ZooKeeper"),
            });
        }
        if self.base.is_empty() && first == "zookeeper" {
            return Err(Error::InvalidKey {
                key: original.to_string(),
                reason: "/zookeeper is ZooKeeper's system node; use a namespace (zk://host:2181/app) to store such keys".into(),
            });
        }
        Ok(())
    }

    pub fn key(&self, original: &str) -> Result<String> {
        let k = normalize_key(original)?;
        self.check_reserved(original, &k)?;
        Ok(k)
    }

    pub fn prefix(&self, original: &str) -> Result<String> {
        let p = normalize_prefix(original)?;
        if !p.is_empty() {
            self.check_reserved(original, &p)?;
        }
        Ok(p)
    }

    pub fn caps(&self) -> Capabilities {
        Capabilities {
            watch: true,
            watch_tree: true,
            watch_every_change: false,
            lock: true,
            ttl: true,
            txn: true,
            max_value_size: MAX_VALUE_SIZE,
            max_txn_ops: MAX_TXN_OPS,
            min_ttl: MIN_TTL,
        }
    }

    /// Bounds `fut` by the store timeout ([`retry::timed`]), giving [`Error::Timeout`] naming `op`.
    pub async fn timed<T>(
        &self,
        op: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        retry::timed(op, self.cfg.timeout, fut).await
    }

    /// Runs a read, retrying on connection loss (with the current session) until it works
    /// or the caller's timeout ends.
    pub async fn read_retry<T, F, Fut>(&self, key: &str, mut f: F) -> Result<T>
    where
        F: FnMut(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, zk::Error>>,
    {
        let mut backoff =
            retry::Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        loop {
            let conn = self.conn()?;
            match f(conn.client).await {
                Ok(v) => return Ok(v),
                Err(e) if is_retryable_read(&e) => {
                    self.check_open()?;
                    backoff.wait().await
                }
                Err(e) => return Err(self.err(e, key)),
            }
        }
    }

    fn remember(&self, path: &str, czxid: i64, ttl: Option<Duration>) {
        let mut t = self.types.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() >= TYPE_CACHE_MAX {
            t.clear();
        }
        t.insert(path.to_string(), (czxid, ttl.map(|d| d.as_millis() as u64)));
    }

    fn known_type(&self, path: &str) -> Option<(i64, Option<u64>)> {
        self.types
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .copied()
    }

    /// Reads one znode.
    pub async fn read_node(client: &Client, path: &str) -> std::result::Result<Node, zk::Error> {
        match client.get_data(path).await {
            Ok((data, stat)) => Ok({
                let ttl = codec::header_ttl(&data);
                match codec::decode(data, &stat, codec::now_ms()) {
                    Decoded::Value(v) => Node::Value(v, stat, ttl),
                    Decoded::NoValue => Node::NoValue(stat),
                    Decoded::Expired => Node::Expired(stat),
                }
            }),
            Err(zk::Error::NoNode) => Ok(Node::Missing),
            Err(e) => Err(e),
        }
    }

    /// Deletes an expired key in the background (only if it was not written since).
    pub fn reap(client: &Client, path: &str, stat: &Stat) {
        let client = client.clone();
        let path = path.to_string();
        let version = stat.version;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                if let Err(zk::Error::NotEmpty) = client.delete(&path, Some(version)).await {
                    let _ = client
                        .set_data(&path, codec::TOMBSTONE, Some(version))
                        .await;
                }
            })
            .await;
        });
    }

    /// Reads a key: `Some((value, stat))` if it holds a live value.
    pub async fn get_key(&self, key: &str) -> Result<Option<(Vec<u8>, Stat)>> {
        let path = self.path(key);
        let node = self
            .read_retry(key, |c| {
                let path = path.clone();
                async move {
                    let n = Self::read_node(&c, &path).await?;
                    if let Node::Expired(stat) = &n {
                        Self::reap(&c, &path, stat);
                    }
                    Ok(n)
                }
            })
            .await?;
        Ok(match node {
            Node::Value(v, s, _) => Some((v, s)),
            _ => None,
        })
    }

    /// Creates the parents of `path` (plain znodes without value).
    pub async fn make_parents(
        &self,
        client: &Client,
        path: &str,
    ) -> std::result::Result<(), zk::Error> {
        let Some(i) = path.rfind('/') else {
            return Ok(());
        };
        if i == 0 {
            return Ok(());
        }
        client
            .mkdir(&path[..i], &CreateMode::Persistent.with_acls(self.acls()))
            .await
    }

    /// The mzxid of a znode after a write whose stat may be invalid (ZOOKEEPER-4026).
    pub async fn fix_stat(
        client: &Client,
        path: &str,
        stat: Stat,
    ) -> std::result::Result<Stat, zk::Error> {
        if !stat.is_invalid() {
            return Ok(stat);
        }
        client.check_stat(path).await?.ok_or(zk::Error::NoNode)
    }

    /// [`Self::replace_node`] for a put of a permanent value: the written pair, or `None` when
    /// the znode changed meanwhile and the put must start over.
    #[allow(clippy::too_many_arguments)]
    async fn replace_permanent(
        &self,
        client: &Client,
        path: &str,
        version: i32,
        data: &[u8],
        opts: &CreateOptions<'_>,
        key: &str,
        value: &[u8],
    ) -> Result<Option<KvPair>> {
        match self.replace_node(client, path, version, data, opts).await {
            Ok(stat) => {
                self.remember(path, stat.czxid, None);
                Ok(Some(KvPair::new(key, value, stat.mzxid as u64)))
            }
            Err(
                zk::Error::BadVersion
                | zk::Error::NoNode
                | zk::Error::NodeExists
                | zk::Error::NotEmpty,
            ) => Ok(None),
            Err(e) => Err(self.err(e, key)),
        }
    }

    /// Replaces a znode (known at `version`) by a new one of the right type, atomically.
    pub async fn replace_node(
        &self,
        client: &Client,
        path: &str,
        version: i32,
        data: &[u8],
        opts: &CreateOptions<'_>,
    ) -> std::result::Result<Stat, zk::Error> {
        let mut w = client.new_multi_writer();
        w.add_delete(path, Some(version))?;
        w.add_create(path, data, opts)?;
        let res = w.commit().await.map_err(zk::Error::from)?;
        let stat = match res.into_iter().nth(1) {
            Some(zk::MultiWriteResult::Create { stat, .. }) => stat,
            _ => {
                return Err(zk::Error::UnexpectedError(
                    "multi create gave no result".into(),
                ))
            }
        };
        Self::fix_stat(client, path, stat).await
    }

    /// [`Self::replace_node`] for a key value, recording the new znode's type.
    pub async fn replace_key(
        &self,
        client: &Client,
        path: &str,
        version: i32,
        data: &[u8],
        ttl: Option<Duration>,
    ) -> std::result::Result<Stat, zk::Error> {
        let st = self
            .replace_node(client, path, version, data, &self.create_opts(ttl))
            .await?;
        self.remember(path, st.czxid, ttl);
        Ok(st)
    }

    fn ttl_error(&self, e: zk::Error, key: &str, ttl: Option<Duration>) -> Error {
        if ttl.is_some() && matches!(e, zk::Error::Unimplemented) {
            return Error::unsupported(
                "TTL keys on this ZooKeeper server (enable TTL nodes with extendedTypesEnabled=true in zoo.cfg)",
                BACKEND,
            );
        }
        self.err(e, key)
    }

    /// Creates a key's znode (parents as needed). `Ok(None)`: it exists already.
    async fn create_key(
        &self,
        client: &Client,
        key: &str,
        path: &str,
        data: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Stat>> {
        let opts = self.create_opts(ttl);
        for _ in 0..2 {
            match client.create(path, data, &opts).await {
                Ok((stat, _)) => {
                    let stat = Self::fix_stat(client, path, stat)
                        .await
                        .map_err(|e| self.err(e, key))?;
                    self.remember(path, stat.czxid, ttl);
                    return Ok(Some(stat));
                }
                Err(zk::Error::NodeExists) => return Ok(None),
                Err(zk::Error::NoNode) => self
                    .make_parents(client, path)
                    .await
                    .map_err(|e| self.err(e, key))?,
                Err(e) => return Err(self.ttl_error(e, key, ttl)),
            }
        }
        Ok(None)
    }

    pub async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<KvPair> {
        let path = self.path(key);
        let data = codec::encode(value, ttl);
        let opts = self.create_opts(ttl);
        let client = self.conn()?.client;
        for _ in 0..20 {
            if ttl.is_some() {
                // A TTL znode keeps the TTL it was created with: replace the znode in one multi.
                let mut w = client.new_multi_writer();
                w.add_delete(&path, None).map_err(|e| self.err(e, key))?;
                w.add_create(&path, &data, &opts)
                    .map_err(|e| self.err(e, key))?;
                match w.commit().await {
                    Ok(res) => {
                        let stat = match res.into_iter().nth(1) {
                            Some(zk::MultiWriteResult::Create { stat, .. }) => stat,
                            _ => Stat {
                                czxid: -1,
                                ..zero_stat()
                            },
                        };
                        let stat = Self::fix_stat(&client, &path, stat)
                            .await
                            .map_err(|e| self.err(e, key))?;
                        self.remember(&path, stat.czxid, ttl);
                        return Ok(KvPair::new(key, value, stat.mzxid as u64));
                    }
                    Err(zk::MultiWriteError::OperationFailed {
                        index: 0,
                        source: zk::Error::NoNode,
                    }) => {
                        if let Some(stat) = self.create_key(&client, key, &path, &data, ttl).await?
                        {
                            return Ok(KvPair::new(key, value, stat.mzxid as u64));
                        }
                        continue;
                    }
                    Err(zk::MultiWriteError::OperationFailed {
                        index: 0,
                        source: zk::Error::NotEmpty,
                    }) => {
                        // Keys below: keep the znode, the header carries the TTL.
                        match client.set_data(&path, &data, None).await {
                            Ok(stat) => return Ok(KvPair::new(key, value, stat.mzxid as u64)),
                            Err(zk::Error::NoNode) => continue,
                            Err(e) => return Err(self.err(e, key)),
                        }
                    }
                    Err(zk::MultiWriteError::OperationFailed {
                        source: zk::Error::NodeExists | zk::Error::NoNode,
                        ..
                    }) => continue,
                    Err(e) => return Err(self.ttl_error(e.into(), key, ttl)),
                }
            }
            // Permanent value. Known znode (this store saw how it was created): one
            // round trip, `setData`, its `czxid` confirms the znode is the one we know.
            if let Some((czxid, kind)) = self.known_type(&path) {
                match client.set_data(&path, &data, None).await {
                    Ok(stat) => {
                        if stat.num_children > 0
                            || (stat.czxid == czxid && kind.is_none() && stat.ephemeral_owner == 0)
                        {
                            return Ok(KvPair::new(key, value, stat.mzxid as u64));
                        }
                        // A TTL or ephemeral znode, or one re-created by someone else whose
                        // type we do not know: replace it by a permanent one.
                        match self
                            .replace_permanent(
                                &client,
                                &path,
                                stat.version,
                                &data,
                                &opts,
                                key,
                                value,
                            )
                            .await?
                        {
                            Some(pair) => return Ok(pair),
                            None => continue,
                        }
                    }
                    Err(zk::Error::NoNode) => {
                        if let Some(stat) = self.create_key(&client, key, &path, &data, ttl).await?
                        {
                            return Ok(KvPair::new(key, value, stat.mzxid as u64));
                        }
                        continue;
                    }
                    Err(e) => return Err(self.err(e, key)),
                }
            }
            // First put of this path by this store: the read of the old znode and the write
            // are pipelined (the server answers a session's requests in order), so this is
            // one round trip too; the old header tells the znode's type.
            let old = client.get_data(&path);
            let new = client.set_data(&path, &data, None);
            let (old, new) = futures::join!(old, new);
            match new {
                Ok(stat) => {
                    let pair = KvPair::new(key, value, stat.mzxid as u64);
                    let known = match &old {
                        Ok((old_data, st))
                            if st.czxid == stat.czxid && st.version + 1 == stat.version =>
                        {
                            Some((codec::header_ttl(old_data), *st))
                        }
                        _ => None,
                    };
                    match known {
                        Some((old_ttl, st)) if !codec::needs_replace(old_ttl, &st, None) => {
                            self.remember(&path, stat.czxid, old_ttl.map(Duration::from_millis));
                            return Ok(pair);
                        }
                        _ if stat.num_children > 0 => return Ok(pair),
                        _ => {}
                    }
                    // A TTL or ephemeral znode (or one changed between the two requests):
                    // replace it by a permanent znode.
                    match self
                        .replace_permanent(&client, &path, stat.version, &data, &opts, key, value)
                        .await?
                    {
                        Some(pair) => return Ok(pair),
                        None => continue,
                    }
                }
                Err(zk::Error::NoNode) => {
                    if let Some(stat) = self.create_key(&client, key, &path, &data, ttl).await? {
                        return Ok(KvPair::new(key, value, stat.mzxid as u64));
                    }
                }
                Err(e) => return Err(self.err(e, key)),
            }
        }
        Err(Error::backend(
            BACKEND,
            format!("put {key:?} kept racing with concurrent changes"),
            zk::Error::RuntimeInconsistent,
        ))
    }

    pub async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        ttl: Option<Duration>,
    ) -> Result<KvPair> {
        let path = self.path(key);
        let data = codec::encode(value, ttl);
        let client = self.conn()?.client;
        for _ in 0..20 {
            let node = Self::read_node(&client, &path)
                .await
                .map_err(|e| self.err(e, key))?;
            let stat = match (previous, node) {
                (None, Node::Missing) => {
                    match self.create_key(&client, key, &path, &data, ttl).await? {
                        Some(stat) => return Ok(KvPair::new(key, value, stat.mzxid as u64)),
                        None => continue,
                    }
                }
                (None, Node::Value(..)) => {
                    return Err(Error::KeyExists {
                        key: key.to_string(),
                    })
                }
                (None, Node::NoValue(stat)) => (stat, None),
                (_, Node::Expired(stat)) => {
                    match client.delete(&path, Some(stat.version)).await {
                        Err(zk::Error::NotEmpty) => {
                            let _ = client
                                .set_data(&path, codec::TOMBSTONE, Some(stat.version))
                                .await;
                        }
                        Err(e @ (zk::Error::ConnectionLoss | zk::Error::NoAuth)) => {
                            return Err(self.err(e, key))
                        }
                        _ => {}
                    }
                    continue;
                }
                (Some(_), Node::Missing | Node::NoValue(_)) => return Err(Error::not_found(key)),
                (Some(prev), Node::Value(_, stat, old_ttl)) => {
                    if stat.mzxid as u64 != prev.version {
                        return Err(Error::KeyModified {
                            key: key.to_string(),
                            expected: prev.version,
                            actual: stat.mzxid as u64,
                        });
                    }
                    (stat, old_ttl)
                }
            };
            let (stat, old_ttl) = stat;
            let r = if !codec::needs_replace(old_ttl, &stat, ttl) {
                client.set_data(&path, &data, Some(stat.version)).await
            } else {
                self.replace_key(&client, &path, stat.version, &data, ttl)
                    .await
            };
            match r {
                Ok(s) => return Ok(KvPair::new(key, value, s.mzxid as u64)),
                Err(
                    zk::Error::BadVersion
                    | zk::Error::NoNode
                    | zk::Error::NodeExists
                    | zk::Error::NotEmpty,
                ) => {
                    if previous.is_some() {
                        // Changed since the read: report what is there now.
                        continue;
                    }
                    continue;
                }
                Err(e) => return Err(self.ttl_error(e, key, ttl)),
            }
        }
        Err(Error::backend(
            BACKEND,
            format!("atomic_put {key:?} kept racing with concurrent changes"),
            zk::Error::RuntimeInconsistent,
        ))
    }

    /// Deletes a key; with `previous`, only at that version.
    pub async fn delete_key(&self, key: &str, previous: Option<u64>) -> Result<()> {
        let path = self.path(key);
        let client = self.conn()?.client;
        for _ in 0..20 {
            let node = Self::read_node(&client, &path)
                .await
                .map_err(|e| self.err(e, key))?;
            let stat = match node {
                Node::Missing | Node::NoValue(_) => return Err(Error::not_found(key)),
                Node::Expired(stat) => {
                    Self::reap(&client, &path, &stat);
                    return Err(Error::not_found(key));
                }
                Node::Value(_, stat, _) => stat,
            };
            if let Some(p) = previous {
                if stat.mzxid as u64 != p {
                    return Err(Error::KeyModified {
                        key: key.to_string(),
                        expected: p,
                        actual: stat.mzxid as u64,
                    });
                }
            }
            let r = if stat.num_children > 0 {
                client
                    .set_data(&path, codec::TOMBSTONE, Some(stat.version))
                    .await
                    .map(|_| ())
            } else {
                client.delete(&path, Some(stat.version)).await
            };
            match r {
                Ok(()) => return Ok(()),
                Err(zk::Error::BadVersion | zk::Error::NoNode | zk::Error::NotEmpty) => continue,
                Err(e) => return Err(self.err(e, key)),
            }
        }
        Err(Error::backend(
            BACKEND,
            format!("delete {key:?} kept racing with concurrent changes"),
            zk::Error::RuntimeInconsistent,
        ))
    }
}

fn zero_stat() -> Stat {
    Stat {
        czxid: 0,
        mzxid: 0,
        pzxid: 0,
        ctime: 0,
        mtime: 0,
        version: 0,
        cversion: 0,
        aversion: 0,
        ephemeral_owner: 0,
        data_length: 0,
        num_children: 0,
    }
}

async fn connect_client(cfg: &ZkConfig) -> std::result::Result<Client, zk::Error> {
    let mut c = Client::connector()
        .with_session_timeout(cfg.session_timeout)
        .with_fail_eagerly();
    if let Some((user, password)) = &cfg.digest {
        c = c.with_auth("digest", format!("{user}:{password}").as_bytes());
    }
    let cluster = cfg.endpoints.join(",");
    #[cfg(feature = "tls")]
    if let Some(tls) = &cfg.tls {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Ignored if another thread installed one meanwhile.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        c = c.with_tls(tls_options(tls)?);
        return c.secure_connect(&cluster).await;
    }
    c.connect(&cluster).await
}

#[cfg(feature = "tls")]
fn tls_options(tls: &ZkTls) -> std::result::Result<zk::TlsOptions, zk::Error> {
    let read = |p: &std::path::PathBuf, what: &str| {
        std::fs::read_to_string(p).map_err(|e| {
            zk::Error::UnexpectedError(format!("cannot read TLS {what} file {}: {e}", p.display()))
        })
    };
    let mut o = zk::TlsOptions::new();
    if let Some(ca) = &tls.ca {
        o = o.with_pem_ca(&read(ca, "CA")?)?;
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        o = o.with_pem_identity(&read(cert, "certificate")?, &read(key, "key")?)?;
    }
    Ok(o)
}

/// Watches the session; after a terminal state (expiry) opens a new session and publishes it.
async fn session_monitor(inner: std::sync::Weak<Inner>, cfg: ZkConfig) {
    let mut closed = match inner.upgrade() {
        Some(i) => i.closed.subscribe(),
        None => return,
    };
    loop {
        let (mut sw, gen) = {
            let Some(i) = inner.upgrade() else { return };
            let Some(conn) = i.conn.borrow().clone() else {
                return;
            };
            (conn.client.state_watcher(), conn.gen)
        };
        if !sw.peek_state().is_terminated() {
            loop {
                tokio::select! {
                    s = sw.changed() => if s.is_terminated() { break },
                    _ = lock::wait_true(&mut closed) => return,
                }
            }
        }
        drop(sw);
        // Terminal: build a new session.
        let mut backoff = retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            if *closed.borrow() || inner.strong_count() == 0 {
                return;
            }
            let r = tokio::time::timeout(cfg.timeout, connect_client(&cfg)).await;
            match r {
                Ok(Ok(client)) => {
                    let Some(i) = inner.upgrade() else { return };
                    if i.is_closed.load(Ordering::SeqCst) {
                        return;
                    }
                    i.conn.send_replace(Some(Conn {
                        client: Arc::new(client),
                        gen: gen + 1,
                    }));
                    break;
                }
                _ => {
                    tokio::select! {
                        _ = backoff.wait() => {},
                        _ = lock::wait_true(&mut closed) => return,
                    }
                }
            }
        }
    }
}

impl ZkStore {
    /// Connects (opens a ZooKeeper session) with `config`.
    pub async fn connect(config: ZkConfig) -> Result<Self> {
        config.validate()?;
        let base = normalize_prefix(&config.namespace).map(|p| {
            if p.is_empty() {
                p
            } else {
                format!("/{}", codec::escape_path(&p, false))
            }
        })?;
        let endpoints = config.endpoints.join(",");
        let client = match retry::timed("connect", config.timeout, async {
            connect_client(&config).await.map_err(|e| {
                let tls = if config.tls.is_some() {
                    " over TLS (check ca=/cert=/key= and that the port is the server's secureClientPort)"
                } else {
                    ""
                };
                match map_err(e, "", &endpoints) {
                    Error::Unreachable { endpoint, message, source } => Error::Unreachable {
                        endpoint,
                        message: format!("{message}{tls}"),
                        source,
                    },
                    Error::Timeout { .. } => Error::Unreachable {
                        endpoint: endpoints.clone(),
                        message: format!("no ZooKeeper session could be established{tls}"),
                        source: None,
                    },
                    other => other,
                }
            })
        })
        .await
        {
            Ok(c) => c,
            Err(Error::Timeout { after, .. }) => {
                return Err(Error::Unreachable {
                    endpoint: endpoints,
                    message: format!(
                        "no ZooKeeper session within {after:?}{}",
                        if config.tls.is_some() { " (TLS)" } else { "" }
                    ),
                    source: None,
                })
            }
            Err(e) => return Err(e),
        };
        let (conn, _) = tokio_watch::channel(Some(Conn {
            client: Arc::new(client),
            gen: 0,
        }));
        let (closed, _) = tokio_watch::channel(false);
        let inner = Arc::new(Inner {
            cfg: config.clone(),
            base,
            endpoints,
            conn,
            closed,
            locks: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            is_closed: AtomicBool::new(false),
            types: Mutex::new(HashMap::new()),
        });
        // Check the server answers with our credentials before returning.
        let check_path = inner.prefix_path("");
        let probe = inner.conn()?.client;
        match retry::timed("connect", config.timeout, async {
            probe
                .check_stat(&check_path)
                .await
                .map_err(|e| inner.err(e, ""))
        })
        .await
        {
            Ok(_) | Err(Error::Unauthorized { .. }) => {}
            Err(e) => return Err(e),
        }
        drop(probe);
        tokio::spawn(session_monitor(Arc::downgrade(&inner), config));
        Ok(ZkStore { inner })
    }

    /// Parses a `zk://` URL (see the [crate docs](crate)) and connects.
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::connect(ZkConfig::from_url(url)?).await
    }

    /// The configuration in use.
    pub fn config(&self) -> &ZkConfig {
        &self.inner.cfg
    }

    /// The underlying zookeeper-client session (for tools and tests; it changes after a
    /// session expiry). `Err(Closed)` after close.
    pub fn client(&self) -> Result<Client> {
        Ok((*self.inner.conn()?.client).clone())
    }
}

#[async_trait]
impl Store for ZkStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.caps()
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> Result<KvPair> {
        let i = &self.inner;
        let key = i.key(key)?;
        kv_core::key::check_value_size(&key, value, MAX_VALUE_SIZE, BACKEND)?;
        i.caps().check_ttl(options.ttl, BACKEND)?;
        i.check_open()?;
        i.timed("put", i.put(&key, value, options.ttl)).await
    }

    async fn get(&self, key: &str) -> Result<KvPair> {
        let i = &self.inner;
        let key = i.key(key)?;
        i.check_open()?;
        match i.timed("get", i.get_key(&key)).await? {
            Some((v, stat)) => Ok(KvPair::new(key, v, stat.mzxid as u64)),
            None => Err(Error::not_found(key)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let i = &self.inner;
        let key = i.key(key)?;
        i.check_open()?;
        i.timed("delete", i.delete_key(&key, None)).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let i = &self.inner;
        let key = i.key(key)?;
        i.check_open()?;
        Ok(i.timed("exists", i.get_key(&key)).await?.is_some())
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        let key = self.inner.key(key)?;
        self.inner.check_open()?;
        watch::watch_key(self.inner.clone(), key).await
    }

    async fn watch_tree(&self, prefix: &str) -> Result<TreeWatchStream> {
        let prefix = self.inner.prefix(prefix)?;
        self.inner.check_open()?;
        watch::watch_tree(self.inner.clone(), prefix).await
    }

    async fn new_lock(&self, key: &str, options: LockOptions) -> Result<Lock> {
        let key = self.inner.key(key)?;
        kv_core::key::check_value_size(&key, &options.value, MAX_VALUE_SIZE, BACKEND)?;
        self.inner.caps().check_ttl(Some(options.ttl), BACKEND)?;
        self.inner.check_open()?;
        lock::new_lock(self.inner.clone(), key, options).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        let i = &self.inner;
        let prefix = i.prefix(prefix)?;
        i.check_open()?;
        i.timed("list", async {
            i.read_retry(&prefix, |c| {
                let prefix = prefix.clone();
                async move { tree::list(i, &c, &prefix).await.map(|(pairs, _)| pairs) }
            })
            .await
        })
        .await
    }

    async fn delete_tree(&self, prefix: &str) -> Result<()> {
        let i = &self.inner;
        let prefix = i.prefix(prefix)?;
        i.check_open()?;
        i.timed("delete_tree", tree::delete_tree(i, &prefix)).await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair> {
        let i = &self.inner;
        let key = i.key(key)?;
        if let Some(p) = previous {
            kv_core::key::check_previous(&key, p)?;
        }
        kv_core::key::check_value_size(&key, value, MAX_VALUE_SIZE, BACKEND)?;
        i.caps().check_ttl(options.ttl, BACKEND)?;
        i.check_open()?;
        i.timed(
            "atomic_put",
            i.atomic_put(&key, value, previous, options.ttl),
        )
        .await
    }

    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        let i = &self.inner;
        let key = i.key(key)?;
        kv_core::key::check_previous(&key, previous)?;
        i.check_open()?;
        i.timed("atomic_delete", i.delete_key(&key, Some(previous.version)))
            .await
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<TxnResult>> {
        let i = &self.inner;
        let txn = txn.prepare(&i.caps(), BACKEND)?;
        for k in txn
            .compares
            .iter()
            .map(|c| c.key())
            .chain(txn.ops.iter().map(|o| o.key()))
        {
            i.check_reserved(k, k)?;
        }
        i.check_open()?;
        i.timed("txn", txn::run(i, &txn)).await
    }

    async fn close(&self) -> Result<()> {
        let i = &self.inner;
        if i.is_closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let held: Vec<Arc<lock::Held>> = i
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in held {
            h.notifier.fire("the store was closed");
            let _ = tokio::time::timeout(i.cfg.timeout, h.release_nodes()).await;
        }
        i.closed.send_replace(true);
        i.conn.send_replace(None);
        Ok(())
    }
}
