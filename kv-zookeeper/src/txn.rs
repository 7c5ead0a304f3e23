//! Transactions: one multi read, compares evaluated here, one guarded multi write.

use std::collections::HashMap;

use kv_core::{Error, KvPair, Result, Txn, TxnOp, TxnResult};
use zookeeper_client as zk;
use zookeeper_client::{MultiReadResult, MultiWriteError, MultiWriteResult, Stat};

use crate::codec::{self, Decoded};
use crate::node::{after_barrier, Barrier};
use crate::{Inner, BACKEND, MAX_VALUE_SIZE};

enum State {
    Missing,
    NoValue(Stat),
    Value(Vec<u8>, Stat, Option<u64>),
    Expired(Stat),
}

impl State {
    fn stat(&self) -> Option<&Stat> {
        match self {
            State::Missing => None,
            State::NoValue(s) | State::Value(_, s, _) | State::Expired(s) => Some(s),
        }
    }
    fn version(&self) -> Option<u64> {
        match self {
            State::Value(_, s, _) => Some(s.mzxid as u64),
            _ => None,
        }
    }
}

pub async fn run(inner: &Inner, txn: &Txn) -> Result<Vec<TxnResult>> {
    let total: usize = txn
        .ops
        .iter()
        .map(|o| match o {
            TxnOp::Put { value, .. } => value.len(),
            _ => 0,
        })
        .sum();
    if total > MAX_VALUE_SIZE {
        return Err(Error::invalid_argument(format!(
            "the transaction writes {total} bytes of values; ZooKeeper accepts at most {MAX_VALUE_SIZE} per request"
        )));
    }
    let mut keys: Vec<&str> = Vec::new();
    for k in txn
        .compares
        .iter()
        .map(|c| c.key())
        .chain(txn.ops.iter().map(|o| o.key()))
    {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let written: Vec<&str> = txn
        .ops
        .iter()
        .filter(|o| !matches!(o, TxnOp::Get { .. }))
        .map(|o| o.key())
        .collect();
    let mut backoff = kv_core::retry::Backoff::new(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_millis(500),
    );
    loop {
        let client = inner.conn()?.client;
        // 1. Read every key at once.
        let mut reader = client.new_multi_reader();
        for k in &keys {
            reader
                .add_get_data(&inner.path(k))
                .map_err(|e| inner.err(e, k))?;
        }
        // After a barrier unless reads may be stale and the transaction only reads: a stale
        // read would make a compare fail that holds.
        let barrier = if txn.compares.is_empty() && written.is_empty() {
            inner.read_barrier()
        } else {
            inner.check_barrier()
        };
        debug_assert!(barrier != Barrier::None || inner.cfg.consistency.is_stale());
        let root = inner.prefix_path("");
        let reads = after_barrier(&client, &root, barrier, || reader.commit())
            .await
            .map_err(|e| inner.err(e, ""))?;
        let now = codec::now_ms();
        let mut state: HashMap<&str, State> = HashMap::new();
        for (k, r) in keys.iter().zip(reads) {
            let s = match r {
                MultiReadResult::Data { data, stat } => {
                    match (codec::header_ttl(&data), codec::decode(data, &stat, now)) {
                        (ttl, Decoded::Value(v)) => State::Value(v, stat, ttl),
                        (_, Decoded::NoValue) => State::NoValue(stat),
                        (_, Decoded::Expired) => State::Expired(stat),
                    }
                }
                MultiReadResult::Error {
                    err: zk::Error::NoNode,
                } => State::Missing,
                MultiReadResult::Error { err } => return Err(inner.err(err, k)),
                _ => State::Missing,
            };
            state.insert(k, s);
        }
        // 2. Compares, in order.
        for (i, c) in txn.compares.iter().enumerate() {
            c.evaluate(i, state[c.key()].version())?;
        }
        // 3. One multi write guarded by the versions read.
        let mut w = client.new_multi_writer();
        let mut results: Vec<Option<TxnResult>> = Vec::new();
        let mut any_write = false;
        let mut created: Vec<String> = Vec::new();
        for k in &keys {
            if written.contains(k) {
                continue;
            }
            let path = inner.path(k);
            match state[k].stat() {
                Some(s) => w
                    .add_check_version(&path, s.version)
                    .map_err(|e| inner.err(e, k))?,
                None => {
                    // Still absent when the write applies: creating and deleting the znode
                    // in the same multi fails with NodeExists otherwise.
                    w.add_create(&path, codec::TOMBSTONE, &inner.create_opts(None))
                        .map_err(|e| inner.err(e, k))?;
                    w.add_delete(&path, None).map_err(|e| inner.err(e, k))?;
                    created.push(path);
                }
            }
        }
        for op in &txn.ops {
            let key = op.key();
            let path = inner.path(key);
            let st = &state[key];
            match op {
                TxnOp::Get { .. } => {
                    results.push(Some(TxnResult::Get(match st {
                        State::Value(v, s, _) => Some(KvPair::new(key, v.clone(), s.mzxid as u64)),
                        _ => None,
                    })));
                }
                TxnOp::Delete { .. } => {
                    results.push(Some(TxnResult::Delete));
                    match st {
                        State::Value(_, s, _) | State::Expired(s) => {
                            any_write = true;
                            if s.num_children > 0 {
                                w.add_set_data(&path, codec::TOMBSTONE, Some(s.version))
                            } else {
                                w.add_delete(&path, Some(s.version))
                            }
                            .map_err(|e| inner.err(e, key))?;
                        }
                        State::NoValue(s) => {
                            w.add_check_version(&path, s.version)
                                .map_err(|e| inner.err(e, key))?;
                        }
                        State::Missing => {}
                    }
                }
                TxnOp::Put { value, options, .. } => {
                    results.push(None);
                    any_write = true;
                    let data = codec::encode(value, options.ttl);
                    let opts = inner.create_opts(options.ttl);
                    let old_ttl = match st {
                        State::Value(_, _, t) => *t,
                        State::Expired(_) => Some(0),
                        _ => None,
                    };
                    match st.stat() {
                        None => {
                            w.add_create(&path, &data, &opts)
                                .map_err(|e| inner.err(e, key))?;
                            created.push(path.clone());
                        }
                        Some(s) if !codec::needs_replace(old_ttl, s, options.ttl) => {
                            w.add_set_data(&path, &data, Some(s.version))
                                .map_err(|e| inner.err(e, key))?;
                        }
                        Some(s) => {
                            w.add_delete(&path, Some(s.version))
                                .map_err(|e| inner.err(e, key))?;
                            w.add_create(&path, &data, &opts)
                                .map_err(|e| inner.err(e, key))?;
                            created.push(path.clone());
                        }
                    }
                }
            }
        }
        if !any_write {
            // Read-only: the multi read is the snapshot.
            return Ok(results
                .into_iter()
                .map(|r| r.expect("get result"))
                .collect());
        }
        match w.commit().await {
            Ok(res) => {
                let mut zxid = res.iter().find_map(|r| match r {
                    MultiWriteResult::SetData { stat } if !stat.is_invalid() => Some(stat.mzxid),
                    MultiWriteResult::Create { stat, .. } if !stat.is_invalid() => Some(stat.mzxid),
                    _ => None,
                });
                // ZOOKEEPER-4026: create results of a multi may carry no stat; every op of
                // a multi has the same zxid, so any created znode's czxid gives it.
                for p in &created {
                    if zxid.is_some() {
                        break;
                    }
                    if let Ok(Some(s)) = client.check_stat(p).await {
                        zxid = Some(s.czxid);
                    }
                }
                let has_put = txn.ops.iter().any(|o| matches!(o, TxnOp::Put { .. }));
                let zxid = zxid.unwrap_or(0);
                if has_put && zxid <= 0 {
                    return Err(Error::backend(
                        BACKEND,
                        "the transaction was applied but its zxid could not be read back",
                        zk::Error::RuntimeInconsistent,
                    ));
                }
                return Ok(txn
                    .ops
                    .iter()
                    .zip(results)
                    .map(|(op, r)| match (op, r) {
                        (_, Some(r)) => r,
                        (TxnOp::Put { key, value, .. }, None) => {
                            TxnResult::Put(KvPair::new(key.clone(), value.clone(), zxid as u64))
                        }
                        _ => TxnResult::Delete,
                    })
                    .collect());
            }
            Err(MultiWriteError::OperationFailed {
                source: zk::Error::NoNode,
                ..
            }) => {
                // A parent is missing (or a node vanished): create parents of new keys, retry.
                for p in &created {
                    inner
                        .make_parents(&client, p)
                        .await
                        .map_err(|e| inner.err(e, ""))?;
                }
            }
            Err(MultiWriteError::OperationFailed {
                source: zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NotEmpty,
                ..
            }) => {}
            Err(MultiWriteError::OperationFailed { source, .. })
            | Err(MultiWriteError::RequestFailed { source }) => {
                let ttl = txn.ops.iter().find_map(|o| match o {
                    TxnOp::Put { options, .. } => options.ttl,
                    _ => None,
                });
                return Err(inner.ttl_error(source, "", ttl));
            }
        }
        backoff.wait().await;
    }
}
