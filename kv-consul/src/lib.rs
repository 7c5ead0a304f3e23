//! # kv-consul: the Consul driver of kv
//!
//! Implements [`kv_core::Store`] over Consul's HTTP API (KV store, sessions, blocking queries,
//! `/v1/txn`) with a rustls-only HTTP client (reqwest, no OpenSSL). Works with Consul 1.8.7
//! (Debian bullseye, the version the tests run) and later releases.
//!
//! ## Connecting
//!
//! ```no_run
//! # async fn demo() -> kv_core::Result<()> {
//! use kv_core::Store;
//! let store = kv_consul::ConsulStore::from_url(
//!     "consul://10.0.0.1:8500,10.0.0.2:8500/app?token=s3cr3t&timeout=5s",
//! ).await?;
//! store.put("config/port", b"8080", Default::default()).await?;
//! # Ok(()) }
//! ```
//!
//! URL: `consul://host1:port,host2:port/optional/namespace?options` (port defaults to 8500).
//! Every key lives under the namespace (the URL path). Several agents may be given: a request
//! that cannot connect to one agent is retried on the next (the last good one is remembered).
//!
//! | option | meaning |
//! |---|---|
//! | `token=T` | ACL token, sent as `X-Consul-Token` on every request |
//! | `timeout=10s` | bound on every call (default 10 s); `ms`, `s`, `m`, `h` or bare seconds |
//! | `tls=true` | use `https://` (needs the `tls` cargo feature) |
//! | `ca=/path/ca.pem` | PEM CA bundle that signs the agents' certificates; implies `tls=true`. Required with TLS: the system trust store is not read |
//! | `cert=/path/cert.pem`, `key=/path/key.pem` | client certificate and key (PEM) for mutual TLS (`verify_incoming`); give both |
//! | `consistency=linearizable` (default) or `stale` | read consistency, see [below](#read-consistency) |
//!
//! Unknown options are a [`Error::Config`]. Without the `tls` feature, `tls`, `ca`, `cert` and
//! `key` are a [`Error::Config`] naming the feature. TLS uses rustls with the aws-lc-rs provider,
//! configured per store (no process-wide default provider is needed or installed).
//!
//! ## Read consistency
//! kv's rule ([`kv_core::Consistency`]): reads are linearizable unless `consistency=stale`.
//! - **Default (`linearizable`)**: every user read — `get`, `exists`, `list`, every read of a
//!   `watch`/`watch_tree` (the first and the blocking ones), and a `txn` without writes — asks
//!   for `?consistent`: the agent forwards it to the leader, which confirms with a quorum that it
//!   is still the leader before answering. Consul's own default mode skips that check and can
//!   answer from a deposed leader during a leader change. The reads the driver makes for itself
//!   (around compare-and-swap, TTL writes and locks) are `?consistent` in both modes.
//! - **`consistency=stale`**: those reads ask for `?stale`: *any* server (the agent's) answers
//!   from its own copy of the state, without contacting the leader. A follower can lag the
//!   leader by its replication delay (usually milliseconds; unbounded while it is cut off), so
//!   a read may miss writes acknowledged to other clients, and two reads through different
//!   agents may see states out of order. A `txn` with compares or writes is never stale
//!   (writes go through Raft; compare-only transactions read `?consistent`).
//!
//! ## How kv maps onto Consul
//!
//! - **Versions** are Consul's `ModifyIndex` (a Raft index: never 0, strictly increasing, also
//!   across delete and re-create). `put` goes through `/v1/txn` (verb `set`) to learn it in the
//!   same round trip.
//! - **`delete`** is one transaction `[get, delete]`, so a missing key is [`Error::NotFound`]
//!   (Consul's plain `DELETE` always answers `true`). `atomic_put`/`atomic_delete` use the
//!   `cas`/`check-index` verbs; on a refusal the key is read once to report `KeyExists`,
//!   `KeyModified` (with the actual version) or `NotFound`.
//! - **`list` / `delete_tree` / `watch_tree`** query the raw prefix `<namespace>/<prefix>/`, so
//!   `foo` never matches `foobar`; results are bytewise sorted and relative to the namespace.
//!   Keys stored by other tools that are not valid kv keys (e.g. `a//b`, `a/`) are skipped.
//! - **Watches** are blocking queries (`?index=&wait=30000ms`, `X-Consul-Index`); the index is
//!   reset when it goes backwards. Consul wakes a blocking query once per change but several
//!   changes may land between two queries, so [`Capabilities::watch_every_change`] is `false`:
//!   intermediate states may be skipped, the latest state always arrives. A watch on a missing
//!   key works; Consul < 1.12 returns such a query early on any KV write, which only costs a
//!   re-query (and a short pause when nothing changed). Errors are `Err` items, after which the
//!   watch retries with back-off (50 ms doubling to 2 s) and delivers the current state.
//! - **Transactions** use `/v1/txn`. Consul 1.8.7 accepts 64 operations, so
//!   [`Capabilities::max_txn_ops`] is 64 (counted by [`kv_core::Txn::prepare`]; a put with a TTL
//!   on a key currently attached to another session needs one extra `unlock` operation and a
//!   transaction that then exceeds 64 operations is [`Error::InvalidArgument`]). A transaction
//!   `get` reads with the verb `get-tree` (1.8.7 has no `get-or-empty`).
//! - **Values** are at most [`MAX_VALUE_SIZE`] = 389120 bytes (380 KiB), not Consul's 512 KiB
//!   `kv_max_value_size`: every write goes through `/v1/txn` to learn its new `ModifyIndex` in the
//!   same round trip, and Consul limits a transaction's JSON body to 512 KiB with values in
//!   base64. Several large values in one transaction can still exceed that body limit, which
//!   gives [`Error::ValueTooLarge`]. Flags and indexes are decoded as full `u64`.
//!
//! ## TTL keys: precision
//!
//! A key written with a TTL is attached (verb `lock`) to its own Consul session with behaviour
//! `delete`, session TTL = `ttl / 2` and `LockDelay` 0, which nobody renews. Consul invalidates a
//! session `2 × TTL` after its creation, i.e. `ttl` after the write, and deletes the key then
//! (blocking queries and watches see an ordinary delete). Measured on 1.8.7 (`tests/ttl.rs`): a
//! watch saw a 20 s key's deletion 20.008 s after the write, and a key rewritten with a new TTL
//! expired 20.0 s after the rewrite. Because Consul's minimum session
//! TTL is 10 s, **[`Capabilities::min_ttl`] is 20 s**; the maximum is 48 h (session TTL 24 h).
//! Shorter or longer TTLs are [`Error::Unsupported`], never rounded. A write without TTL on a
//! key attached to a session detaches it (verb `unlock`, guarded by `check-index`), so the key
//! becomes permanent. Consul re-arms every session timer when a new leader is elected (for
//! instance after a restart), so an outage delays expiry by up to the outage length.
//!
//! ## Locks
//!
//! `new_lock` creates a session (behaviour `delete`, `LockDelay` 0, TTL = `max(ttl / 2, 10 s)`),
//! renews it every third of its TTL while waiting and while held (with `keep_alive`), waits with
//! blocking queries on the lock key while someone holds it, and takes it with the txn verb
//! `lock` (flags mark kv lock keys). The key holds `options.value` while held.
//! - Lock TTLs from 10 s up to 48 h are accepted (below 10 s: [`Error::Unsupported`]). A holder
//!   that goes silent loses the lock when Consul invalidates its session, `max(ttl, 20 s)` after
//!   its last renewal (for the default 15 s lock: 20 s; measured 20.02 s for a crashed holder in
//!   `tests/session_invalidation.rs`). [`Capabilities::min_ttl`] (20 s) is about keys. With `keep_alive = false` the driver
//!   ends the lease itself exactly `ttl` after acquisition.
//! - Behaviour `delete` (not `release`) makes an abandoned lock's key vanish with its session, as
//!   on the other backends. `LockDelay` is sent as `"0s"`, so the next waiter is never blocked
//!   by Consul's default 15 s lock-delay after an invalidation.
//! - The lost signal fires when a renewal answers 404 (session invalidated, e.g. destroyed
//!   behind the driver's back; measured: the signal fired 2 ms after the destroy and another
//!   client acquired 3 ms later), when renewals fail for longer than the session could survive,
//!   when the key is deleted, overwritten or taken by another session (watched with blocking
//!   queries), when a `keep_alive = false` lease ends, and when the store is closed.
//! - `unlock` (or dropping the lock, or dropping a waiting `new_lock` future) destroys the
//!   session, which deletes the key in the same Raft write, so the next waiter proceeds at once.
//!
//! ## ACL tokens
//!
//! With ACLs enabled the token needs `key_prefix "<namespace>"` `write` (`read` for a
//! read-only store) and, for TTL keys and locks, `session_prefix ""` `write`. A missing, unknown
//! or insufficient token gives [`Error::Unauthorized`] (already from `connect`, which reads a
//! probe key). Note that Consul filters unreadable entries out of lists instead of refusing.
//!
//! ## Flags
//!
//! kv uses the `Flags` field of the keys it writes: a random non-zero nonce on every plain write
//! (Consul skips a write that changes nothing, without a new `ModifyIndex`; the nonce keeps
//! versions strictly increasing when the same value is written again), and fixed markers on TTL
//! keys and lock keys. Other Consul clients should not rely on the flags of kv's keys.
//!
//! ## Benchmark (kv versus raw HTTP)
//!
//! `cargo bench -p kv-consul --bench vs_raw` (`KV_BENCH_N`, default 2000; `KV_BENCH_ROUNDS`,
//! default 5; uses `KV_CONSUL_ADDR` or starts its own agent) compares kv with plain reqwest
//! requests built with the same client settings, against the same agent in one run, with
//! kv_testkit's harness (kv and raw alternate; best round, median of per-round ratios, client
//! CPU per operation): raw put is `PUT /v1/kv/<key>` (answer `true`), raw delete
//! `DELETE /v1/kv/<key>`, raw get `GET /v1/kv/<key>` with JSON and base64 decoded; 100-byte
//! values, each write a new value. Gets compare like with like: **get (linearizable)** is kv's
//! default get (`?consistent`) against a raw `?consistent` GET, **get (stale)** is a store
//! opened with `consistency=stale` (`?stale`) against a raw `?stale` GET. Requests per call:
//! for writes the raft entries (the agent's `last_log_index`, read around every run); for
//! reads the agent's count of `GET /v1/kv` requests (`/v1/agent/metrics`,
//! `consul.http.GET.v1.kv._`), measured in a separate pass of 2000 sequential calls per side
//! and mode inside one of the agent's 10-second metrics intervals (Consul keeps no running
//! totals), with the leader checks it counted (`consul.raft.verify_leader`).
//!
//! Measured 2026-12-01 on the 2-core build machine against Consul 1.8.7 (Debian bullseye
//! package, single-node agent started by `scripts/servers/consul.sh`, `raft_multiplier = 1`),
//! defaults (`N = 2000`, 5 rounds); load average 3.4 at the start and about 5 at the end
//! (other jobs started during the run, most during the 64-task rows):
//!
//! | workload | kv ops/s (best) | raw ops/s (best) | kv / raw (best) | kv / raw (median of rounds) | kv client CPU µs/op | raw client CPU µs/op | kv requests/op | raw requests/op |
//! |---|---|---|---|---|---|---|---|---|
//! | sequential put, new key | 2018 | 2236 | 0.90 | 0.90 | 51.7 | 44.8 | 1.00 | 1.00 |
//! | sequential put, overwrite | 2016 | 2105 | 0.96 | 0.96 | 54.8 | 49.4 | 1.00 | 1.00 |
//! | sequential get (linearizable; raw: `?consistent`) | 13265 | 17027 | 0.78 | 0.93 | 24.0 | 24.4 | 1.00 | 1.00 |
//! | sequential get (stale; raw: `?stale`) | 15974 | 14126 | 1.13 | 0.92 | 22.7 | 22.8 | 1.00 | 1.00 |
//! | sequential delete | 1964 | 1959 | 1.00 | 0.89 | 57.3 | 47.0 | 1.00 | 1.00 |
//! | 64-task put, new key | 10638 | 13829 | 0.77 | 0.77 | 26.1 | 19.9 | 1.00 | 1.00 |
//! | 64-task put, overwrite | 10765 | 12471 | 0.86 | 0.86 | 25.6 | 19.8 | 1.00 | 1.00 |
//! | 64-task get (linearizable) | 26091 | 38214 | 0.68 | 1.50 | 19.2 | 20.7 | 1.00 | 1.00 |
//! | 64-task get (stale) | 24865 | 35938 | 0.69 | 1.39 | 18.2 | 17.6 | 1.00 | 1.00 |
//! | 64-task delete | 9532 | 12194 | 0.78 | 0.76 | 21.9 | 18.2 | 1.00 | 1.00 |
//! | sequential put, overwrite (raw: `/v1/txn`) | 1900 | 1423 | 1.34 | 1.00 | 55.1 | 54.7 | 1.00 | 1.00 |
//! | 64-task put, overwrite (raw: `/v1/txn`) | 9621 | 9137 | 1.05 | 1.05 | 29.0 | 27.1 | 1.00 | 1.00 |
//!
//! Leader checks per call, as the agent counted them: linearizable get 1.00 (kv) / 1.00 (raw),
//! stale get 0.00 / 0.00, so kv's default reads do go through the leader's quorum check and
//! its stale reads do not, as the raw requests. On a single-node agent both are one HTTP
//! request and cost about the same. Single rounds varied widely on this loaded machine: on the
//! 64-task get rows the best-round ratio (0.68, 0.69) and the median (1.50, 1.39) disagree,
//! so those rows show no difference either way. Client CPU per read is at parity. Writes stay
//! below the 0.95 target against a plain `PUT /v1/kv` (0.77–0.96): kv must write through
//! `/v1/txn` (the only write that returns the new `ModifyIndex`, which `put` returns as the
//! version), Consul serves a one-operation transaction more slowly than a plain PUT, and the
//! JSON body costs the client about 5 µs more CPU. Against a raw client sending the same
//! transaction kv is at parity (1.00, 1.05). The bench opens its kv stores afresh for each
//! workload: the agent accepts at most 200 connections per client address
//! (`limits.http_max_conns_per_client`), and three 64-task connection pools kept idle between
//! workloads made it reset new connections.

