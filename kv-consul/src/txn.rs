//! kv transactions on `/v1/txn`.

use std::collections::HashMap;

use std::sync::Arc;

use kv_core::raw::CleanupGuard;
use kv_core::{Compare, Error, KvPair, Result, Txn, TxnOp, TxnResult};

use crate::api::{self, Entry, KvOp, TxnOutcome, TTL_FLAG};
use crate::error::{contended, is_fatal_what, missing_result, txn_error, what_error};
use crate::store::Inner;
use crate::write::session_guard;
use crate::{BACKEND, MAX_TXN_OPS};

/// What a Consul op stands for.
#[derive(Clone, Copy)]
enum Role {
    Compare(usize),
    /// Guard of a TTL put's pre-read (a failure means: read again and retry).
    Guard,
    Op(usize),
}

/// Runs a prepared, non-empty transaction.
pub(crate) async fn run(inner: &Arc<Inner>, txn: Txn) -> Result<Vec<TxnResult>> {
    // Sessions for TTL puts are created once and destroyed if the transaction is not applied
    // (in the background if this call is dropped).
    let mut sessions: HashMap<usize, String> = HashMap::new();
    let mut guards: Vec<CleanupGuard> = Vec::new();
    let r = run_inner(inner, &txn, &mut sessions, &mut guards).await;
    if r.is_err() {
        for s in sessions.values() {
            let _ = inner.http.session_destroy(s).await;
        }
    }
    guards.into_iter().for_each(CleanupGuard::disarm);
    r
}

async fn run_inner(
    inner: &Arc<Inner>,
    txn: &Txn,
    sessions: &mut HashMap<usize, String>,
    guards: &mut Vec<CleanupGuard>,
) -> Result<Vec<TxnResult>> {
    for (i, op) in txn.ops.iter().enumerate() {
        if let TxnOp::Put {
            options: kv_core::PutOptions { ttl: Some(ttl) },
            ..
        } = op
        {
            let s = inner
                .http
                .session_create("kv-ttl", "delete", *ttl / 2)
                .await?;
            guards.push(session_guard(inner, &s));
            sessions.insert(i, s);
        }
    }
    for _attempt in 0..20 {
        // Pre-read the keys of TTL puts: a session already attached must be unlocked first.
        let mut current: HashMap<usize, Option<Entry>> = HashMap::new();
        for &i in sessions.keys() {
            let full = inner.full(txn.ops[i].key());
            current.insert(i, inner.get_entry(&full).await?);
        }

        let mut ops: Vec<KvOp> = Vec::new();
        let mut roles: Vec<Role> = Vec::new();
        for (ci, c) in txn.compares.iter().enumerate() {
            let full = inner.full(c.key());
            ops.push(match c {
                Compare::Version { version, .. } | Compare::Held { token: version, .. } => {
                    KvOp::new("check-index", &full).index(*version)
                }
                Compare::Absent { .. } => KvOp::new("check-not-exists", &full),
                Compare::Present { .. } => KvOp::new("get", &full),
            });
            roles.push(Role::Compare(ci));
        }
        let mut gets = Vec::new();
        for (oi, op) in txn.ops.iter().enumerate() {
            let full = inner.full(op.key());
            match op {
                TxnOp::Put { value, .. } => match sessions.get(&oi) {
                    None => {
                        ops.push(KvOp::new("set", &full).value(value, api::nonce()));
                        roles.push(Role::Op(oi));
                    }
                    Some(session) => {
                        match current.get(&oi).and_then(|e| e.as_ref()) {
                            None => {
                                ops.push(KvOp::new("check-not-exists", &full));
                                roles.push(Role::Guard);
                            }
                            Some(e) => {
                                ops.push(KvOp::new("check-index", &full).index(e.modify_index));
                                roles.push(Role::Guard);
                                if let Some(s) = e.session.as_deref().filter(|s| !s.is_empty()) {
                                    ops.push(KvOp::new("unlock", &full).value(&[], 0).session(s));
                                    roles.push(Role::Guard);
                                }
                            }
                        }
                        ops.push(
                            KvOp::new("lock", &full)
                                .value(value, TTL_FLAG)
                                .session(session),
                        );
                        roles.push(Role::Op(oi));
                    }
                },
                TxnOp::Delete { .. } => {
                    ops.push(KvOp::new("delete", &full));
                    roles.push(Role::Op(oi));
                }
                TxnOp::Get { .. } => gets.push((oi, full)),
            }
        }
        let fixed = ops.len();
        for (oi, full) in &gets {
            ops.push(KvOp::new("get-tree", full));
            roles.push(Role::Op(*oi));
        }
        if ops.len() > MAX_TXN_OPS {
            return Err(Error::invalid_argument(format!(
                "the transaction needs {} Consul operations (TTL puts on keys attached to a \
                 session need an extra unlock), the {BACKEND} backend accepts at most {MAX_TXN_OPS}",
                ops.len()
            )));
        }

        // Without writes Consul answers from its state store, not through Raft: ask for
        // the store's read mode, or a consistent read when compares decide.
        let read_mode = if !txn.ops.iter().all(|o| matches!(o, TxnOp::Get { .. })) {
            None
        } else if txn.compares.is_empty() {
            Some(inner.read)
        } else {
            Some(kv_core::Consistency::Linearizable)
        };
        match inner.http.txn_with("txn", &ops, read_mode).await? {
            TxnOutcome::Ok(results) => {
                return collect(inner, txn, &ops[..fixed], &roles, &gets, results).await;
            }
            TxnOutcome::Rejected(mut errs) => {
                errs.sort_by_key(|e| e.op_index);
                if let Some(e) = errs.iter().find(|e| is_fatal_what(&e.what)) {
                    return Err(what_error(
                        "txn",
                        &ops[e.op_index.min(ops.len() - 1)].key,
                        &e.what,
                    ));
                }
                // The first failing compare decides; its reason comes from a fresh read.
                if let Some(ci) = errs.iter().find_map(|e| match roles.get(e.op_index) {
                    Some(Role::Compare(ci)) => Some(*ci),
                    _ => None,
                }) {
                    let c = &txn.compares[ci];
                    let cur = inner.get_entry(&inner.full(c.key())).await?;
                    c.evaluate(ci, cur.map(|e| e.modify_index))?;
                    // It holds again: the state changed meanwhile, try again.
                    continue;
                }
                if errs.iter().any(|e| {
                    !matches!(roles.get(e.op_index), Some(Role::Guard))
                        && !e.what.contains("lock is already held")
                }) {
                    return Err(txn_error("txn", "", errs));
                }
                // A guard failed (a TTL put's key changed after its pre-read): retry.
            }
        }
    }
    Err(contended("txn", ""))
}

