//! The `Driver` impl: each call is one short critical section on the shared state.

use std::sync::Arc;
use std::time::Duration;

use kv_core::raw::{Connect, Driver, DriverInfo, HeldLocks, Lifecycle, Namespace};
use kv_core::{
    async_trait, Capabilities, Error, KvPair, Lock, LockOptions, Result, TreeWatchStream, Txn,
    TxnOp, TxnResult, WatchStream,
};
use tokio::time::Instant;

use crate::config::MemoryConfig;
use crate::state::{Scope, Shared};
use crate::{MAX_TXN_OPS, MAX_VALUE_SIZE};

pub(crate) const BACKEND: &str = "memory";

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

/// One handle to a memory store. Handles opened with the same name share the data, watches
/// and locks; each has its own namespace, lifecycle and held locks.
pub struct MemoryDriver {
    info: DriverInfo,
    pub(crate) life: Lifecycle,
    pub(crate) shared: Arc<Shared>,
    pub(crate) ns: Namespace,
    pub(crate) held: Arc<HeldLocks<(String, u64)>>,
    name: String,
}

impl std::fmt::Debug for MemoryDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDriver")
            .field("name", &self.name)
            .field("namespace", &self.ns.as_str())
            .field("closed", &self.life.is_closed())
            .finish()
    }
}

/// The deadline of a TTL (`None`: permanent, also for a TTL too long to represent).
pub(crate) fn deadline(ttl: Option<Duration>) -> Option<Instant> {
    ttl.and_then(|t| Instant::now().checked_add(t))
}

impl MemoryDriver {
    /// Opens a handle (no I/O: never fails except on an invalid namespace).
    pub fn open(config: MemoryConfig) -> Result<Self> {
        let ns = Namespace::new(&config.namespace)?;
        Ok(Self::build(config, ns))
    }

    pub(crate) fn private() -> Self {
        Self::build(MemoryConfig::default(), Namespace::default())
    }

    fn build(config: MemoryConfig, ns: Namespace) -> Self {
        MemoryDriver {
            info: DriverInfo {
                backend: BACKEND,
                capabilities: CAPABILITIES,
                timeout: config.timeout,
                reserved: &[],
            },
            life: Lifecycle::new(),
            shared: Shared::get(&config.name),
            ns,
            held: Arc::new(HeldLocks::new()),
            name: config.name,
        }
    }

    /// The store's name (`""` for a private store).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This handle's namespace (`""` for none).
    pub fn namespace(&self) -> &str {
        self.ns.as_str()
    }

    pub(crate) fn stored(&self, key: &str) -> String {
        self.ns.join(key)
    }
}

#[async_trait]
impl Driver for MemoryDriver {
    fn info(&self) -> &DriverInfo {
        &self.info
    }

    fn lifecycle(&self) -> &Lifecycle {
        &self.life
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<KvPair> {
        let mut st = self.shared.lock();
        let rev = st.next_rev();
        st.write(
            &self.stored(key),
            Some((value.to_vec(), deadline(ttl))),
            rev,
        );
        Ok(KvPair::new(key, value, rev))
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        Ok(self.shared.lock().pair(&self.ns, &self.stored(key)))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let mut st = self.shared.lock();
        let sk = self.stored(key);
        if st.version(&sk).is_none() {
            return Ok(false);
        }
        let rev = st.next_rev();
        Ok(st.write(&sk, None, rev))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        Ok(self
            .shared
            .lock()
            .list(&self.ns, &self.ns.subtree_start(prefix)))
    }

    async fn delete_tree(&self, prefix: &str) -> Result<()> {
        let mut st = self.shared.lock();
        let keys = st.keys(&self.ns.subtree_start(prefix));
        if !keys.is_empty() {
            let rev = st.next_rev();
            for k in keys {
                st.write(&k, None, rev);
            }
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
        let mut st = self.shared.lock();
        let sk = self.stored(key);
        check(key, previous, st.version(&sk))?;
        let rev = st.next_rev();
        st.write(&sk, Some((value.to_vec(), deadline(ttl))), rev);
        Ok(KvPair::new(key, value, rev))
    }

    async fn atomic_delete(&self, key: &str, previous: u64) -> Result<()> {
        let mut st = self.shared.lock();
        let sk = self.stored(key);
        check(key, Some(previous), st.version(&sk))?;
        let rev = st.next_rev();
        st.write(&sk, None, rev);
        Ok(())
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<TxnResult>> {
        let mut st = self.shared.lock();
        for (i, c) in txn.compares.iter().enumerate() {
            c.evaluate(i, st.version(&self.stored(c.key())))?;
        }
        let writes = txn.ops.iter().any(|o| !matches!(o, TxnOp::Get { .. }));
        let rev = if writes { st.next_rev() } else { st.rev };
        let mut out = Vec::with_capacity(txn.ops.len());
        for op in txn.ops {
            let sk = self.stored(op.key());
            out.push(match op {
                TxnOp::Get { .. } => TxnResult::Get(st.pair(&self.ns, &sk)),
                TxnOp::Put {
                    key,
                    value,
                    options,
                } => {
                    st.write(&sk, Some((value.clone(), deadline(options.ttl))), rev);
                    TxnResult::Put(KvPair::new(key, value, rev))
                }
                TxnOp::Delete { .. } => {
                    st.write(&sk, None, rev);
                    TxnResult::Delete
                }
            });
        }
        Ok(out)
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        let feed = crate::watch::MemFeed::new(self, Scope::Key(self.stored(key)));
        kv_core::raw::watch_key(BACKEND, self.life.clone(), key.to_string(), feed).await
    }

    async fn watch_tree(&self, prefix: &str) -> Result<TreeWatchStream> {
        let feed = crate::watch::MemFeed::new(self, Scope::Tree(self.ns.subtree_start(prefix)));
        kv_core::raw::watch_tree(BACKEND, self.life.clone(), prefix.to_string(), feed).await
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<Lock> {
        crate::lock::acquire(self, key, options).await
    }

    async fn close(&self) -> Result<()> {
        for (key, id) in self.held.drain() {
            crate::lock::release(&self.shared, &key, id, Some("the store was closed"));
        }
        Ok(())
    }
}

/// The compare-and-swap rule: `None` creates only if absent, `Some(v)` needs version `v`.
fn check(key: &str, previous: Option<u64>, current: Option<u64>) -> Result<()> {
    match (previous, current) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Error::KeyExists { key: key.into() }),
        (Some(_), None) => Err(Error::not_found(key)),
        (Some(p), Some(c)) if p == c => Ok(()),
        (Some(p), Some(c)) => Err(Error::KeyModified {
            key: key.into(),
            expected: p,
            actual: c,
        }),
    }
}

#[async_trait]
impl Connect for MemoryDriver {
    type Config = MemoryConfig;

    fn parse_url(url: &str) -> Result<MemoryConfig> {
        MemoryConfig::from_url(url)
    }

    async fn connect(config: MemoryConfig) -> Result<Self> {
        Self::open(config)
    }
}