#![warn(missing_docs)]

mod api;
mod http;
mod lock;
mod txn;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv_core::key::{
    check_previous, check_value_size, in_subtree, join, strip_namespace, subtree_start,
};
use kv_core::retry::DEFAULT_TIMEOUT;
use kv_core::{
    async_trait, normalize_key, normalize_prefix, Capabilities, ConnectUrl, Consistency, Error,
    KvPair, Lock, LockOptions, PutOptions, Result, Store, Txn, TxnResult,
};
use reqwest::Method;

use api::{Entry, KvOp, TxnOutcome, TTL_FLAG};
use http::Http;

/// URL scheme of this driver: `consul://host:8500,host2:8500/namespace?options`.
pub const URL_SCHEME: &str = "consul";

/// Backend name in errors and [`Store::backend`].
pub const BACKEND: &str = "consul";

/// Largest value accepted: 380 KiB. Consul's own KV limit is 512 KiB, but writes go through
/// `/v1/txn` (to learn the new version atomically), whose whole JSON body is limited to 512 KiB
/// (`txn_max_req_len`) with values in base64 (4/3 larger); 380 KiB leaves room for the key and
/// the JSON around it.
pub const MAX_VALUE_SIZE: usize = 389_120;

/// Most compares + operations in one transaction (Consul 1.8.7 to 1.13 accept 64).
pub const MAX_TXN_OPS: usize = 64;

