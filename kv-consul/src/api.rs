//! Consul's KV, session and txn endpoints, typed.

use std::time::Duration;

use base64::Engine as _;
use kv_core::{Consistency, Error, Result};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::error::{to_error, Failure};
use crate::http::{encode_path, Http, Response};

/// `Flags` of a key written with a TTL (attached to a `delete` session).
pub(crate) const TTL_FLAG: u64 = 0x6b76_5f74_746c_0001; // "kv_ttl" + 1
/// `Flags` of a lock key held by a kv lock session.
pub(crate) const LOCK_FLAG: u64 = 0x6b76_5f6c_6f63_6b01; // "kv_lock" + 1

/// One KV entry as Consul returns it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Entry {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub modify_index: u64,
}

impl Entry {
    pub fn value_bytes(&self) -> Result<Vec<u8>> {
        match &self.value {
            None => Ok(Vec::new()),
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| {
                    to_error(Failure::Decode {
                        operation: format!("read {:?}", self.key),
                        message: e.to_string(),
                    })
                }),
        }
    }

    pub fn held(&self) -> bool {
        self.session.as_deref().is_some_and(|s| !s.is_empty())
    }
}

/// A random, non-zero `Flags` value for a plain write. Consul skips a write that changes
/// nothing (same value, flags and session) without a new `ModifyIndex`; a fresh nonce makes
/// every kv write a real one, so versions always increase.
pub(crate) fn nonce() -> u64 {
    let n = rand::random::<u64>() | 1;
    if n == TTL_FLAG || n == LOCK_FLAG {
        n ^ 2
    } else {
        n
    }
}

pub(crate) fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

/// One `/v1/txn` KV operation.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KvOp {
    pub verb: &'static str,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl KvOp {
    pub fn new(verb: &'static str, key: &str) -> Self {
        KvOp {
            verb,
            key: key.to_string(),
            value: None,
            flags: None,
            index: None,
            session: None,
        }
    }
    pub fn value(mut self, v: &[u8], flags: u64) -> Self {
        self.value = Some(b64(v));
        self.flags = Some(flags);
        self
    }
    pub fn index(mut self, i: u64) -> Self {
        self.index = Some(i);
        self
    }
    pub fn session(mut self, s: &str) -> Self {
        self.session = Some(s.to_string());
        self
    }
    /// How many result entries Consul returns for this verb.
    pub fn fixed_results(&self) -> Option<usize> {
        match self.verb {
            "set" | "cas" | "lock" | "unlock" | "get" | "check-index" | "check-session" => Some(1),
            "delete" | "delete-cas" | "delete-tree" | "check-not-exists" => Some(0),
            _ => None, // get-tree: any number
        }
    }
}

#[derive(Serialize)]
struct TxnItem<'a> {
    #[serde(rename = "KV")]
    kv: &'a KvOp,
}

#[derive(Deserialize)]
struct TxnResultItem {
    #[serde(rename = "KV")]
    kv: Option<Entry>,
}

#[derive(Deserialize)]
pub(crate) struct TxnErrorItem {
    #[serde(rename = "OpIndex")]
    pub op_index: usize,
    #[serde(rename = "What")]
    pub what: String,
}

#[derive(Deserialize)]
struct TxnResponse {
    #[serde(rename = "Results", default)]
    results: Option<Vec<TxnResultItem>>,
    #[serde(rename = "Errors", default)]
    errors: Option<Vec<TxnErrorItem>>,
}

/// The outcome of a transaction Consul answered.
pub(crate) enum TxnOutcome {
    /// Applied; the result entries in order.
    Ok(Vec<Entry>),
    /// Rolled back; every error entry.
    Rejected(Vec<TxnErrorItem>),
}

#[derive(Deserialize)]
struct SessionId {
    #[serde(rename = "ID")]
    id: String,
}

/// A `GET /v1/kv/<key>` answer: the entry (`None`: no such key) and the index.
fn get_answer(key: &str, r: Response) -> Result<(Option<Entry>, u64)> {
    match r.status {
        StatusCode::OK => {
            let mut v: Vec<Entry> = decode("get", &r.body)?;
            Ok((v.pop(), r.index.unwrap_or(0)))
        }
        StatusCode::NOT_FOUND => Ok((None, r.index.unwrap_or(0))),
        _ => Err(status_error("get", key, &r)),
    }
}

