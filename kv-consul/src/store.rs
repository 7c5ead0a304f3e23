//! The [`Driver`] implementation: each call mapped onto Consul's endpoints.

use std::sync::Arc;
use std::time::Duration;

use kv_core::raw::{Driver, DriverInfo, HeldLocks, Lifecycle, Namespace};
use kv_core::{
    async_trait, Capabilities, Consistency, Error, KvPair, Lock, LockOptions, Result,
    TreeWatchStream, Txn, TxnResult, WatchStream,
};

use crate::api::{KvOp, TxnOutcome};
use crate::error::{is_fatal_what, missing_result, txn_error, what_error};
use crate::http::Http;
use crate::pool::Pool;
use crate::write::Cond;
use crate::{lock, txn, watch};
use crate::{BACKEND, MAX_TTL, MAX_TXN_OPS, MAX_VALUE_SIZE, MIN_LOCK_TTL, MIN_TTL};

/// What Consul supports, with its TTL limits (the checking layer enforces them).
pub(crate) fn capabilities() -> Capabilities {
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
        max_ttl: Some(MAX_TTL),
        lock_min_ttl: MIN_LOCK_TTL,
    }
}

/// The Consul driver; applications use it as [`ConsulStore`](crate::ConsulStore). Clones are
/// cheap handles on the same client and state.
#[derive(Clone)]
pub struct ConsulDriver {
    pub(crate) inner: Arc<Inner>,
}

/// The state shared by the store, its watches and its lock holders.
pub(crate) struct Inner {
    pub http: Http,
    /// The blocking queries and reads of every watch (`watch_pool`).
    pub pool: Pool,
    pub ns: Namespace,
    /// Mode of user reads (`get`, `exists`, `list`, watches, read-only `txn`).
    pub read: Consistency,
    pub life: Lifecycle,
    pub info: DriverInfo,
    /// The holder tasks of held locks; `close` waits for them (each destroys its session).
    pub locks: HeldLocks<tokio::task::JoinHandle<()>>,
}

impl ConsulDriver {
    /// The namespace every key lives under (normalized, may be empty).
    pub fn namespace(&self) -> &str {
        self.inner.ns.as_str()
    }

    /// The local TCP ports of every connection the watch pool opened so far (closed ones
    /// included), to count its connections in `/proc/net/tcp` (tests and the benchmark).
    #[doc(hidden)]
    pub fn watch_pool_ports(&self) -> Vec<u16> {
        self.inner.pool.http.dialed_ports()
    }
}

impl std::fmt::Debug for ConsulDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulStore")
            .field("agents", &self.inner.http.endpoints())
            .field("namespace", &self.inner.ns.as_str())
            .field("consistency", &self.inner.read)
            .field("timeout", &self.inner.info.timeout)
            .field("watch_pool", &self.inner.pool.size())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Driver for ConsulDriver {
    fn info(&self) -> &DriverInfo {
        &self.inner.info
    }

    fn lifecycle(&self) -> &Lifecycle {
        &self.inner.life
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<KvPair> {
        let e = self
            .inner
            .write(&self.inner.full(key), value, ttl, Cond::Any)
            .await?
            .ok_or_else(|| missing_result("put"))?;
        Ok(KvPair::new(key, value.to_vec(), e.modify_index))
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        match self.inner.read_entry(&self.inner.full(key)).await? {
            Some(e) => Ok(Some(KvPair::new(key, e.value_bytes()?, e.modify_index))),
            None => Ok(None),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        // `[get, delete]`: the get fails on a missing key (a plain DELETE always says true).
        let full = self.inner.full(key);
        let ops = [KvOp::new("get", &full), KvOp::new("delete", &full)];
        match self.inner.http.txn("delete", &ops).await? {
            TxnOutcome::Ok(_) => Ok(true),
            TxnOutcome::Rejected(errs) if errs.iter().all(|e| e.what.contains("doesn't exist")) => {
                Ok(false)
            }
            TxnOutcome::Rejected(errs) => Err(txn_error("delete", key, errs)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self
            .inner
            .read_entry(&self.inner.full(key))
            .await?
            .is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        let raw = self.inner.ns.subtree_start(prefix);
        let (entries, _) = self.inner.http.kv_list(&raw, None, self.inner.read).await?;
        self.inner.subtree_pairs(prefix, &entries)
    }

    async fn delete_tree(&self, prefix: &str) -> Result<()> {
        let raw = self.inner.ns.subtree_start(prefix);
        self.inner.http.kv_delete_prefix(&raw).await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<KvPair> {
        let full = self.inner.full(key);
        let cond = match previous {
            None => Cond::Absent,
            Some(v) => Cond::Version(v),
        };
        loop {
            if let Some(e) = self.inner.write(&full, value, ttl, cond).await? {
                return Ok(KvPair::new(key, value.to_vec(), e.modify_index));
            }
            // Refused: say why (and retry in the rare case the state changed back).
            let key = key.to_string();
            match (cond, self.inner.get_entry(&full).await?) {
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
    }

    async fn atomic_delete(&self, key: &str, previous: u64) -> Result<()> {
        let full = self.inner.full(key);
        loop {
            let ops = [
                KvOp::new("check-index", &full).index(previous),
                KvOp::new("delete", &full),
            ];
            match self.inner.http.txn("atomic_delete", &ops).await? {
                TxnOutcome::Ok(_) => return Ok(()),
                TxnOutcome::Rejected(errs) => {
                    if let Some(e) = errs.iter().find(|e| is_fatal_what(&e.what)) {
                        return Err(what_error("atomic_delete", key, &e.what));
                    }
                }
            }
            match self.inner.get_entry(&full).await? {
                None => return Err(Error::not_found(key)),
                Some(e) if e.modify_index != previous => {
                    return Err(Error::KeyModified {
                        key: key.to_string(),
                        expected: previous,
                        actual: e.modify_index,
                    })
                }
                Some(_) => continue,
            }
        }
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<TxnResult>> {
        txn::run(&self.inner, txn).await
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        let feed = watch::Pooled::key(self.inner.clone(), key);
        kv_core::raw::watch_key(BACKEND, self.inner.life.clone(), key.to_string(), feed).await
    }

    async fn watch_tree(&self, prefix: &str) -> Result<TreeWatchStream> {
        let feed = watch::Pooled::tree(self.inner.clone(), prefix);
        kv_core::raw::watch_tree(BACKEND, self.inner.life.clone(), prefix.to_string(), feed).await
    }

    async fn watch_events(
        &self,
        prefix: &str,
        from: Option<kv_core::Cursor>,
    ) -> Result<kv_core::EventStream> {
        let feed = watch::Pooled::tree(self.inner.clone(), prefix);
        let life = self.inner.life.clone();
        kv_core::raw::watch_events(BACKEND, life, prefix.to_string(), from, feed).await
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<Lock> {
        lock::new_lock(self.inner.clone(), key.to_string(), options).await
    }

    async fn close(&self) -> Result<()> {
        // Each holder task sees the closed lifecycle, fires its lost signal and destroys its
        // session; wait for them (the layer bounds this with the timeout).
        let tasks = self.inner.locks.drain();
        if !tasks.is_empty() {
            tracing::debug!(
                backend = BACKEND,
                locks = tasks.len(),
                "releasing held locks"
            );
        }
        futures::future::join_all(tasks).await;
        Ok(())
    }
}