/// Shortest key TTL honoured precisely (see the crate docs: twice Consul's 10 s minimum
/// session TTL).
pub const MIN_TTL: Duration = Duration::from_secs(20);

/// Longest key TTL (twice Consul's 24 h maximum session TTL).
pub const MAX_TTL: Duration = Duration::from_secs(48 * 3600);

/// Shortest lock TTL (Consul's minimum session TTL).
pub const MIN_LOCK_TTL: Duration = Duration::from_secs(10);

/// Default agent port when a host has none.
pub const DEFAULT_PORT: u16 = 8500;

/// Configuration of a [`ConsulStore`].
#[derive(Clone, Debug)]
pub struct ConsulConfig {
    /// Agent addresses, `host:port` (port defaults to 8500); tried in order on connection errors.
    pub endpoints: Vec<String>,
    /// Key namespace (normalized like a prefix); every key lives under it.
    pub namespace: String,
    /// ACL token sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// Bound on every call (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Use `https://` (needs the `tls` feature).
    pub tls: bool,
    /// PEM CA bundle for the agents' certificates (implies `tls`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM client private key for mutual TLS.
    pub key_file: Option<PathBuf>,
    /// Read consistency (default [`Consistency::Linearizable`]: `?consistent` reads;
    /// [`Consistency::Stale`]: `?stale`). See the [crate docs](crate).
    pub consistency: Consistency,
}