fn status_error(operation: &str, key: &str, r: &Response) -> Error {
    to_error(Failure::Status {
        operation: operation.to_string(),
        key: key.to_string(),
        status: r.status,
        body: r.text(),
    })
}

fn decode<T: for<'de> Deserialize<'de>>(operation: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        to_error(Failure::Decode {
            operation: operation.to_string(),
            message: e.to_string(),
        })
    })
}

/// Consul wants Go durations; milliseconds are exact enough.
pub(crate) fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

impl Http {
    /// GET one key: `Ok((entry or None, X-Consul-Index))`. `block` = `(index, wait)`;
    /// `mode` adds `?consistent` or `?stale`.
    pub async fn kv_get(
        &self,
        key: &str,
        block: Option<(u64, Duration)>,
        mode: Consistency,
    ) -> Result<(Option<Entry>, u64)> {
        let mut path = encode_path("/v1/kv/", key);
        let budget = blocking_query(&mut path, false, block, self.timeout, mode);
        let r = self.send("get", Method::GET, &path, None, budget).await?;
        get_answer(key, r)
    }

    /// [`Http::kv_get`] without blocking, as the one request of a user call (bounded by
    /// kv-core's checking layer: see [`Http::send_in_call`]).
    pub async fn kv_get_in_call(&self, key: &str, mode: Consistency) -> Result<Option<Entry>> {
        let mut path = encode_path("/v1/kv/", key);
        blocking_query(&mut path, false, None, self.timeout, mode);
        let r = self.send_in_call(Method::GET, &path, None).await?;
        Ok(get_answer(key, r)?.0)
    }

    /// GET `?recurse` on a raw prefix: entries (bytewise sorted by Consul) and the index.
    pub async fn kv_list(
        &self,
        raw_prefix: &str,
        block: Option<(u64, Duration)>,
        mode: Consistency,
    ) -> Result<(Vec<Entry>, u64)> {
        let mut path = encode_path("/v1/kv/", raw_prefix);
        let budget = blocking_query(&mut path, true, block, self.timeout, mode);
        let r = self.send("list", Method::GET, &path, None, budget).await?;
        match r.status {
            StatusCode::OK => Ok((decode("list", &r.body)?, r.index.unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok((Vec::new(), r.index.unwrap_or(0))),
            _ => Err(status_error("list", raw_prefix, &r)),
        }
    }

    /// DELETE `?recurse` on a raw prefix.
    pub async fn kv_delete_prefix(&self, raw_prefix: &str) -> Result<()> {
        let path = format!("{}?recurse", encode_path("/v1/kv/", raw_prefix));
        let r = self
            .send("delete_tree", Method::DELETE, &path, None, self.timeout)
            .await?;
        if r.status == StatusCode::OK {
            Ok(())
        } else {
            Err(status_error("delete_tree", raw_prefix, &r))
        }
    }

    /// PUT `/v1/txn`.
    pub async fn txn(&self, operation: &str, ops: &[KvOp]) -> Result<TxnOutcome> {
        self.txn_with(operation, ops, None).await
    }

    /// PUT `/v1/txn`; `read_mode` (for transactions without writes, which Consul answers
    /// without Raft) adds `?consistent` or `?stale`.
    pub async fn txn_with(
        &self,
        operation: &str,
        ops: &[KvOp],
        read_mode: Option<Consistency>,
    ) -> Result<TxnOutcome> {
        let items: Vec<TxnItem<'_>> = ops.iter().map(|kv| TxnItem { kv }).collect();
        let body =
            serde_json::to_vec(&items).map_err(|e| Error::invalid_argument(e.to_string()))?;
        let path = match read_mode {
            None => "/v1/txn",
            Some(m) => txn_path(m),
        };
        let r = self
            .send(operation, Method::PUT, path, Some(body), self.timeout)
            .await?;
        match r.status {
            StatusCode::OK => {
                let t: TxnResponse = decode(operation, &r.body)?;
                Ok(TxnOutcome::Ok(
                    t.results
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|i| i.kv)
                        .collect(),
                ))
            }
            StatusCode::CONFLICT => {
                let t: TxnResponse = decode(operation, &r.body)?;
                Ok(TxnOutcome::Rejected(t.errors.unwrap_or_default()))
            }
            _ => {
                let key = ops.first().map_or("", |o| o.key.as_str());
                Err(status_error(operation, key, &r))
            }
        }
    }

    /// Creates a session; `ttl` is Consul's session TTL (invalidation after twice that).
    pub async fn session_create(
        &self,
        name: &str,
        behavior: &str,
        ttl: Duration,
    ) -> Result<String> {
        let body = serde_json::json!({
            "Name": name,
            "Behavior": behavior,
            "TTL": go_duration(ttl),
            "LockDelay": "0s",
        });
        let r = self
            .send(
                "create session",
                Method::PUT,
                "/v1/session/create",
                Some(body.to_string().into_bytes()),
                self.timeout,
            )
            .await?;
        if r.status != StatusCode::OK {
            return Err(status_error("create session", "", &r));
        }
        let s: SessionId = decode("create session", &r.body)?;
        Ok(s.id)
    }

    /// Destroys a session (its `delete`-behaviour keys go with it).
    pub async fn session_destroy(&self, id: &str) -> Result<()> {
        let r = self
            .send(
                "destroy session",
                Method::PUT,
                &encode_path("/v1/session/destroy/", id),
                None,
                self.timeout,
            )
            .await?;
        if r.status == StatusCode::OK {
            Ok(())
        } else {
            Err(status_error("destroy session", "", &r))
        }
    }

    /// Renews a session: `Ok(false)` when Consul no longer knows it.
    pub async fn session_renew(&self, id: &str) -> Result<bool> {
        let r = self
            .send(
                "renew session",
                Method::PUT,
                &encode_path("/v1/session/renew/", id),
                None,
                self.timeout,
            )
            .await?;
        match r.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error("renew session", "", &r)),
        }
    }
}

