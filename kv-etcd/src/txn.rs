//! Transactions: one etcd `Txn` whose failure branch reads the compared keys, so a failed
//! compare is named without a second round trip.

use std::collections::HashMap;

use etcd_client::{
    Compare as EtcdCompare, CompareOp, GetOptions, PutOptions as EtcdPutOptions, Txn as EtcdTxn,
    TxnOp as EtcdTxnOp, TxnOpResponse,
};
use kv_core::{Compare, Error, KvPair, Result, Txn, TxnOp, TxnResult};

use crate::client::{header_rev, rev_of, ttl_secs, version_of};
use crate::connect::Inner;
use crate::BACKEND;

/// The versions (`None`: absent) read by a failed transaction's failure branch, in order.
pub(crate) fn failure_versions(resp: &etcd_client::TxnResponse) -> Vec<Option<u64>> {
    resp.op_responses()
        .into_iter()
        .map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| version_of(kv.mod_revision())),
            _ => None,
        })
        .collect()
}

/// Grants one lease per distinct TTL (in whole seconds) of the transaction's puts.
async fn grant_leases(inner: &Inner, txn: &Txn) -> Result<HashMap<i64, i64>> {
    let mut leases: HashMap<i64, i64> = HashMap::new();
    for op in &txn.ops {
        let TxnOp::Put { key, options, .. } = op else {
            continue;
        };
        let Some(ttl) = options.ttl else { continue };
        if let std::collections::hash_map::Entry::Vacant(e) = leases.entry(ttl_secs(ttl)) {
            match inner.grant(ttl, key).await {
                Ok(id) => {
                    e.insert(id);
                }
                Err(err) => {
                    inner.revoke_in_background(leases.values().copied());
                    return Err(err);
                }
            }
        }
    }
    Ok(leases)
}

fn compare(inner: &Inner, c: &Compare) -> EtcdCompare {
    let full = inner.full(c.key());
    match c {
        Compare::Version { version, .. } | Compare::Held { token: version, .. } => {
            EtcdCompare::mod_revision(full, CompareOp::Equal, rev_of(*version))
        }
        Compare::Absent { .. } => EtcdCompare::create_revision(full, CompareOp::Equal, 0),
        Compare::Present { .. } => EtcdCompare::create_revision(full, CompareOp::Greater, 0),
    }
}

/// Applies a prepared, non-empty transaction.
pub(crate) async fn apply(inner: &Inner, txn: Txn) -> Result<Vec<TxnResult>> {
    // Only gets and no compares: with `consistency=stale` they may be served locally.
    let read_only =
        txn.compares.is_empty() && txn.ops.iter().all(|o| matches!(o, TxnOp::Get { .. }));
    let leases = grant_leases(inner, &txn).await?;
    let size: usize = txn
        .ops
        .iter()
        .map(|op| match op {
            TxnOp::Put { value, .. } => value.len(),
            _ => 0,
        })
        .sum();
    let compares: Vec<EtcdCompare> = txn.compares.iter().map(|c| compare(inner, c)).collect();
    let ops: Vec<EtcdTxnOp> = txn
        .ops
        .iter()
        .map(|op| match op {
            TxnOp::Put {
                key,
                value,
                options,
            } => {
                let opts = options
                    .ttl
                    .map(|t| EtcdPutOptions::new().with_lease(leases[&ttl_secs(t)]));
                EtcdTxnOp::put(inner.full(key), value.clone(), opts)
            }
            TxnOp::Delete { key } => EtcdTxnOp::delete(inner.full(key), None),
            // etcd serves a read-only txn whose ranges are all serializable locally.
            TxnOp::Get { key } => EtcdTxnOp::get(
                inner.full(key),
                (inner.stale && read_only).then(|| GetOptions::new().with_serializable()),
            ),
        })
        .collect();
    let failure: Vec<EtcdTxnOp> = txn
        .compares
        .iter()
        .map(|c| {
            EtcdTxnOp::get(
                inner.full(c.key()),
                Some(GetOptions::new().with_keys_only()),
            )
        })
        .collect();
    let first_key = txn
        .ops
        .first()
        .map(|o| o.key().to_string())
        .unwrap_or_default();
    let etxn = EtcdTxn::new().when(compares).and_then(ops).or_else(failure);
    let resp = match inner.kv_txn("txn", &first_key, Some(size), etxn).await {
        Ok(r) => r,
        Err(e) => {
            inner.revoke_in_background(leases.values().copied());
            return Err(e);
        }
    };
    if !resp.succeeded() {
        inner.revoke_in_background(leases.values().copied());
        let versions = failure_versions(&resp);
        for (i, c) in txn.compares.iter().enumerate() {
            c.evaluate(i, versions.get(i).copied().flatten())?;
        }
        return Err(Error::Backend {
            retryable: false,
            backend: BACKEND,
            message: "etcd rejected the transaction but every compare holds on re-read".into(),
            source: None,
        });
    }
    let revision = version_of(header_rev(resp.header()));
    let responses = resp.op_responses();
    let mut out = Vec::with_capacity(txn.ops.len());
    for (op, r) in txn.ops.into_iter().zip(responses) {
        out.push(match (op, r) {
            (TxnOp::Put { key, value, .. }, _) => TxnResult::Put(KvPair {
                key,
                value,
                version: revision,
            }),
            (TxnOp::Delete { .. }, _) => TxnResult::Delete,
            (TxnOp::Get { key }, TxnOpResponse::Get(mut g)) => {
                TxnResult::Get(g.take_kvs().into_iter().next().map(|kv| KvPair {
                    key,
                    version: version_of(kv.mod_revision()),
                    value: kv.into_key_value().1,
                }))
            }
            (TxnOp::Get { .. }, _) => {
                return Err(Error::Backend {
                    retryable: false,
                    backend: BACKEND,
                    message: "etcd answered a transaction read with another kind of response"
                        .into(),
                    source: None,
                })
            }
        });
    }
    Ok(out)
}