impl ConsulConfig {
    /// A configuration for these agents with defaults (no namespace, no token, plain HTTP).
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ConsulConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            namespace: String::new(),
            token: None,
            timeout: DEFAULT_TIMEOUT,
            tls: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            consistency: Consistency::Linearizable,
        }
    }

    /// Sets the read consistency (URL option `consistency=`).
    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// Sets the namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the ACL token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the call timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Uses HTTPS with this CA bundle (and a client certificate for mTLS if given).
    pub fn tls_files(mut self, ca: impl Into<PathBuf>, client: Option<(PathBuf, PathBuf)>) -> Self {
        self.tls = true;
        self.ca_file = Some(ca.into());
        if let Some((c, k)) = client {
            self.cert_file = Some(c);
            self.key_file = Some(k);
        }
        self
    }

    /// Parses a `consul://` URL (see the crate docs for the options).
    pub fn from_url(url: &str) -> Result<Self> {
        let mut u = ConnectUrl::parse(url)?;
        if u.scheme != URL_SCHEME {
            return Err(Error::config(format!(
                "{url:?} is not a {URL_SCHEME}:// URL"
            )));
        }
        if u.user.is_some() || u.password.is_some() {
            return Err(Error::config(
                "Consul URLs take no user or password; pass an ACL token with ?token=",
            ));
        }
        if u.hosts.is_empty() {
            return Err(Error::config(format!(
                "{URL_SCHEME}:// URL without an agent address (expected consul://host:8500/...)"
            )));
        }
        let mut c = ConsulConfig::new(u.hosts.clone()).namespace(u.path.clone());
        c.token = u.take("token").filter(|t| !t.is_empty());
        if let Some(t) = u.take_duration("timeout")? {
            c.timeout = t;
        }
        c.tls = u.take_bool("tls")?.unwrap_or(false);
        c.ca_file = u.take("ca").map(PathBuf::from);
        c.cert_file = u.take("cert").map(PathBuf::from);
        c.key_file = u.take("key").map(PathBuf::from);
        if let Some(m) = u.take_consistency()? {
            c.consistency = m;
        }
        u.finish()?;
        Ok(c)
    }
}

/// A [`Store`] on Consul. Clones are cheap handles on the same connection pool and state
/// (closing one closes all).
#[derive(Clone)]
pub struct ConsulStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub http: Http,
    pub ns: String,
    /// Mode of user reads (`get`, `exists`, `list`, watches, read-only `txn`).
    pub read: Consistency,
    closed: AtomicBool,
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub lock_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn capabilities() -> Capabilities {
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

fn check_key_ttl(ttl: Option<Duration>) -> Result<()> {
    capabilities().check_ttl(ttl, BACKEND)?;
    match ttl {
        Some(t) if t > MAX_TTL => Err(Error::unsupported(
            format!("TTL of {t:?} (the longest this backend honours is {MAX_TTL:?})"),
            BACKEND,
        )),
        _ => Ok(()),
    }
}

fn normalize_endpoint(host: &str, https: bool) -> Result<String> {
    let h = host.trim();
    if h.contains("://") {
        return Err(Error::config(format!(
            "agent address {h:?} must be host:port, without a scheme (use ?tls=true for https)"
        )));
    }
    let hp = kv_core::url::host_port(h, DEFAULT_PORT)
        .map_err(|e| Error::config(format!("agent address: {e}")))?;
    Ok(format!("{}://{hp}", if https { "https" } else { "http" }))
}

#[cfg(feature = "tls")]
fn tls_config(c: &ConsulConfig) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = c.ca_file.as_ref().ok_or_else(|| {
        Error::config(
            "TLS needs the ca= option (a PEM CA bundle); the system trust store is not read",
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::config(format!("ca={}: {e}", ca.display())))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "ca={}: no PEM certificate found",
            ca.display()
        )));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| Error::config(format!("ca={}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    match (&c.cert_file, &c.key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| Error::config(format!("cert={}: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err(Error::config(format!(
                    "cert={}: no PEM certificate found",
                    cert.display()
                )));
            }
            let k = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Error::config(format!("key={}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, k)
                .map_err(|e| Error::config(format!("cert/key: {e}")))
        }
        _ => Err(Error::config(
            "mutual TLS needs both cert= and key= (PEM files)",
        )),
    }
}

/// An unused TLS config for plain-HTTP stores (no roots: any HTTPS use would fail closed).
#[cfg(feature = "tls")]
fn plain_tls_config() -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

fn build_client(c: &ConsulConfig) -> Result<(reqwest::Client, bool, Duration)> {
    let https = c.tls || c.ca_file.is_some() || c.cert_file.is_some() || c.key_file.is_some();
    // With several agents, a dead one (dropped SYNs) must leave time to try the others.
    let agents = c.endpoints.len().clamp(1, 10) as u32;
    let connect_timeout = (c.timeout / agents).max(Duration::from_millis(200).min(c.timeout));
    let builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    // Always hand reqwest a finished rustls config: it would otherwise look for a process-wide
    // default crypto provider (and panic without one).
    #[cfg(feature = "tls")]
    let builder = if https {
        builder.use_preconfigured_tls(tls_config(c)?)
    } else {
        builder.use_preconfigured_tls(plain_tls_config()?)
    };
    #[cfg(not(feature = "tls"))]
    if https {
        return Err(Error::config(
            "TLS options (tls, ca, cert, key) need the `tls` feature of kv-consul (kv: feature `tls`)",
        ));
    }
    let client = builder
        .build()
        .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
    Ok((client, https, connect_timeout))
}

