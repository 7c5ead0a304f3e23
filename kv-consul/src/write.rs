//! Key mapping, the driver's own reads, and writes (plain and with a TTL session).

use std::sync::Arc;
use std::time::Duration;

use kv_core::raw::{in_subtree, CleanupGuard};
use kv_core::{Consistency, KvPair, Result};

use crate::api::{self, Entry, KvOp, TxnOutcome, TTL_FLAG};
use crate::error::{contended, is_fatal_what, missing_result, txn_error, what_error};
use crate::http::Http;
use crate::store::Inner;

/// The condition of a write.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cond {
    Any,
    Absent,
    Version(u64),
}

/// Destroys `session` in the background (bounded by the timeout) unless disarmed: for a
/// session whose call may be dropped before it is used or handed over.
pub(crate) fn session_guard(inner: &Arc<Inner>, session: &str) -> CleanupGuard {
    let timeout = inner.info.timeout;
    let (inner, id) = (inner.clone(), session.to_string());
    CleanupGuard::new("destroy Consul session", timeout, async move {
        let _ = inner.http.session_destroy(&id).await;
    })
}

impl Inner {
    /// The stored (Consul) key of a normalized key.
    pub fn full(&self, key: &str) -> String {
        self.ns.join(key)
    }

    /// A Consul entry as a kv pair (`None` if outside the namespace or not a valid kv key).
    pub fn to_pair(&self, e: &Entry) -> Option<Result<KvPair>> {
        let key = self.ns.user_key(&e.key)?;
        Some(e.value_bytes().map(|v| KvPair::new(key, v, e.modify_index)))
    }

    /// Reads one entry linearizably (bookkeeping reads before and after writes).
    pub async fn get_entry(&self, full: &str) -> Result<Option<Entry>> {
        Ok(self
            .http
            .kv_get(full, None, Consistency::Linearizable)
            .await?
            .0)
    }

    /// Reads one entry in the store's read mode: the one request of a user `get`/`exists`,
    /// bounded by kv-core's checking layer (no timer of its own).
    pub async fn read_entry(&self, full: &str) -> Result<Option<Entry>> {
        self.http.kv_get_in_call(full, self.read).await
    }

    /// The subtree of a normalized prefix, sorted.
    pub fn subtree_pairs(&self, prefix: &str, entries: &[Entry]) -> Result<Vec<KvPair>> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if let Some(p) = self.to_pair(e) {
                let p = p?;
                if in_subtree(prefix, &p.key) {
                    out.push(p);
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Writes `value` at `full` with a condition; `Ok(None)` when the condition failed.
    pub async fn write(
        self: &Arc<Self>,
        full: &str,
        value: &[u8],
        ttl: Option<Duration>,
        cond: Cond,
    ) -> Result<Option<Entry>> {
        match ttl {
            None => write_plain(&self.http, full, value, cond).await,
            Some(ttl) => self.write_ttl(full, value, ttl, cond).await,
        }
    }

    async fn write_ttl(
        self: &Arc<Self>,
        full: &str,
        value: &[u8],
        ttl: Duration,
        cond: Cond,
    ) -> Result<Option<Entry>> {
        let session = self
            .http
            .session_create("kv-ttl", "delete", ttl / 2)
            .await?;
        let guard = session_guard(self, &session);
        let r = self.write_ttl_with(full, value, &session, cond).await;
        if !matches!(r, Ok(Some(_))) {
            let _ = self.http.session_destroy(&session).await;
        }
        guard.disarm();
        r
    }

    async fn write_ttl_with(
        &self,
        full: &str,
        value: &[u8],
        session: &str,
        cond: Cond,
    ) -> Result<Option<Entry>> {
        for _ in 0..20 {
            let cur = self.get_entry(full).await?;
            match (&cur, cond) {
                (Some(_), Cond::Absent) => return Ok(None),
                (None, Cond::Version(_)) => return Ok(None),
                (Some(e), Cond::Version(v)) if e.modify_index != v => return Ok(None),
                _ => {}
            }
            let mut ops = Vec::with_capacity(3);
            match &cur {
                None => ops.push(KvOp::new("check-not-exists", full)),
                Some(e) => {
                    ops.push(KvOp::new("check-index", full).index(e.modify_index));
                    if let Some(s) = e.session.as_deref().filter(|s| !s.is_empty()) {
                        ops.push(KvOp::new("unlock", full).value(&[], 0).session(s));
                    }
                }
            }
            ops.push(
                KvOp::new("lock", full)
                    .value(value, TTL_FLAG)
                    .session(session),
            );
            match self.http.txn("put", &ops).await? {
                TxnOutcome::Ok(mut r) => {
                    return Ok(Some(r.pop().ok_or_else(|| missing_result("put"))?))
                }
                TxnOutcome::Rejected(errs) => {
                    if let Some(e) = errs.iter().find(|e| is_fatal_what(&e.what)) {
                        return Err(what_error("put", full, &e.what));
                    }
                    // The key changed between the read and the write: read again.
                }
            }
        }
        Err(contended("put", full))
    }
}

async fn write_plain(http: &Http, full: &str, value: &[u8], cond: Cond) -> Result<Option<Entry>> {
    let op = match cond {
        Cond::Any => KvOp::new("set", full).value(value, api::nonce()),
        Cond::Absent => KvOp::new("cas", full).value(value, api::nonce()).index(0),
        Cond::Version(v) => KvOp::new("cas", full).value(value, api::nonce()).index(v),
    };
    let entry = match http.txn("put", &[op]).await? {
        TxnOutcome::Ok(mut r) => r.pop().ok_or_else(|| missing_result("put"))?,
        TxnOutcome::Rejected(errs) => {
            if matches!(cond, Cond::Any) {
                return Err(txn_error("put", full, errs));
            }
            if let Some(e) = errs.iter().find(|e| !e.what.contains("index is stale")) {
                return Err(what_error("put", full, &e.what));
            }
            return Ok(None);
        }
    };
    match entry.session.clone().filter(|s| !s.is_empty()) {
        None => Ok(Some(entry)),
        Some(session) => {
            // The key stays attached to a TTL (or lock) session after a plain set: detach
            // it so that the key is permanent, unless someone wrote it meanwhile.
            let ops = [
                KvOp::new("check-index", full).index(entry.modify_index),
                KvOp::new("unlock", full)
                    .value(value, api::nonce())
                    .session(&session),
            ];
            match http.txn("put", &ops).await? {
                TxnOutcome::Ok(mut r) => Ok(Some(r.pop().unwrap_or(entry))),
                TxnOutcome::Rejected(_) => Ok(Some(entry)),
            }
        }
    }
}
