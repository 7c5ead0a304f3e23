//! The `Driver` impl: each call is one short critical section on the shared state.

use std::sync::Arc;
use std::time::Duration;

use kv_core::raw::{Connect, Driver, DriverInfo, HeldLocks, Lifecycle, Namespace};
use kv_core::retry::DEFAULT_TIMEOUT;
use kv_core::{async_trait, Capabilities, Error, KvPair, Lock, LockOptions, Result};
use kv_core::{Cursor, EventStream, TreeWatchStream, Txn, TxnOp, TxnResult, WatchStream};

use crate::config::MemoryConfig;
use crate::state::Shared;
use crate::watch::MemFeed;

pub(crate) const BACKEND: &str = "memory";

const CAPABILITIES: Capabilities = Capabilities {
    watch: true,
    watch_tree: true,
    watch_every_change: true,
    lock: true,
    ttl: true,
    txn: true,
    max_value_size: crate::MAX_VALUE_SIZE,
    max_txn_ops: crate::MAX_TXN_OPS,
    min_ttl: Duration::from_millis(1),
    max_ttl: None,
    lock_min_ttl: Duration::ZERO,
};

/// One handle to a memory store. Handles opened with the same name share the data, watches
/// and locks; each has its own namespace, lifecycle and held locks.
#[derive(Debug)]
pub struct MemoryDriver {
    info: DriverInfo,
    pub(crate) life: Lifecycle,
    pub(crate) shared: Arc<Shared>,
    /// Shared with every watch of this handle.
    pub(crate) ns: Arc<Namespace>,
    pub(crate) held: Arc<HeldLocks<(String, u64)>>,
}

impl MemoryDriver {
    /// Opens a handle (no I/O: fails only on an invalid namespace).
    pub fn open(config: MemoryConfig) -> Result<Self> {
        let ns = Namespace::new(&config.namespace)?;
        Ok(MemoryDriver {
            info: DriverInfo {
                backend: BACKEND,
                capabilities: CAPABILITIES,
                timeout: config.timeout.unwrap_or(DEFAULT_TIMEOUT),
                reserved: &[],
            },
            life: Lifecycle::new(),
            shared: Shared::get(&config.name),
            ns: Arc::new(ns),
            held: Arc::new(HeldLocks::new()),
        })
    }

    /// The store's name (`""` for a private store).
    pub fn name(&self) -> &str {
        &self.shared.name
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
        let rev = self.shared.with(|st| st.set(&self.stored(key), value, ttl));
        Ok(KvPair::new(key, value, rev))
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        Ok(self.shared.with(|st| st.pair(&self.ns, &self.stored(key))))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.shared.with(|st| st.delete(&self.stored(key))))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        let start = self.ns.subtree_start(prefix);
        Ok(self.shared.with(|st| st.list(&self.ns, &start)))
    }

    async fn delete_tree(&self, prefix: &str) -> Result<()> {
        let start = self.ns.subtree_start(prefix);
        self.shared.with(|st| {
            let keys = st.keys(&start);
            if !keys.is_empty() {
                let rev = st.next_rev();
                for k in keys {
                    st.write(&k, None, rev);
                }
            }
        });
        Ok(())
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<KvPair> {
        let sk = self.stored(key);
        let rev = self.shared.with(|st| {
            check(key, previous, st.version(&sk))?;
            Ok::<_, Error>(st.set(&sk, value, ttl))
        })?;
        Ok(KvPair::new(key, value, rev))
    }

    async fn atomic_delete(&self, key: &str, previous: u64) -> Result<()> {
        let sk = self.stored(key);
        self.shared.with(|st| {
            check(key, Some(previous), st.version(&sk))?;
            st.delete(&sk);
            Ok(())
        })
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<TxnResult>> {
        self.shared.with(|st| {
            for (i, c) in txn.compares.iter().enumerate() {
                c.evaluate(i, st.version(&self.stored(c.key())))?;
            }
            let rev = st.next_rev(); // shared by every write of the transaction
            let ops = txn.ops.into_iter().map(|op| {
                let sk = self.stored(op.key());
                match op {
                    TxnOp::Get { .. } => TxnResult::Get(st.pair(&self.ns, &sk)),
                    TxnOp::Put {
                        key,
                        value,
                        options,
                    } => {
                        st.write(&sk, Some((value.clone(), options.ttl)), rev);
                        TxnResult::Put(KvPair::new(key, value, rev))
                    }
                    TxnOp::Delete { .. } => {
                        if st.version(&sk).is_some() {
                            st.write(&sk, None, rev);
                        }
                        TxnResult::Delete
                    }
                }
            });
            Ok(ops.collect())
        })
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        let feed = MemFeed::new(self, self.stored(key), false);
        kv_core::raw::watch_key(BACKEND, self.life.clone(), key.to_string(), feed).await
    }

    async fn watch_tree(&self, prefix: &str) -> Result<TreeWatchStream> {
        let feed = MemFeed::new(self, self.ns.subtree_start(prefix), true);
        kv_core::raw::watch_tree(BACKEND, self.life.clone(), prefix.to_string(), feed).await
    }

    async fn watch_events(&self, prefix: &str, from: Option<Cursor>) -> Result<EventStream> {
        let feed = MemFeed::new(self, self.ns.subtree_start(prefix), true);
        kv_core::raw::watch_events(BACKEND, self.life.clone(), prefix.to_string(), from, feed).await
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
        (Some(p), Some(c)) if p == c => Ok(()),
        (None, Some(_)) => Err(Error::KeyExists { key: key.into() }),
        (Some(_), None) => Err(Error::not_found(key)),
        (Some(expected), Some(actual)) => Err(Error::KeyModified {
            key: key.into(),
            expected,
            actual,
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
