//! The HTTP layer: one reqwest client, several agent addresses with failover, the ACL token,
//! and the one function that maps Consul failures to [`kv_core::Error`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kv_core::{Error, Result};
use reqwest::{Method, StatusCode};

use crate::BACKEND;

/// A response whose status the caller decides about.
pub(crate) struct Response {
    pub status: StatusCode,
    /// `X-Consul-Index`, when present.
    pub index: Option<u64>,
    pub body: bytes::Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_string()
    }
}

/// What went wrong talking to Consul, before it becomes a [`kv_core::Error`] in [`to_error`].
pub(crate) enum Failure {
    /// The request never got an HTTP answer.
    Transport {
        endpoint: String,
        error: reqwest::Error,
        /// The connect timeout in force.
        timeout: Duration,
    },
    /// The call overran its time budget.
    Timeout { operation: String, after: Duration },
    /// An HTTP answer with an unexpected status.
    Status {
        operation: String,
        key: String,
        status: StatusCode,
        body: String,
    },
    /// A transaction error entry (`What`) that is not a compare failure.
    TxnWhat {
        operation: String,
        key: String,
        what: String,
    },
    /// A body we could not decode.
    Decode { operation: String, message: String },
}

/// Maps every Consul / transport failure to a kv error (the driver's one mapping function).
pub(crate) fn to_error(f: Failure) -> Error {
    match f {
        Failure::Transport {
            endpoint,
            error,
            timeout,
        } => {
            let message = error_chain(&error);
            if error.is_timeout() {
                return Error::Timeout {
                    operation: format!("connecting to {endpoint}"),
                    after: timeout,
                };
            }
            let lower = message.to_ascii_lowercase();
            if lower.contains("certificate required")
                || lower.contains("bad certificate")
                || lower.contains("certificaterequired")
                || lower.contains("badcertificate")
            {
                return Error::Unauthorized {
                    message: format!("{endpoint} refused the client certificate: {message}"),
                    source: Some(Box::new(error)),
                };
            }
            Error::Unreachable {
                endpoint,
                message,
                source: Some(Box::new(error)),
            }
        }
        Failure::Timeout { operation, after } => Error::Timeout { operation, after },
        Failure::Status {
            operation,
            key,
            status,
            body,
        } => match status.as_u16() {
            401 | 403 => Error::Unauthorized {
                message: format!("{operation}: {body}"),
                source: None,
            },
            413 => {
                let max = body
                    .split("max size: ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(crate::MAX_VALUE_SIZE);
                let size = body
                    .split("Request body(")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                Error::ValueTooLarge {
                    key,
                    size,
                    max,
                    backend: BACKEND,
                }
            }
            400 => Error::InvalidArgument {
                message: format!("{operation}: Consul rejected the request: {body}"),
            },
            502..=504 => Error::Unreachable {
                endpoint: operation,
                message: format!("HTTP {status}: {body}"),
                source: None,
            },
            _ => Error::Backend {
                backend: BACKEND,
                message: format!("{operation}: HTTP {status}: {body}"),
                source: None,
            },
        },
        Failure::TxnWhat {
            operation,
            key,
            what,
        } => {
            if what.contains("Permission denied") || what.contains("ACL not found") {
                Error::Unauthorized {
                    message: format!("{operation} on {key:?}: {what}"),
                    source: None,
                }
            } else if what.contains("too large") {
                Error::ValueTooLarge {
                    key,
                    size: 0,
                    max: crate::MAX_VALUE_SIZE,
                    backend: BACKEND,
                }
            } else {
                Error::Backend {
                    backend: BACKEND,
                    message: format!("{operation} on {key:?}: {what}"),
                    source: None,
                }
            }
        }
        Failure::Decode { operation, message } => Error::Backend {
            backend: BACKEND,
            message: format!("{operation}: cannot decode Consul's answer: {message}"),
            source: None,
        },
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Characters kept as-is in a key's URL path; everything else is percent-encoded.
fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/')
}

/// Percent-encodes a stored key for `/v1/kv/<key>` (Consul decodes the path).
pub(crate) fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The client for a set of Consul agents.
pub(crate) struct Http {
    client: reqwest::Client,
    /// `http://h:p` / `https://h:p`, no trailing slash.
    bases: Vec<String>,
    current: AtomicUsize,
    token: Option<String>,
    pub timeout: Duration,
    /// Connect timeout of the client (for error messages).
    pub connect_timeout: Duration,
}

impl Http {
    pub fn new(
        client: reqwest::Client,
        bases: Vec<String>,
        token: Option<String>,
        timeout: Duration,
    ) -> Self {
        Http {
            client,
            bases,
            current: AtomicUsize::new(0),
            token,
            timeout,
            connect_timeout: timeout,
        }
    }

    pub fn endpoints(&self) -> String {
        self.bases.join(",")
    }

    /// Sends one request, trying the next agent on connection errors, bounded by `budget`.
    pub async fn send(
        &self,
        operation: &str,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        budget: Duration,
    ) -> Result<Response> {
        match tokio::time::timeout(budget, self.send_inner(method, path_and_query, body)).await {
            Ok(r) => r,
            Err(_) => Err(to_error(Failure::Timeout {
                operation: operation.to_string(),
                after: budget,
            })),
        }
    }

    async fn send_inner(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response> {
        // Bytes: cloning for a retry on the next agent does not copy the body.
        let body = body.map(bytes::Bytes::from);
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let base = &self.bases[idx];
            let mut req = self
                .client
                .request(method.clone(), format!("{base}{path_and_query}"));
            if let Some(t) = &self.token {
                req = req.header("X-Consul-Token", t);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            match req.send().await {
                Ok(resp) => {
                    if i > 0 {
                        self.current.store(idx, Ordering::Relaxed);
                    }
                    let status = resp.status();
                    let index = resp
                        .headers()
                        .get("x-consul-index")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    let body = match resp.bytes().await {
                        Ok(b) => b,
                        Err(error) => {
                            return Err(to_error(Failure::Transport {
                                endpoint: base.clone(),
                                error,
                                timeout: self.connect_timeout,
                            }))
                        }
                    };
                    return Ok(Response {
                        status,
                        index,
                        body,
                    });
                }
                Err(error) => {
                    let retry_next = error.is_connect() && !is_tls_rejection(&error);
                    let e = to_error(Failure::Transport {
                        endpoint: base.clone(),
                        error,
                        timeout: self.connect_timeout,
                    });
                    if !retry_next {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::config("no Consul address configured")))
    }
}

/// A TLS verification failure is a configuration problem: do not hide it behind failover.
fn is_tls_rejection(e: &reqwest::Error) -> bool {
    let m = error_chain(e).to_ascii_lowercase();
    m.contains("certificate") || m.contains("tls")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded() {
        assert_eq!(encode_path("a/b c/%?#"), "a/b%20c/%25%3F%23");
        assert_eq!(encode_path("ünï"), "%C3%BCn%C3%AF");
    }

    #[test]
    fn statuses_map_to_kinds() {
        let st = |s: u16, body: &str| {
            to_error(Failure::Status {
                operation: "put".into(),
                key: "k".into(),
                status: StatusCode::from_u16(s).unwrap(),
                body: body.into(),
            })
        };
        assert!(matches!(
            st(403, "Permission denied"),
            Error::Unauthorized { .. }
        ));
        match st(
            413,
            "Request body(600000 bytes) too large, max size: 524288 bytes. See x",
        ) {
            Error::ValueTooLarge { size, max, .. } => {
                assert_eq!(size, 600000);
                assert_eq!(max, 524288);
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(st(500, "boom"), Error::Backend { .. }));
        assert!(matches!(st(400, "bad"), Error::InvalidArgument { .. }));
    }
}
