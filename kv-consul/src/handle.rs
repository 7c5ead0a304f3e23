//! [`ConsulStore`]: the checked driver, plus the one lock rule kv-core cannot express yet.
//!
//! Consul's shortest lock TTL (10 s, its minimum session TTL) is below its shortest key TTL
//! (20 s), but [`Capabilities::shortest_lock_ttl`](kv_core::Capabilities::shortest_lock_ttl)
//! is never below `min_ttl`, so kv-core's layer would refuse the default 15 s lock. Lock TTLs
//! from 10 s to 20 s therefore take a path here with the layer's checks for `new_lock`; every
//! other call goes through the layer unchanged. Delete this file (and make `ConsulStore` a
//! `Checked<ConsulDriver>` alias) once kv-core lets `lock_min_ttl` go below `min_ttl`.

use std::sync::Arc;

use kv_core::key::check_value_size;
use kv_core::raw::{Checked, Connect, Driver, OpenFuture};
use kv_core::{
    async_trait, normalize_key, Capabilities, Error, KvPair, Lock, LockOptions, PutOptions, Result,
    Store, TreeWatchStream, Txn, TxnResult, WatchStream,
};
use tracing::Instrument;

use crate::{ConsulConfig, ConsulDriver, BACKEND, MAX_TTL, MAX_VALUE_SIZE, MIN_LOCK_TTL};

/// A [`Store`] on Consul: [`ConsulDriver`] inside kv-core's checking layer
/// ([`Checked`]). Clones are cheap handles on the same client and state (closing one closes
/// all); driver methods (`store.namespace()`) are reached through `Deref`.
#[derive(Clone, Debug)]
pub struct ConsulStore(Arc<Checked<ConsulDriver>>);

impl ConsulStore {
    /// Connects (checks that an agent answers, has a leader and accepts the token).
    pub async fn connect(config: ConsulConfig) -> Result<Self> {
        Ok(ConsulStore(Arc::new(Checked::connect(config).await?)))
    }

    /// Parses a `consul://` URL (see the crate docs) and connects.
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::connect(ConsulDriver::parse_url(url)?).await
    }
}

/// The `open` of [`DRIVER`](crate::DRIVER).
pub(crate) fn open(url: &str) -> OpenFuture<'_> {
    Box::pin(async move { Ok(Arc::new(ConsulStore::from_url(url).await?) as Arc<dyn Store>) })
}

impl std::ops::Deref for ConsulStore {
    type Target = Checked<ConsulDriver>;

    fn deref(&self) -> &Checked<ConsulDriver> {
        &self.0
    }
}

impl ConsulStore {
    /// `new_lock` for TTLs below the key minimum, which the layer cannot check, with the
    /// layer's checks in the layer's order: closed, key, value size, TTL (10 s to 48 h).
    async fn short_lock(&self, key: &str, options: LockOptions) -> Result<Lock> {
        let driver = self.0.driver();
        driver.lifecycle().check()?;
        let key = normalize_key(key)?;
        check_value_size(&key, &options.value, MAX_VALUE_SIZE, BACKEND)?;
        check_lock_ttl(options.ttl)?;
        let span = tracing::debug_span!("kv", backend = BACKEND, op = "new_lock", key = %key);
        async move {
            let start = std::time::Instant::now();
            let r = driver.lock(&key, options).await;
            tracing::debug!(ok = r.is_ok(), elapsed = ?start.elapsed(), "kv call");
            r
        }
        .instrument(span)
        .await
    }
}

/// Consul's lock TTL range, [`MIN_LOCK_TTL`] to [`MAX_TTL`].
pub(crate) fn check_lock_ttl(ttl: std::time::Duration) -> Result<()> {
    if ttl < MIN_LOCK_TTL || ttl > MAX_TTL {
        return Err(Error::unsupported(
            format!("lock TTL of {ttl:?} (this backend honours {MIN_LOCK_TTL:?} to {MAX_TTL:?})"),
            BACKEND,
        ));
    }
    Ok(())
}

#[async_trait]
impl Store for ConsulStore {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }

    fn capabilities(&self) -> Capabilities {
        Store::capabilities(&*self.0)
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> Result<KvPair> {
        self.0.put(key, value, options).await
    }

    async fn get(&self, key: &str) -> Result<KvPair> {
        self.0.get(key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.0.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.0.exists(key).await
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        self.0.watch(key).await
    }

    async fn watch_tree(&self, prefix: &str) -> Result<TreeWatchStream> {
        self.0.watch_tree(prefix).await
    }

    async fn new_lock(&self, key: &str, options: LockOptions) -> Result<Lock> {
        let min_ttl = Store::capabilities(&*self.0).min_ttl;
        if options.ttl >= min_ttl {
            return self.0.new_lock(key, options).await;
        }
        self.short_lock(key, options).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.0.list(prefix).await
    }

    async fn delete_tree(&self, prefix: &str) -> Result<()> {
        self.0.delete_tree(prefix).await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair> {
        self.0.atomic_put(key, value, previous, options).await
    }

    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        self.0.atomic_delete(key, previous).await
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<TxnResult>> {
        self.0.txn(txn).await
    }

    async fn close(&self) -> Result<()> {
        self.0.close().await
    }
}