/// Consul's query flag of a read mode: `consistent` (a quorum round before answering, also
/// across a leader change) or `stale` (any server answers from its copy).
pub(crate) fn mode_flag(mode: Consistency) -> &'static str {
    match mode {
        Consistency::Linearizable => "consistent",
        Consistency::Stale => "stale",
    }
}

fn txn_path(mode: Consistency) -> &'static str {
    match mode {
        Consistency::Linearizable => "/v1/txn?consistent",
        Consistency::Stale => "/v1/txn?stale",
    }
}

/// Appends the query string of a (possibly blocking, possibly `recurse`) read in `mode` to
/// `path`; returns the read's time budget.
fn blocking_query(
    path: &mut String,
    recurse: bool,
    block: Option<(u64, Duration)>,
    timeout: Duration,
    mode: Consistency,
) -> Duration {
    use std::fmt::Write as _;
    if recurse {
        path.push_str("?recurse&");
    } else {
        path.push('?');
    }
    path.push_str(mode_flag(mode));
    match block {
        Some((index, wait)) if index > 0 => {
            let _ = write!(path, "&index={index}&wait={}", go_duration(wait));
            wait + wait / 16 + timeout
        }
        _ => timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let t = Duration::from_secs(10);
        let w = Duration::from_secs(16);
        let q = |recurse, block| {
            let mut p = String::from("/v1/kv/a");
            let b = blocking_query(&mut p, recurse, block, t, Consistency::Linearizable);
            (p, b)
        };
        assert_eq!(q(false, None), ("/v1/kv/a?consistent".into(), t));
        assert_eq!(
            q(true, Some((0, w))),
            ("/v1/kv/a?recurse&consistent".into(), t)
        );
        assert_eq!(
            q(false, Some((7, w))),
            (
                "/v1/kv/a?consistent&index=7&wait=16000ms".into(),
                w + Duration::from_secs(1) + t
            )
        );
        assert_eq!(
            q(true, Some((7, w))),
            (
                "/v1/kv/a?recurse&consistent&index=7&wait=16000ms".into(),
                w + Duration::from_secs(1) + t
            )
        );
        let mut p = String::from("/v1/kv/a");
        blocking_query(&mut p, true, None, t, Consistency::Stale);
        assert_eq!(p, "/v1/kv/a?recurse&stale");
        assert_eq!(txn_path(Consistency::Stale), "/v1/txn?stale");
        assert_eq!(txn_path(Consistency::Linearizable), "/v1/txn?consistent");
    }
}