impl ConsulStore {
    /// Connects (checks that an agent answers and has a leader) with `config`.
    pub async fn connect(config: ConsulConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::config("no Consul agent address given"));
        }
        if config.timeout.is_zero() {
            return Err(Error::config("timeout must be greater than zero"));
        }
        let ns = normalize_prefix(&config.namespace)
            .map_err(|e| Error::config(format!("namespace {:?}: {e}", config.namespace)))?;
        let (client, https, connect_timeout) = build_client(&config)?;
        let bases = config
            .endpoints
            .iter()
            .map(|h| normalize_endpoint(h, https))
            .collect::<Result<Vec<_>>>()?;
        let http = Http::new(
            client,
            bases,
            config.token.as_deref(),
            config.timeout,
            connect_timeout,
        )?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let store = ConsulStore {
            inner: Arc::new(Inner {
                http,
                ns,
                read: config.consistency,
                closed: AtomicBool::new(false),
                shutdown,
                lock_tasks: Mutex::new(Vec::new()),
            }),
        };
        store.check_agent().await?;
        Ok(store)
    }

    /// Parses a `consul://` URL (see the crate docs) and connects.
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::connect(ConsulConfig::from_url(url)?).await
    }

    /// The namespace every key lives under (normalized, may be empty).
    pub fn namespace(&self) -> &str {
        &self.inner.ns
    }

    async fn check_agent(&self) -> Result<()> {
        let http = &self.inner.http;
        let r = http
            .send(
                "connect",
                Method::GET,
                "/v1/status/leader",
                None,
                http.timeout,
            )
            .await?;
        if !r.status.is_success() {
            return Err(http::to_error(http::Failure::Status {
                operation: "connect".into(),
                key: String::new(),
                status: r.status,
                body: r.text(),
            }));
        }
        let leader = r.text();
        if leader.trim_matches('"').is_empty() {
            return Err(Error::Unreachable {
                endpoint: http.endpoints(),
                message: "the Consul cluster has no leader".into(),
                source: None,
            });
        }
        // A KV read checks the token (a denied token gives 403 here, not later).
        let probe = join(&self.inner.ns, "kv-consul-connect-probe");
        self.inner
            .http
            .kv_get(&probe, None, Consistency::Stale)
            .await?;
        Ok(())
    }
}

impl Inner {
    pub fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The stored (Consul) key of a normalized key.
    pub fn full(&self, key: &str) -> String {
        join(&self.ns, key)
    }

    /// The raw Consul prefix of a normalized prefix's subtree.
    pub fn raw_subtree(&self, prefix: &str) -> String {
        subtree_start(&join(&self.ns, prefix))
    }

    /// A Consul entry as a kv pair (`None` if outside the namespace or not a valid kv key).
    pub fn to_pair(&self, e: &Entry) -> Option<Result<KvPair>> {
        let rel = strip_namespace(&self.ns, &e.key)?;
        match normalize_key(rel) {
            Ok(k) if k == rel => {}
            _ => return None,
        }
        Some(e.value_bytes().map(|v| KvPair::new(rel, v, e.modify_index)))
    }

    /// Reads one entry linearizably (bookkeeping reads before and after writes).
    pub async fn get_entry(&self, full: &str) -> Result<Option<Entry>> {
        Ok(self
            .http
            .kv_get(full, None, Consistency::Linearizable)
            .await?
            .0)
    }

    /// Reads one entry in the store's read mode (user reads).
    pub async fn read_entry(&self, full: &str) -> Result<Option<Entry>> {
        Ok(self.http.kv_get(full, None, self.read).await?.0)
    }

