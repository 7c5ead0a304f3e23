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
//! - `consistency=linearizable` (default) or `consistency=stale`: read consistency, see
//!   [below](#read-consistency) ([`ZkConfig::consistency`]);
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
//! - `put` costs one request (one round trip) whether or not the key exists: each store
//!   remembers the znodes it created, wrote or read (by path: `czxid`, type, data version;
//!   the znode's type — permanent, TTL, ephemeral lock value — is fixed at creation and
//!   ZooKeeper does not report TTL znodes as such), so a put of a known znode is a `setData`
//!   whose returned `czxid` confirms the znode is the one known, and a put of a path the store
//!   does not know is a `create`. Only a put that finds a znode it did not expect costs more: a
//!   `create` that meets an existing znode sends a read of the old znode pipelined with
//!   `setData` (its header tells the type); a znode of the wrong type (a TTL znode, a lock's
//!   ephemeral znode, one re-created meanwhile by someone else) is replaced by one `multi`
//!   (delete and create). When unknown paths mostly exist (a process rewriting the keys of an
//!   earlier run) the store sends the pipelined read and write first instead (one round trip,
//!   two requests), and goes back to `create` first when new keys dominate. Missing parents
//!   cost extra only the first time. A `delete` of a permanent key the store knows is one
//!   `delete` at the data version it last saw (on any other outcome it reads the znode first,
//!   as `atomic_delete` always does).
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
//! ## Read consistency
//! kv's rule ([`kv_core::Consistency`]): reads are linearizable unless `consistency=stale`.
//! ZooKeeper itself promises only sequential consistency: each server answers reads from its
//! own copy, and a follower can be behind writes the leader has already acknowledged.
//! - **Default (`linearizable`)**: `get`, `exists`, `list`, the first read of a watch (and
//!   the first read after it re-arms on a reconnect) and the read of a `txn` are preceded by a
//!   `sync` of the path, pipelined with the read in the same round trip: the server holds the
//!   session's read until the leader has answered the `sync`, so the read reflects every write
//!   committed before it. A get is then two requests (`sync` + `getData`) in one client round
//!   trip, and the connected server waits for a round trip to the leader. The
//!   reads of compare-and-swap (`atomic_put`, `atomic_delete`) and of transactions with
//!   compares or writes are synced in both modes. Caveat (zookeeper-client's docs,
//!   ZOOKEEPER-1675/2136): a `sync` is not quorum-acknowledged, so a server still following a
//!   leader that was just deposed by a partition can answer a synced read from the old
//!   leader's state for up to its sync timeout (`syncLimit × tickTime`).
//! - **`consistency=stale`**: no `sync`: the connected server's view, sequentially consistent
//!   (one session never sees the state go back, also across reconnects, but it may miss
//!   writes other clients had acknowledged, by the follower's replication lag — unbounded
//!   while the follower is cut off from the leader but still serving). Watch events after
//!   the first item are re-reads on the server that sent the event, in both modes.
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
//! `cargo bench -p kv-zookeeper --bench vs_raw` (`KV_BENCH_N`, default 8000 calls per workload
//! in 8 rounds, kv and raw alternating), 100-byte values, ZooKeeper 3.8.0 standalone (Debian
//! package, `tickTime=500`, started by `scripts/servers/zookeeper.sh`) on the same 2-core
//! machine as the bench (load average about 0.3 at the start); 64 tasks share one session on
//! each side. Gets compare like with like: **get (linearizable)** is kv's default get against
//! the raw client sending the same `sync` and `getData` pipelined (the `sync` sent when called,
//! the `getData` when the joined future first polls it, as kv does); **get (stale)** is a store
//! opened with `consistency=stale` against a plain raw `getData`. Requests per call are the
//! server's own count (`mntr` `zk_packets_received`, read around every run). One run,
//! 2026-12-01:
//!
//! | workload | kv ops/s (best) | raw ops/s (best) | kv / raw (best) | kv / raw (median of rounds) | kv client CPU µs/op | raw client CPU µs/op | kv requests/op | raw requests/op |
//! |---|---|---|---|---|---|---|---|---|
//! | sequential put, new key (raw: `create`) | 3864 | 3742 | 1.03 | 1.12 | 41.0 | 39.8 | 1.00 | 1.00 |
//! | sequential put, overwrite (raw: `setData`) | 3811 | 3761 | 1.01 | 1.00 | 45.6 | 46.5 | 1.00 | 1.00 |
//! | sequential get (linearizable; raw: `sync` + `getData`) | 4612 | 4822 | 0.96 | 0.99 | 66.2 | 61.6 | 2.00 | 2.00 |
//! | sequential get (stale; raw: `getData`) | 8583 | 8653 | 0.99 | 0.99 | 42.2 | 38.9 | 1.00 | 1.00 |
//! | sequential delete | 3744 | 4107 | 0.91 | 0.96 | 49.2 | 44.8 | 1.00 | 1.00 |
//! | 64-task put, new key | 32673 | 28288 | 1.16 | 1.03 | 8.4 | 6.9 | 1.00 | 1.00 |
//! | 64-task put, overwrite | 35181 | 47344 | 0.74 | 0.90 | 8.4 | 8.2 | 1.00 | 1.00 |
//! | 64-task get (linearizable) | 13646 | 15062 | 0.91 | 1.00 | 31.0 | 28.9 | 2.00 | 2.00 |
//! | 64-task get (stale) | 37415 | 35038 | 1.07 | 1.03 | 15.1 | 14.6 | 1.00 | 1.00 |
//! | 64-task delete | 47446 | 48568 | 0.98 | 0.99 | 6.9 | 7.2 | 1.00 | 1.00 |
//!
//! Put, stale get and delete are one request per call; a linearizable get is two (`sync` +
//! `getData`), sent without waiting for the `sync`'s answer, the same on both sides. A
//! linearizable get costs about twice a stale one in this run (sequential: about 215 µs
//! against 116 µs per call, kv and raw alike), because of how the two requests reach the
//! socket: zookeeper-client 0.11 does not set `TCP_NODELAY`, so when its connection task
//! writes the `sync` before the `getData` is queued, Nagle's algorithm holds the `getData`
//! until the `sync`'s answer arrives, and the pair costs two round trips. Whether both go in one
//! write is a race between the calling task and the connection task that tends to stay the
//! same for a session over a run: in two earlier runs of the sequential linearizable row one
//! of the two sessions sent one TCP segment per get (`ss -ti` `data_segs_out`, about 67 bytes
//! each) and ran at 7,100–7,400 gets/s, close to the stale rate, while the other sent two
//! segments per get and ran at 4,500–4,700/s, giving a kv ÷ raw of 1.54 in one run and 0.61 in
//! the other. The linearizable rows therefore compare the same requests, but their ratio in a
//! single run can reflect which session won that race rather than kv's own cost. The 64-task
//! overwrite row's 0.90 is within this machine's round-to-round spread on the 64-task rows
//! (0.99 in the run before, 0.97 in the previous table).
//!
//! Before puts of unknown paths became a `create` and deletes of known keys a single `delete`,
//! a put of a new key cost 3 requests in 2 round trips (a read and a `setData`, both `NoNode`,
//! then a `create`) and a delete 2 (read, then `delete`): new-key puts ran at 0.41
//! (sequential) and 0.27 (64 tasks) of the raw `create`, deletes at 0.67 and 0.49 of the raw
//! `delete` (medians of rounds).