async fn collect(
    inner: &Inner,
    txn: &Txn,
    fixed_ops: &[KvOp],
    roles: &[Role],
    gets: &[(usize, String)],
    results: Vec<Entry>,
) -> Result<Vec<TxnResult>> {
    let mut out: Vec<Option<TxnResult>> = vec![None; txn.ops.len()];
    let mut it = results.into_iter();
    let mut detach = Vec::new();
    for (op, role) in fixed_ops.iter().zip(roles) {
        let n = op.fixed_results().unwrap_or(0);
        let mut last = None;
        for _ in 0..n {
            last = it.next();
        }
        if let Role::Op(oi) = role {
            match &txn.ops[*oi] {
                TxnOp::Put { key, value, .. } => {
                    let e = last.ok_or_else(|| missing_result("txn"))?;
                    if op.verb == "set" {
                        if let Some(s) = e.session.clone().filter(|s| !s.is_empty()) {
                            detach.push((*oi, op.key.clone(), value.clone(), s, e.modify_index));
                        }
                    }
                    out[*oi] = Some(TxnResult::Put(KvPair::new(
                        key.clone(),
                        value.clone(),
                        e.modify_index,
                    )));
                }
                TxnOp::Delete { .. } => out[*oi] = Some(TxnResult::Delete),
                TxnOp::Get { .. } => {}
            }
        }
    }
    let tail: Vec<Entry> = it.collect();
    for (oi, full) in gets {
        let found = tail.iter().find(|e| &e.key == full);
        let pair = match found {
            Some(e) => Some(KvPair::new(
                txn.ops[*oi].key().to_string(),
                e.value_bytes()?,
                e.modify_index,
            )),
            None => None,
        };
        out[*oi] = Some(TxnResult::Get(pair));
    }
    // Plain puts on keys attached to a session: detach them so they are permanent.
    for (oi, full, value, session, index) in detach {
        let ops = [
            KvOp::new("check-index", &full).index(index),
            KvOp::new("unlock", &full)
                .value(&value, api::nonce())
                .session(&session),
        ];
        if let TxnOutcome::Ok(mut r) = inner.http.txn("txn", &ops).await? {
            if let (Some(e), Some(TxnResult::Put(p))) = (r.pop(), out[oi].as_mut()) {
                p.version = e.modify_index;
            }
        }
    }
    out.into_iter()
        .map(|r| r.ok_or_else(|| missing_result("txn")))
        .collect()
}
