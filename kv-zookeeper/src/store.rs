//! [`ZkDriver`]: the [`Driver`] implementation, on keys already checked by kv-core's layer.

use std::sync::Arc;
use std::time::Duration;

use kv_core::raw::{Connect, Driver, DriverInfo, Lifecycle};
use kv_core::{
    async_trait, Capabilities, Error, KvPair, Lock, LockOptions, Result, TreeWatchStream, Txn,
    TxnResult, WatchStream,
};
use zookeeper_client::Client;

use crate::inner::Inner;
use crate::node::after_barrier;
use crate::{connect, lock, tree, txn, watch, ZkConfig};
use crate::{BACKEND, LOCKS_DIR, MAX_TXN_OPS, MAX_VALUE_SIZE, MIN_TTL};

/// The ZooKeeper driver; use it as [`ZkStore`](crate::ZkStore) (wrapped in kv-core's checking
/// layer), whose `Deref` reaches these methods.
pub struct ZkDriver {
    inner: Arc<Inner>,
    info: DriverInfo,
}

impl std::fmt::Debug for ZkDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkStore")
            .field("config", &self.inner.cfg)
            .finish()
    }
}

/// What ZooKeeper supports.
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
        max_ttl: None,
        lock_min_ttl: Duration::ZERO,
    }
}

impl ZkDriver {
    fn new(inner: Arc<Inner>) -> Self {
        // At the server root, ZooKeeper's own `/zookeeper` is no key either.
        let reserved: &'static [&'static str] = if inner.ns.is_empty() {
            &[LOCKS_DIR, "zookeeper"]
        } else {
            &[LOCKS_DIR]
        };
        let info = DriverInfo {
            backend: BACKEND,
            capabilities: capabilities(),
            timeout: inner.cfg.timeout,
            reserved,
        };
        ZkDriver { inner, info }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ZkConfig {
        &self.inner.cfg
    }

    /// The normalized namespace (`""` for the server root).
    pub fn namespace(&self) -> &str {
        self.inner.ns.as_str()
    }

    /// The underlying zookeeper-client session (for tools and tests; it changes after a
    /// session expiry). `Err(Closed)` after close.
    pub fn client(&self) -> Result<Client> {
        Ok((*self.inner.conn()?.client).clone())
    }
}

#[async_trait]
impl Driver for ZkDriver {
    fn info(&self) -> &DriverInfo {
        &self.info
    }

    fn lifecycle(&self) -> &Lifecycle {
        &self.inner.life
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<KvPair> {
        self.inner.put(key, value, ttl).await
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        let found = self.inner.get_key(key).await?;
        Ok(found.map(|(v, stat)| KvPair::new(key, v, stat.mzxid as u64)))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete_key(key, None).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.inner.get_key(key).await?.is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        let i = &self.inner;
        i.read_retry(prefix, |c| async move {
            let root = i.prefix_path(prefix);
            after_barrier(&c, &root, i.read_barrier(), || tree::list(i, &c, prefix))
                .await
                .map(|(pairs, _)| pairs)
        })
        .await
    }

    async fn delete_tree(&self, prefix: &str) -> Result<()> {
        tree::delete_tree(&self.inner, prefix).await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<KvPair> {
        self.inner.atomic_put(key, value, previous, ttl).await
    }

    async fn atomic_delete(&self, key: &str, previous: u64) -> Result<()> {
        match self.inner.delete_key(key, Some(previous)).await? {
            true => Ok(()),
            false => Err(Error::not_found(key)),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<TxnResult>> {
        txn::run(&self.inner, &txn).await
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        watch::key(self.inner.clone(), key.to_string()).await
    }

    async fn watch_tree(&self, prefix: &str) -> Result<TreeWatchStream> {
        watch::subtree(self.inner.clone(), prefix.to_string()).await
    }

    async fn watch_events(
        &self,
        prefix: &str,
        from: Option<kv_core::Cursor>,
    ) -> Result<kv_core::EventStream> {
        watch::events(self.inner.clone(), prefix.to_string(), from).await
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<Lock> {
        lock::new_lock(self.inner.clone(), key.to_string(), options).await
    }

    async fn close(&self) -> Result<()> {
        lock::release_all(&self.inner).await;
        self.inner.conn.send_replace(None);
        Ok(())
    }
}

#[async_trait]
impl Connect for ZkDriver {
    type Config = ZkConfig;

    fn parse_url(url: &str) -> Result<ZkConfig> {
        ZkConfig::from_url(url)
    }

    async fn connect(config: ZkConfig) -> Result<Self> {
        Ok(ZkDriver::new(connect::connect(config).await?))
    }
}