    /// The subtree of a normalized prefix, sorted.
    pub fn subtree_pairs(&self, prefix: &str, entries: &[Entry]) -> Result<Vec<KvPair>> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if let Some(p) = self.to_pair(e) {
                let p = p?;
                if in_subtree(prefix, &p.key) {
                    out.push(p);
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Writes `value` at `full` with a condition; `Ok(None)` when the condition failed.
    pub async fn write(
        &self,
        full: &str,
        value: &[u8],
        ttl: Option<Duration>,
        cond: Cond,
    ) -> Result<Option<Entry>> {
        match ttl {
            None => self.write_plain(full, value, cond).await,
            Some(ttl) => self.write_ttl(full, value, ttl, cond).await,
        }
    }

    async fn write_plain(&self, full: &str, value: &[u8], cond: Cond) -> Result<Option<Entry>> {
        let op = match cond {
            Cond::Any => KvOp::new("set", full).value(value, api::nonce()),
            Cond::Absent => KvOp::new("cas", full).value(value, api::nonce()).index(0),
            Cond::Version(v) => KvOp::new("cas", full).value(value, api::nonce()).index(v),
        };
        let entry = match self.http.txn("put", &[op]).await? {
            TxnOutcome::Ok(mut r) => r.pop().ok_or_else(|| missing_result("put"))?,
            TxnOutcome::Rejected(errs) => {
                if matches!(cond, Cond::Any) {
                    return Err(txn_error("put", full, errs));
                }
                if let Some(e) = errs.iter().find(|e| !e.what.contains("index is stale")) {
                    return Err(what_error("put", full, &e.what));
                }
                return Ok(None);
            }
        };
        match entry.session.clone().filter(|s| !s.is_empty()) {
            None => Ok(Some(entry)),
            Some(session) => {
                // The key stays attached to a TTL (or lock) session after a plain set: detach
                // it so that the key is permanent, unless someone wrote it meanwhile.
                let ops = [
                    KvOp::new("check-index", full).index(entry.modify_index),
                    KvOp::new("unlock", full)
                        .value(value, api::nonce())
                        .session(&session),
                ];
                match self.http.txn("put", &ops).await? {
                    TxnOutcome::Ok(mut r) => Ok(Some(r.pop().unwrap_or(entry))),
                    TxnOutcome::Rejected(_) => Ok(Some(entry)),
                }
            }
        }
    }

    async fn write_ttl(
        &self,
        full: &str,
        value: &[u8],
        ttl: Duration,
        cond: Cond,
    ) -> Result<Option<Entry>> {
        let session = self
            .http
            .session_create("kv-ttl", "delete", ttl / 2)
            .await?;
        let r = self.write_ttl_with(full, value, &session, cond).await;
        if !matches!(r, Ok(Some(_))) {
            let _ = self.http.session_destroy(&session).await;
        }
        r
    }

    async fn write_ttl_with(
        &self,
        full: &str,
        value: &[u8],
        session: &str,
        cond: Cond,
    ) -> Result<Option<Entry>> {
        for _ in 0..20 {
            let cur = self.get_entry(full).await?;
            match (&cur, cond) {
                (Some(_), Cond::Absent) => return Ok(None),
                (None, Cond::Version(_)) => return Ok(None),
                (Some(e), Cond::Version(v)) if e.modify_index != v => return Ok(None),
                _ => {}
            }
            let mut ops = Vec::with_capacity(3);
            match &cur {
                None => ops.push(KvOp::new("check-not-exists", full)),
                Some(e) => {
                    ops.push(KvOp::new("check-index", full).index(e.modify_index));
                    if let Some(s) = e.session.as_deref().filter(|s| !s.is_empty()) {
                        ops.push(KvOp::new("unlock", full).value(&[], 0).session(s));
                    }
                }
            }
            ops.push(
                KvOp::new("lock", full)
                    .value(value, TTL_FLAG)
                    .session(session),
            );
            match self.http.txn("put", &ops).await? {
                TxnOutcome::Ok(mut r) => {
                    return Ok(Some(r.pop().ok_or_else(|| missing_result("put"))?))
                }
                TxnOutcome::Rejected(errs) => {
                    if let Some(e) = errs.iter().find(|e| is_fatal_what(&e.what)) {
                        return Err(what_error("put", full, &e.what));
                    }
                    // The key changed between the read and the write: read again.
                }
            }
        }
        Err(Error::Backend {
            backend: BACKEND,
            message: format!("put {full:?}: the key kept changing concurrently; gave up"),
            source: None,
        })
    }
}

/// The condition of a write.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cond {
    Any,
    Absent,
    Version(u64),
}

/// A txn error entry that retrying cannot fix (ACL, size, session problems).
pub(crate) fn is_fatal_what(what: &str) -> bool {
    what.contains("Permission denied")
        || what.contains("ACL not found")
        || what.contains("too large")
        || what.contains("invalid session")
        || what.contains("missing session")
}

pub(crate) fn missing_result(op: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("{op}: Consul's transaction answer has no result"),
        source: None,
    }
}

/// The error of a refused transaction: every error entry's reason.
pub(crate) fn txn_error(op: &str, key: &str, errs: Vec<api::TxnErrorItem>) -> Error {
    let what = errs
        .into_iter()
        .map(|e| e.what)
        .collect::<Vec<_>>()
        .join("; ");
    what_error(op, key, &what)
}

/// The error of one transaction error entry (`What`).
pub(crate) fn what_error(op: &str, key: &str, what: &str) -> Error {
    http::to_error(http::Failure::TxnWhat {
        operation: op.to_string(),
        key: key.to_string(),
        what: what.to_string(),
    })
}

