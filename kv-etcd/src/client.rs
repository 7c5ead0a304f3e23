//! The driver's requests to etcd: key mapping, reads, leases, and the error context.

use std::future::Future;
use std::time::Duration;

use etcd_client::{GetOptions, KeyValue, Txn as EtcdTxn};
use kv_core::raw::spawn_cleanup;
use kv_core::retry::timed;
use kv_core::{Error, KvPair, Result};

use crate::connect::Inner;
use crate::error::{is_lease_gone, map_err, Ctx};
use crate::BACKEND;

/// Separator between the namespace and the lock bookkeeping prefix (not a valid key char).
pub(crate) const LOCK_SEP: char = '\u{1}';

/// The smallest key greater than every key starting with `prefix` (etcd's prefix end).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whole seconds for a TTL, rounded up.
pub(crate) fn ttl_secs(ttl: Duration) -> i64 {
    let s = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(s.max(1)).unwrap_or(i64::MAX)
}

/// A kv version from an etcd revision.
pub(crate) fn version_of(rev: i64) -> u64 {
    rev.max(0) as u64
}

/// An etcd revision from a kv version.
pub(crate) fn rev_of(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

/// The revision in a response header (0 without one).
pub(crate) fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map(|h| h.revision()).unwrap_or(0)
}

impl Inner {
    /// The store's timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.info.timeout
    }

    /// Error context of a call.
    pub(crate) fn ctx<'a>(&'a self, op: &'a str, key: &'a str) -> Ctx<'a> {
        Ctx {
            endpoints: &self.endpoints,
            op,
            key,
            size: None,
            timeout: self.info.timeout,
        }
    }

    /// Bounds a request that the checking layer does not bound (background tasks, lock
    /// waits, connect) by the store's timeout.
    pub(crate) async fn bounded<T>(
        &self,
        op: &str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        timed(op, self.info.timeout, fut).await
    }

    /// Stored form of a normalized user key.
    pub(crate) fn full(&self, key: &str) -> String {
        self.ns.join(key)
    }

    /// `[start, end)` of the subtree of a normalized prefix.
    pub(crate) fn subtree(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        if self.ns.is_empty() && prefix.is_empty() {
            // The whole keyspace from the first printable character: the lock bookkeeping
            // prefix (starting with U+0001) stays out of it.
            (b" ".to_vec(), vec![0])
        } else {
            let start = self.ns.subtree_start(prefix).into_bytes();
            let end = prefix_end(&start);
            (start, end)
        }
    }

    /// The user key of a stored key, if it is a valid key inside the namespace.
    pub(crate) fn user_key(&self, stored: &[u8]) -> Option<String> {
        self.ns.user_key(std::str::from_utf8(stored).ok()?)
    }

    /// A pair of a listed key (`None` when the key is not a visible kv key).
    fn pair(&self, kv: KeyValue) -> Option<KvPair> {
        let version = version_of(kv.mod_revision());
        let (k, v) = kv.into_key_value();
        Some(KvPair {
            key: self.user_key(&k)?,
            value: v,
            version,
        })
    }

    /// Grants a lease of `ttl` (rounded up to seconds); refuses a server that raises it.
    pub(crate) async fn grant(&self, ttl: Duration, key: &str) -> Result<i64> {
        let secs = ttl_secs(ttl);
        let mut lease = self.lease.clone();
        let ctx = self.ctx("lease grant", key);
        let resp = self
            .bounded("lease grant", async {
                lease.grant(secs, None).await.map_err(|e| map_err(e, &ctx))
            })
            .await?;
        if resp.ttl() > secs {
            self.revoke_in_background([resp.id()]);
            return Err(Error::unsupported(
                format!(
                    "TTL of {ttl:?} (this etcd server grants leases of at least {} s)",
                    resp.ttl()
                ),
                BACKEND,
            ));
        }
        Ok(resp.id())
    }

    /// Revokes a lease; a lease that is already gone is fine.
    pub(crate) async fn revoke(&self, id: i64) -> Result<()> {
        let mut lease = self.lease.clone();
        let ctx = self.ctx("lease revoke", "");
        self.bounded("lease revoke", async {
            match lease.revoke(id).await {
                Ok(_) => Ok(()),
                Err(e) if is_lease_gone(&e) => Ok(()),
                Err(e) => Err(map_err(e, &ctx)),
            }
        })
        .await
    }

    /// Revokes each lease of `ids` in the background (best effort, bounded by the timeout).
    pub(crate) fn revoke_in_background(&self, ids: impl IntoIterator<Item = i64>) {
        for id in ids {
            let mut lease = self.lease.clone();
            spawn_cleanup("etcd lease revoke", self.timeout(), async move {
                let _ = lease.revoke(id).await;
            });
        }
    }

    /// A range request (bounded by the caller).
    pub(crate) async fn kv_get(
        &self,
        op: &str,
        key: &str,
        full: Vec<u8>,
        opts: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse> {
        let mut kv = self.kv.clone();
        kv.get(full, opts)
            .await
            .map_err(|e| map_err(e, &self.ctx(op, key)))
    }

    /// A transaction (bounded by the caller); `size` is the bytes it writes.
    pub(crate) async fn kv_txn(
        &self,
        op: &str,
        key: &str,
        size: Option<usize>,
        txn: EtcdTxn,
    ) -> Result<etcd_client::TxnResponse> {
        let mut kv = self.kv.clone();
        kv.txn(txn).await.map_err(|e| {
            let mut ctx = self.ctx(op, key);
            ctx.size = size;
            map_err(e, &ctx)
        })
    }

    /// Get options of a user read: serializable with `consistency=stale`.
    pub(crate) fn read_opts(&self, opts: GetOptions) -> GetOptions {
        if self.stale {
            opts.with_serializable()
        } else {
            opts
        }
    }

    /// Reads one key and the revision of the read, as the store's read consistency says
    /// (`user_read`) or linearizably (bookkeeping reads). Bounded by the caller.
    pub(crate) async fn read_key(
        &self,
        key: &str,
        user_read: bool,
    ) -> Result<(Option<KvPair>, i64)> {
        let opts = (user_read && self.stale).then(|| GetOptions::new().with_serializable());
        let mut resp = self
            .kv_get("get", key, self.full(key).into_bytes(), opts)
            .await?;
        let rev = header_rev(resp.header());
        let pair = resp.take_kvs().into_iter().next().map(|kv| KvPair {
            key: key.to_string(),
            version: version_of(kv.mod_revision()),
            value: kv.into_key_value().1,
        });
        Ok((pair, rev))
    }

    /// Reads a subtree and the revision of the read. Bounded by the caller.
    pub(crate) async fn read_tree(&self, prefix: &str) -> Result<(Vec<KvPair>, i64)> {
        let (start, end) = self.subtree(prefix);
        let mut resp = self
            .kv_get(
                "list",
                prefix,
                start,
                Some(self.read_opts(GetOptions::new().with_range(end))),
            )
            .await?;
        let rev = header_rev(resp.header());
        let pairs = resp
            .take_kvs()
            .into_iter()
            .filter_map(|kv| self.pair(kv))
            .collect();
        Ok((pairs, rev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_secs(Duration::from_secs(2)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
    }
}
