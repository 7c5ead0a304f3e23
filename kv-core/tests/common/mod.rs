//! A driver that records how many calls reach it, for the checking-layer tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kv_core::raw::{Checked, Driver, DriverInfo, Lifecycle};
use kv_core::{
    async_trait, Capabilities, Error, KvPair, Lock, LockOptions, Result, TreeWatchStream, Txn,
    TxnResult, WatchStream,
};

pub struct Recorder {
    info: DriverInfo,
    life: Lifecycle,
    pub calls: AtomicUsize,
    pub closes: AtomicUsize,
}

impl Recorder {
    fn hit(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Driver for Recorder {
    fn info(&self) -> &DriverInfo {
        &self.info
    }
    fn lifecycle(&self) -> &Lifecycle {
        &self.life
    }
    async fn put(&self, key: &str, value: &[u8], _: Option<Duration>) -> Result<KvPair> {
        self.hit();
        if key == "slow" {
            std::future::pending::<()>().await;
        }
        Ok(KvPair::new(key, value, 1))
    }
    async fn get(&self, _: &str) -> Result<Option<KvPair>> {
        self.hit();
        Ok(None)
    }
    async fn delete(&self, _: &str) -> Result<bool> {
        self.hit();
        Ok(false)
    }
    async fn list(&self, _: &str) -> Result<Vec<KvPair>> {
        self.hit();
        Ok(vec![])
    }
    async fn delete_tree(&self, _: &str) -> Result<()> {
        self.hit();
        Ok(())
    }
    async fn atomic_put(
        &self,
        k: &str,
        v: &[u8],
        _: Option<u64>,
        _: Option<Duration>,
    ) -> Result<KvPair> {
        self.hit();
        Ok(KvPair::new(k, v, 2))
    }
    async fn atomic_delete(&self, _: &str, _: u64) -> Result<()> {
        self.hit();
        Ok(())
    }
    async fn txn(&self, _: Txn) -> Result<Vec<TxnResult>> {
        self.hit();
        Ok(vec![])
    }
    async fn watch(&self, _: &str) -> Result<WatchStream> {
        self.hit();
        Err(Error::unsupported("test watch", "rec"))
    }
    async fn watch_tree(&self, _: &str) -> Result<TreeWatchStream> {
        self.hit();
        Err(Error::unsupported("test watch", "rec"))
    }
    async fn lock(&self, _: &str, _: LockOptions) -> Result<Lock> {
        self.hit();
        Err(Error::unsupported("test lock", "rec"))
    }
    async fn close(&self) -> Result<()> {
        self.closes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

pub fn store() -> Checked<Recorder> {
    Checked::new(Recorder {
        info: DriverInfo {
            backend: "rec",
            capabilities: Capabilities {
                watch: true,
                watch_tree: true,
                lock: true,
                ttl: true,
                txn: true,
                max_value_size: 8,
                max_txn_ops: 4,
                min_ttl: Duration::from_secs(1),
                max_ttl: Some(Duration::from_secs(60)),
                lock_min_ttl: Duration::from_secs(10),
                watch_every_change: true,
            },
            timeout: Duration::from_millis(200),
            reserved: &[".locks"],
        },
        life: Lifecycle::new(),
        calls: AtomicUsize::new(0),
        closes: AtomicUsize::new(0),
    })
}

pub fn calls(s: &Checked<Recorder>) -> usize {
    s.driver().calls.load(Ordering::SeqCst)
}