#[async_trait]
impl Store for ConsulStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        capabilities()
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> Result<KvPair> {
        self.inner.check_open()?;
        let key = normalize_key(key)?;
        check_value_size(&key, value, MAX_VALUE_SIZE, BACKEND)?;
        check_key_ttl(options.ttl)?;
        let full = self.inner.full(&key);
        let t = self.inner.http.timeout;
        kv_core::retry::timed("put", t, async move {
            let e = self
                .inner
                .write(&full, value, options.ttl, Cond::Any)
                .await?
                .ok_or_else(|| missing_result("put"))?;
            Ok(KvPair::new(key, value.to_vec(), e.modify_index))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<KvPair> {
        self.inner.check_open()?;
        let key = normalize_key(key)?;
        let full = self.inner.full(&key);
        match self.inner.read_entry(&full).await? {
            Some(e) => Ok(KvPair::new(key, e.value_bytes()?, e.modify_index)),
            None => Err(Error::not_found(key)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.check_open()?;
        let key = normalize_key(key)?;
        let full = self.inner.full(&key);
        let ops = [KvOp::new("get", &full), KvOp::new("delete", &full)];
        match self.inner.http.txn("delete", &ops).await? {
            TxnOutcome::Ok(_) => Ok(()),
            TxnOutcome::Rejected(errs) => {
                if errs.iter().all(|e| e.what.contains("doesn't exist")) {
                    Err(Error::not_found(key))
                } else {
                    Err(txn_error("delete", &key, errs))
                }
            }
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.check_open()?;
        let key = normalize_key(key)?;
        Ok(self
            .inner
            .read_entry(&self.inner.full(&key))
            .await?
            .is_some())
    }

    async fn watch(&self, key: &str) -> Result<kv_core::WatchStream> {
        self.inner.check_open()?;
        let key = normalize_key(key)?;
        Ok(watch::watch_key(self.inner.clone(), key))
    }

    async fn watch_tree(&self, prefix: &str) -> Result<kv_core::TreeWatchStream> {
        self.inner.check_open()?;
        let prefix = normalize_prefix(prefix)?;
        Ok(watch::watch_tree(self.inner.clone(), prefix))
    }

    async fn new_lock(&self, key: &str, options: LockOptions) -> Result<Lock> {
        self.inner.check_open()?;
        let key = normalize_key(key)?;
        lock::new_lock(self.inner.clone(), key, options).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.inner.check_open()?;
        let prefix = normalize_prefix(prefix)?;
        let raw = self.inner.raw_subtree(&prefix);
        let (entries, _) = self.inner.http.kv_list(&raw, None, self.inner.read).await?;
        self.inner.subtree_pairs(&prefix, &entries)
    }

    async fn delete_tree(&self, prefix: &str) -> Result<()> {
        self.inner.check_open()?;
        let prefix = normalize_prefix(prefix)?;
        let raw = self.inner.raw_subtree(&prefix);
        self.inner.http.kv_delete_prefix(&raw).await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair> {
        self.inner.check_open()?;
        let key = normalize_key(key)?;
        if let Some(p) = previous {
            check_previous(&key, p)?;
        }
        check_value_size(&key, value, MAX_VALUE_SIZE, BACKEND)?;
        check_key_ttl(options.ttl)?;
        let full = self.inner.full(&key);
        let cond = match previous {
            None => Cond::Absent,
            Some(p) => Cond::Version(p.version),
        };
        let t = self.inner.http.timeout;
        kv_core::retry::timed("atomic_put", t, async move {
            loop {
                if let Some(e) = self.inner.write(&full, value, options.ttl, cond).await? {
                    return Ok(KvPair::new(key, value.to_vec(), e.modify_index));
                }
                // Refused: say why (and retry in the rare case the state changed back).
                let cur = self.inner.get_entry(&full).await?;
                match (cond, cur) {
                    (Cond::Absent, Some(_)) => return Err(Error::KeyExists { key }),
                    (Cond::Version(_), None) => return Err(Error::not_found(key)),
                    (Cond::Version(v), Some(e)) if e.modify_index != v => {
                        return Err(Error::KeyModified {
                            key,
                            expected: v,
                            actual: e.modify_index,
                        })
                    }
                    _ => continue,
                }
            }
        })
        .await
    }

    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        self.inner.check_open()?;
        let key = normalize_key(key)?;
        check_previous(&key, previous)?;
        let full = self.inner.full(&key);
        let t = self.inner.http.timeout;
        kv_core::retry::timed("atomic_delete", t, async {
            loop {
                let ops = [
                    KvOp::new("check-index", &full).index(previous.version),
                    KvOp::new("delete", &full),
                ];
                match self.inner.http.txn("atomic_delete", &ops).await? {
                    TxnOutcome::Ok(_) => return Ok(()),
                    TxnOutcome::Rejected(errs) => {
                        if let Some(e) = errs.iter().find(|e| is_fatal_what(&e.what)) {
                            return Err(what_error("atomic_delete", &key, &e.what));
                        }
                    }
                }
                match self.inner.get_entry(&full).await? {
                    None => return Err(Error::not_found(key.clone())),
                    Some(e) if e.modify_index != previous.version => {
                        return Err(Error::KeyModified {
                            key: key.clone(),
                            expected: previous.version,
                            actual: e.modify_index,
                        })
                    }
                    Some(_) => continue,
                }
            }
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<TxnResult>> {
        self.inner.check_open()?;
        let txn = txn.prepare(&capabilities(), BACKEND)?;
        for op in &txn.ops {
            if let kv_core::TxnOp::Put { options, .. } = op {
                check_key_ttl(options.ttl)?;
            }
        }
        let t = self.inner.http.timeout;
        kv_core::retry::timed("txn", t, txn::run(&self.inner, txn)).await
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.shutdown.send_replace(true);
        let tasks: Vec<_> = std::mem::take(
            &mut *self
                .inner
                .lock_tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let t = self.inner.http.timeout;
        let _ = tokio::time::timeout(t, futures::future::join_all(tasks)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_options() {
        let c = ConsulConfig::from_url("consul://h1:8500,h2/app/x?token=t&timeout=3s").unwrap();
        assert_eq!(c.endpoints, vec!["h1:8500", "h2"]);
        assert_eq!(c.namespace, "/app/x");
        assert_eq!(c.token.as_deref(), Some("t"));
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert!(!c.tls);
        let e = ConsulConfig::from_url("consul://h/?bogus=1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(matches!(
            ConsulConfig::from_url("consul://u:p@h/"),
            Err(Error::Config { .. })
        ));
        assert!(matches!(
            ConsulConfig::from_url("consul:///x"),
            Err(Error::Config { .. })
        ));
        assert_eq!(normalize_endpoint("h", false).unwrap(), "http://h:8500");
        assert_eq!(normalize_endpoint("h:1", true).unwrap(), "https://h:1");
        assert!(normalize_endpoint("http://h:1", false).is_err());
        assert!(normalize_endpoint("h:x", false).is_err());
    }

    #[test]
    fn consistency_option() {
        let c = ConsulConfig::from_url("consul://h/app").unwrap();
        assert_eq!(c.consistency, Consistency::Linearizable);
        let c = ConsulConfig::from_url("consul://h/app?consistency=stale").unwrap();
        assert_eq!(c.consistency, Consistency::Stale);
        let c = ConsulConfig::from_url("consul://h/app?consistency=linearizable").unwrap();
        assert_eq!(c.consistency, Consistency::Linearizable);
        let c = ConsulConfig::new(["h"]).consistency(Consistency::Stale);
        assert_eq!(c.consistency, Consistency::Stale);
        let e = ConsulConfig::from_url("consul://h/?consistency=default").unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e}");
        assert!(e.to_string().contains("linearizable, stale"), "{e}");
    }

    #[test]
    fn ttl_limits() {
        assert!(matches!(
            check_key_ttl(Some(Duration::from_secs(19))),
            Err(Error::Unsupported { .. })
        ));
        assert!(check_key_ttl(Some(MIN_TTL)).is_ok());
        assert!(matches!(
            check_key_ttl(Some(MAX_TTL + Duration::from_secs(1))),
            Err(Error::Unsupported { .. })
        ));
    }

    #[tokio::test]
    async fn a_token_that_is_no_header_value_is_a_config_error() {
        let c = ConsulConfig::new(["127.0.0.1:1"]).token("a\nb");
        match ConsulStore::connect(c).await {
            Err(Error::Config { message }) => assert!(message.contains("ACL token"), "{message}"),
            r => panic!("{:?}", r.err()),
        }
    }

    #[cfg(not(feature = "tls"))]
    #[tokio::test]
    async fn tls_needs_the_feature() {
        let e = ConsulStore::from_url("consul://127.0.0.1:1/?ca=/x.pem")
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("`tls` feature"), "{e}");
    }

    mod fuzz {
        //! Property tests: `ConsulConfig::from_url` and the address rule `connect` applies
        //! before it dials, on garbage and on structured URLs with random options.

        use super::*;
        use kv_testkit::fuzz;
        use proptest::prelude::*;

        const OPTIONS: &[&str] = &["token", "timeout", "tls", "ca", "cert", "key"];

        fn config_error<T: std::fmt::Debug>(r: &Result<T>) -> bool {
            matches!(r, Err(Error::Config { message }) if !message.is_empty())
        }

        proptest! {
            #![proptest_config(fuzz::config())]

            /// Garbage never panics; every rejection is `Config`.
            #[test]
            fn garbage_is_a_config_error(url in prop_oneof![fuzz::url_garbage("consul://"), fuzz::url_garbage("")]) {
                let parsed = ConsulConfig::from_url(&url);
                match &parsed {
                    Ok(c) => {
                        for h in &c.endpoints {
                            let e = normalize_endpoint(h, c.tls);
                            prop_assert!(e.is_ok() || config_error(&e), "{:?}", e);
                        }
                    }
                    Err(_) => prop_assert!(config_error(&parsed), "{:?}: {:?}", url, parsed),
                }
            }

            /// Structured URLs: the config holds what the URL says; agent addresses pass
            /// exactly when they are host[:port] with a port of 1-65535.
            #[test]
            fn structured_urls(hosts in fuzz::hosts(), ns in fuzz::namespace(), opts in fuzz::options(OPTIONS)) {
                let url = format!("consul://{}{ns}{}", hosts.join(","), fuzz::query(&opts));
                let mut r = ConnectUrl::parse(&url).unwrap();
                let parsed = ConsulConfig::from_url(&url);
                let token = r.take("token");
                let timeout = r.take_duration("timeout");
                let tls = r.take_bool("tls");
                let bogus = opts.iter().any(|(k, _)| k == "bogus");
                if bogus || r.hosts.is_empty() || timeout.is_err() || tls.is_err() {
                    prop_assert!(config_error(&parsed), "{:?}: {:?}", url, parsed);
                    return Ok(());
                }
                let c = parsed.map_err(|e| TestCaseError::fail(format!("{url:?}: {e}")))?;
                prop_assert_eq!(&c.endpoints, &r.hosts);
                prop_assert_eq!(&c.namespace, &r.path);
                prop_assert_eq!(&c.token, &token.filter(|t| !t.is_empty()));
                prop_assert_eq!(c.timeout, timeout.unwrap().unwrap_or(DEFAULT_TIMEOUT));
                prop_assert_eq!(c.tls, tls.unwrap().unwrap_or(false));
                prop_assert_eq!(c.ca_file.clone(), r.take("ca").map(PathBuf::from));
                for h in &c.endpoints {
                    let got = normalize_endpoint(h, c.tls);
                    match kv_core::url::host_port(h, DEFAULT_PORT) {
                        Ok(hp) => {
                            let scheme = if c.tls { "https" } else { "http" };
                            prop_assert_eq!(got.ok(), Some(format!("{scheme}://{hp}")));
                        }
                        Err(_) => prop_assert!(config_error(&got), "{:?}: {:?}", h, got),
                    }
                }
            }
        }

        /// Regressions found by the properties: an address without a host, with port 0 or
        /// with two ports passed and failed only when dialled.
        #[test]
        fn agent_addresses_need_a_host_and_one_real_port() {
            for bad in [":8500", "h:0", "h:1:2", "::1"] {
                let r = normalize_endpoint(bad, false);
                assert!(config_error(&r), "{bad}: {r:?}");
            }
            assert_eq!(
                normalize_endpoint("[::1]", false).unwrap(),
                "http://[::1]:8500"
            );
        }
    }
}
