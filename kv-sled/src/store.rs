//! The sled driver: kv's calls on checked, normalized keys, mapped onto the shared database.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv_core::raw::{Driver, DriverInfo, HeldLocks, Lifecycle, Namespace};
use kv_core::{
    async_trait, Error, KvPair, Lock, LockOptions, Result, TreeWatchStream, Txn, TxnOp, TxnResult,
    WatchStream,
};

use crate::config::SledConfig;
use crate::db::{Action, Shared};
use crate::error::map_err;
use crate::expiry::expires_at;
use crate::lock::Held;
use crate::record::{now_ms, Record};

/// The sled [`Driver`]: one handle on a database of this process. Use it as
/// [`SledStore`](crate::SledStore).
pub struct SledDriver {
    pub(crate) config: SledConfig,
    pub(crate) info: DriverInfo,
    pub(crate) life: Lifecycle,
    /// Shared with every watch of this handle.
    pub(crate) namespace: Arc<Namespace>,
    /// The database while this handle is open (`None` after `close`).
    pub(crate) shared: Mutex<Option<Arc<Shared>>>,
    /// Locks taken through this handle, released by `close`.
    pub(crate) held: Arc<HeldLocks<Arc<Held>>>,
}

impl std::fmt::Debug for SledDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.config.path)
            .field("namespace", &self.namespace.as_str())
            .field("flush", &self.config.flush)
            .finish()
    }
}

impl SledDriver {
    /// The database path, as configured.
    pub fn path(&self) -> &std::path::Path {
        &self.config.path
    }

    /// The store's namespace (normalized; `""` for none).
    pub fn namespace(&self) -> &str {
        self.namespace.as_str()
    }

    pub(crate) fn namespace_map(&self) -> &Arc<Namespace> {
        &self.namespace
    }

    pub(crate) fn life(&self) -> &Lifecycle {
        &self.life
    }

    pub(crate) fn shared(&self) -> Result<Arc<Shared>> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::Closed)
    }

    /// The stored key of a normalized key.
    pub(crate) fn skey(&self, key: &str) -> Vec<u8> {
        self.namespace.join(key).into_bytes()
    }

    /// The stored-key start of the subtree of a normalized prefix.
    pub(crate) fn subtree(&self, prefix: &str) -> Vec<u8> {
        self.namespace.subtree_start(prefix).into_bytes()
    }

    /// Waits for stable storage if the store flushes every write.
    pub(crate) async fn sync(&self, shared: &Shared) -> Result<()> {
        if self.config.flush {
            shared.flush().await?;
        }
        Ok(())
    }

    async fn write_one(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        previous: Option<Option<u64>>,
    ) -> Result<KvPair> {
        let shared = self.shared()?;
        let exp = expires_at(ttl);
        let rec = shared
            .write(&self.skey(key), |live| {
                match (previous, live) {
                    (Some(None), Some(_)) => return Err(Error::KeyExists { key: key.into() }),
                    (Some(Some(_)), None) => return Err(Error::not_found(key)),
                    (Some(Some(p)), Some(r)) if r.version != p => {
                        return Err(Error::KeyModified {
                            key: key.into(),
                            expected: p,
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
            .ok_or_else(|| Error::invalid_argument("internal: the write wrote nothing"))?;
        self.sync(&shared).await?;
        Ok(KvPair::new(key, rec.value, rec.version))
    }
}

#[async_trait]
impl Driver for SledDriver {
    fn info(&self) -> &DriverInfo {
        &self.info
    }

    fn lifecycle(&self) -> &Lifecycle {
        &self.life
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<KvPair> {
        self.write_one(key, value, ttl, None).await
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        let rec = self.shared()?.read_live(&self.skey(key))?;
        Ok(rec.map(|r| KvPair::new(key, r.value, r.version)))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let shared = self.shared()?;
        let done = shared.write(&self.skey(key), |live| {
            Ok(if live.is_some() {
                Action::Delete
            } else {
                Action::Skip
            })
        })?;
        if done.is_some() {
            self.sync(&shared).await?;
        }
        Ok(done.is_some())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.shared()?.read_live(&self.skey(key))?.is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        let shared = self.shared()?;
        let now = now_ms();
        let mut out = Vec::new();
        for item in shared.data.scan_prefix(self.subtree(prefix)) {
            let (k, v) = item.map_err(|e| map_err("list", e))?;
            let r = Record::decode(&v)?;
            if !r.is_live(now) {
                continue;
            }
            let key = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| self.namespace.user_key(s));
            if let Some(key) = key {
                out.push(KvPair::new(key, r.value, r.version));
            }
        }
        Ok(out)
    }

    async fn delete_tree(&self, prefix: &str) -> Result<()> {
        let shared = self.shared()?;
        let keys: Vec<sled::IVec> = shared
            .data
            .scan_prefix(self.subtree(prefix))
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
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<KvPair> {
        self.write_one(key, value, ttl, Some(previous)).await
    }

    async fn atomic_delete(&self, key: &str, previous: u64) -> Result<()> {
        let shared = self.shared()?;
        shared.write(&self.skey(key), |live| match live {
            None => Err(Error::not_found(key)),
            Some(r) if r.version != previous => Err(Error::KeyModified {
                key: key.into(),
                expected: previous,
                actual: r.version,
            }),
            Some(_) => Ok(Action::Delete),
        })?;
        self.sync(&shared).await
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<TxnResult>> {
        let shared = self.shared()?;
        let results = crate::txn::run(self, &shared, &txn)?;
        if txn.ops.iter().any(|op| !matches!(op, TxnOp::Get { .. })) {
            self.sync(&shared).await?;
        }
        Ok(results)
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        crate::watch::key(self, key).await
    }

    async fn watch_tree(&self, prefix: &str) -> Result<TreeWatchStream> {
        crate::watch::tree(self, prefix).await
    }

    async fn watch_events(
        &self,
        prefix: &str,
        from: Option<kv_core::Cursor>,
    ) -> Result<kv_core::EventStream> {
        crate::watch::events(self, prefix, from).await
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<Lock> {
        crate::lock::acquire(self, key, options).await
    }

    async fn close(&self) -> Result<()> {
        crate::connect::close(self).await
    }
}
