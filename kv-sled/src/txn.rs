//! Transactions: compares and operations applied in one sled transaction.

use std::collections::HashMap;

use kv_core::{Error, KvPair, Result, Txn, TxnOp, TxnResult};

use crate::db::Shared;
use crate::error::map_err;
use crate::expiry::{expires_at, TOMBSTONE_GRACE_MS};
use crate::record::{expiry_key, now_ms, Record};
use crate::store::SledDriver;

/// Applies a prepared, non-empty transaction (the caller flushes if it wrote).
pub(crate) fn run(driver: &SledDriver, shared: &Shared, txn: &Txn) -> Result<Vec<TxnResult>> {
    use sled::transaction::{ConflictableTransactionError as Abort, TransactionError};
    let now = now_ms();
    // Expiry index entries go in first (a stale entry is harmless, a missing one is not).
    let mut expiry: HashMap<usize, u64> = HashMap::new();
    for (i, op) in txn.ops.iter().enumerate() {
        let due = match op {
            TxnOp::Put { options, .. } => expires_at(options.ttl),
            TxnOp::Delete { .. } => now + TOMBSTONE_GRACE_MS,
            TxnOp::Get { .. } => 0,
        };
        if due != 0 {
            shared
                .expiry
                .insert(expiry_key(due, &driver.skey(op.key())), &[])
                .map_err(|e| map_err("txn", e))?;
            expiry.insert(i, due);
        }
    }
    let res = shared.data.transaction(|tx| {
        let now = now_ms();
        let read = |key: &str| -> std::result::Result<Option<Record>, Abort<Error>> {
            match tx.get(driver.skey(key))? {
                None => Ok(None),
                Some(b) => Record::decode(&b)
                    .map(|r| Some(r).filter(|r| r.is_live(now)))
                    .map_err(Abort::Abort),
            }
        };
        for (i, c) in txn.compares.iter().enumerate() {
            let cur = read(c.key())?.map(|r| r.version);
            c.evaluate(i, cur).map_err(Abort::Abort)?;
        }
        let mut out = Vec::with_capacity(txn.ops.len());
        for (i, op) in txn.ops.iter().enumerate() {
            match op {
                TxnOp::Get { key } => out.push(TxnResult::Get(
                    read(key)?.map(|r| KvPair::new(key.clone(), r.value, r.version)),
                )),
                TxnOp::Put { key, value, .. } => {
                    let version = tx.generate_id()? + 1;
                    let exp = expiry.get(&i).copied().unwrap_or(0);
                    let rec = Record::live(version, exp, value.clone());
                    tx.insert(driver.skey(key), rec.encode())?;
                    out.push(TxnResult::Put(KvPair::new(
                        key.clone(),
                        value.clone(),
                        version,
                    )));
                }
                TxnOp::Delete { key } => {
                    if read(key)?.is_some() {
                        let version = tx.generate_id()? + 1;
                        let due = expiry.get(&i).copied().unwrap_or(now + TOMBSTONE_GRACE_MS);
                        tx.insert(driver.skey(key), Record::tombstone(version, due).encode())?;
                    }
                    out.push(TxnResult::Delete);
                }
            }
        }
        Ok(out)
    });
    shared.wake_reaper();
    match res {
        Ok(out) => Ok(out),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(map_err("txn", e)),
    }
}
