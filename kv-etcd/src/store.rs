//! The [`Driver`] implementation: kv's calls on checked, namespaced input, as etcd requests.
//! The checking layer has validated keys, values, TTLs and `previous`, and bounds each call
//! by the timeout.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare as EtcdCompare, CompareOp, DeleteOptions, GetOptions, PutOptions as EtcdPutOptions,
    Txn as EtcdTxn, TxnOp as EtcdTxnOp,
};
use kv_core::raw::{Driver, DriverInfo, Lifecycle};
use kv_core::{
    Error, KvPair, Lock, LockOptions, Result, TreeWatchStream, Txn, TxnResult, WatchStream,
};

use crate::client::{header_rev, rev_of, version_of};
use crate::connect::EtcdDriver;
use crate::error::map_err;
use crate::txn::failure_versions;
use crate::{lock, txn, watch};

#[async_trait]
impl Driver for EtcdDriver {
    fn info(&self) -> &DriverInfo {
        &self.inner.info
    }

    fn lifecycle(&self) -> &Lifecycle {
        &self.inner.life
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<KvPair> {
        let inner = &*self.inner;
        let lease = match ttl {
            Some(ttl) => Some(inner.grant(ttl, key).await?),
            None => None,
        };
        let opts = lease.map(|id| EtcdPutOptions::new().with_lease(id));
        let mut kv = inner.kv.clone();
        let resp = match kv.put(inner.full(key), value, opts).await {
            Ok(r) => r,
            Err(e) => {
                inner.revoke_in_background(lease);
                let mut ctx = inner.ctx("put", key);
                ctx.size = Some(value.len());
                return Err(map_err(e, &ctx));
            }
        };
        Ok(KvPair {
            key: key.to_string(),
            value: value.to_vec(),
            version: version_of(header_rev(resp.header())),
        })
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        Ok(self.inner.read_key(key, true).await?.0)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let inner = &*self.inner;
        let mut kv = inner.kv.clone();
        let resp = kv
            .delete(inner.full(key), None)
            .await
            .map_err(|e| map_err(e, &inner.ctx("delete", key)))?;
        Ok(resp.deleted() > 0)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let inner = &*self.inner;
        let opts = inner.read_opts(GetOptions::new().with_count_only());
        let resp = inner
            .kv_get("exists", key, inner.full(key).into_bytes(), Some(opts))
            .await?;
        Ok(resp.count() > 0)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        Ok(self.inner.read_tree(prefix).await?.0)
    }

    async fn delete_tree(&self, prefix: &str) -> Result<()> {
        let inner = &*self.inner;
        let (start, end) = inner.subtree(prefix);
        let mut kv = inner.kv.clone();
        kv.delete(start, Some(DeleteOptions::new().with_range(end)))
            .await
            .map_err(|e| map_err(e, &inner.ctx("delete_tree", prefix)))?;
        Ok(())
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<KvPair> {
        let inner = &*self.inner;
        let full = inner.full(key);
        let compare = match previous {
            None => EtcdCompare::create_revision(full.clone(), CompareOp::Equal, 0),
            Some(v) => EtcdCompare::mod_revision(full.clone(), CompareOp::Equal, rev_of(v)),
        };
        let lease = match ttl {
            Some(ttl) => Some(inner.grant(ttl, key).await?),
            None => None,
        };
        let put_opts = lease.map(|id| EtcdPutOptions::new().with_lease(id));
        let txn = EtcdTxn::new()
            .when([compare])
            .and_then([EtcdTxnOp::put(full.clone(), value, put_opts)])
            .or_else([EtcdTxnOp::get(
                full,
                Some(GetOptions::new().with_keys_only()),
            )]);
        let resp = inner
            .kv_txn("atomic_put", key, Some(value.len()), txn)
            .await;
        let resp = match resp {
            Ok(r) if r.succeeded() => {
                return Ok(KvPair {
                    key: key.to_string(),
                    value: value.to_vec(),
                    version: version_of(header_rev(r.header())),
                })
            }
            Ok(r) => r,
            Err(e) => {
                inner.revoke_in_background(lease);
                return Err(e);
            }
        };
        inner.revoke_in_background(lease);
        let key = key.to_string();
        let actual = failure_versions(&resp).into_iter().next().flatten();
        Err(match (previous, actual) {
            (None, _) => Error::KeyExists { key },
            (Some(_), None) => Error::not_found(key),
            (Some(expected), Some(actual)) => Error::KeyModified {
                key,
                expected,
                actual,
            },
        })
    }

    async fn atomic_delete(&self, key: &str, previous: u64) -> Result<()> {
        let inner = &*self.inner;
        let full = inner.full(key);
        let txn = EtcdTxn::new()
            .when([EtcdCompare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                rev_of(previous),
            )])
            .and_then([EtcdTxnOp::delete(full.clone(), None)])
            .or_else([EtcdTxnOp::get(
                full,
                Some(GetOptions::new().with_keys_only()),
            )]);
        let resp = inner.kv_txn("atomic_delete", key, None, txn).await?;
        if resp.succeeded() {
            return Ok(());
        }
        let key = key.to_string();
        match failure_versions(&resp).into_iter().next().flatten() {
            None => Err(Error::not_found(key)),
            Some(actual) => Err(Error::KeyModified {
                key,
                expected: previous,
                actual,
            }),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<TxnResult>> {
        txn::apply(&self.inner, txn).await
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        watch::watch_key(&self.inner, key).await
    }

    async fn watch_tree(&self, prefix: &str) -> Result<TreeWatchStream> {
        watch::watch_tree(&self.inner, prefix).await
    }

    async fn watch_events(
        &self,
        prefix: &str,
        from: Option<kv_core::Cursor>,
    ) -> Result<kv_core::EventStream> {
        watch::watch_events(&self.inner, prefix, from).await
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<Lock> {
        lock::acquire(self.inner.clone(), key.to_string(), options).await
    }

    async fn close(&self) -> Result<()> {
        lock::release_all(&self.inner).await;
        Ok(())
    }
}