#![warn(missing_docs)]

mod codec;
pub mod config;
mod lock;
mod tree;
mod txn;
mod watch;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv_core::{
    async_trait, normalize_key, normalize_prefix, retry, Capabilities, Error, KvPair, Lock,
    LockOptions, PutOptions, Result, Store, TreeWatchStream, Txn, TxnResult, WatchStream,
};
use tokio::sync::watch as tokio_watch;
use zookeeper_client as zk;
use zookeeper_client::{Acls, Client, CreateMode, CreateOptions, Stat};

pub use config::{ZkConfig, ZkTls, DEFAULT_PORT, DEFAULT_SESSION_TIMEOUT};

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
    /// The znodes this store created, wrote or read, by path (see [`write`]): a put of a
    /// known path is a `setData` whose returned `czxid` is checked against the entry, a put
    /// of an unknown one a `create`, and a delete of a known one a `delete` at its version.
    pub types: Mutex<HashMap<String, write::Known>>,
    /// How often puts of paths missing from `types` found a znode there lately (see
    /// [`write`]): above 0, such a put reads and writes first instead of creating first.
    pub unknown_existed: AtomicI32,
}

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

    /// True when reads `sync` first ([`Consistency::Linearizable`](kv_core::Consistency)).
    pub fn sync_reads(&self) -> bool {
        !self.cfg.consistency.is_stale()
    }

    /// Runs `read` after a `sync` of `path` when `sync` is true. The two requests are
    /// pipelined (one round trip): ZooKeeper answers a session's requests in order, and a
    /// server holds a session's reads until its pending `sync` has come back from the leader,
    /// so the read reflects every write committed before the `sync`.
    pub async fn after_sync<T, Fut>(
        client: &Client,
        path: &str,
        sync: bool,
        read: Fut,
    ) -> std::result::Result<T, zk::Error>
    where
        Fut: std::future::Future<Output = std::result::Result<T, zk::Error>>,
    {
        if !sync {
            return read.await;
        }
        // `sync` sends its request when called; `read` (an unpolled future) sends after it.
        let synced = client.sync(path);
        let (s, r) = futures::join!(synced, read);
        s?;
        r
    }

    /// Reads one znode, after a `sync` when `sync` is true (see [`Inner::after_sync`]).
    pub async fn read_node_synced(
        client: &Client,
        path: &str,
        sync: bool,
    ) -> std::result::Result<Node, zk::Error> {
        Self::after_sync(client, path, sync, Self::read_node(client, path)).await
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
                    let n = Self::read_node_synced(&c, &path, self.sync_reads()).await?;
                    match &n {
                        Node::Expired(stat) => Self::reap(&c, &path, stat),
                        Node::Value(_, stat, ttl) => self.remember_read(&path, stat, *ttl),
                        _ => {}
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
            unknown_existed: AtomicI32::new(0),
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
                async move {
                    let root = i.prefix_path(&prefix);
                    let read = tree::list(i, &c, &prefix);
                    Inner::after_sync(&c, &root, i.sync_reads(), read)
                        .await
                        .map(|(pairs, _)| pairs)
                }
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
