//! The driver's one error mapping: every Consul and transport failure becomes a
//! [`kv_core::Error`] in [`to_error`], which also decides retryability.

use std::time::Duration;

use kv_core::raw::error_chain;
use kv_core::Error;
use reqwest::StatusCode;

use crate::api::TxnErrorItem;
use crate::{BACKEND, MAX_VALUE_SIZE};

/// What went wrong talking to Consul, before it becomes a [`kv_core::Error`].
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
    /// An answer without the result it must carry.
    Missing { operation: String },
    /// A write that kept losing against concurrent writers.
    Contended { operation: String, key: String },
}

/// Consul's answers while no leader is elected or the leader changes (HTTP 500): the same
/// call succeeds once a leader is in place. The last four come from an agent forwarding to a
/// leader that just died or was cut off, until it notices (about a raft heartbeat timeout):
/// `rpc error getting client: failed to get conn: dial tcp ...: connect: connection refused`,
/// or the forwarded call's connection broke (`rpc error making call: EOF`; such a write may
/// still have been applied, as after any failed call).
const LEADERLESS: [&str; 8] = [
    "No cluster leader",
    "leadership lost",
    "Raft leader not found",
    "node is not the leader",
    "rpc error getting client",
    "lead thread didn't get connection",
    "rpc error making call: EOF",
    "rpc error making call: stream closed",
];

/// Maps a failure to a kv error (the driver's one mapping function).
pub(crate) fn to_error(f: Failure) -> Error {
    match f {
        Failure::Transport {
            endpoint,
            error,
            timeout,
        } => {
            if error.is_timeout() {
                return Error::Timeout {
                    operation: format!("connecting to {endpoint}"),
                    after: timeout,
                };
            }
            let message = error_chain(&error);
            if is_certificate_refusal(&causes(&error)) {
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
        } => status_error(operation, key, status, body),
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
                    max: MAX_VALUE_SIZE,
                    backend: BACKEND,
                }
            } else {
                backend(false, format!("{operation} on {key:?}: {what}"))
            }
        }
        Failure::Decode { operation, message } => backend(
            false,
            format!("{operation}: cannot decode Consul's answer: {message}"),
        ),
        Failure::Missing { operation } => backend(
            false,
            format!("{operation}: Consul's transaction answer has no result"),
        ),
        Failure::Contended { operation, key } => {
            let on = if key.is_empty() {
                String::new()
            } else {
                format!(" {key:?}")
            };
            backend(
                true,
                format!("{operation}{on}: the keys kept changing concurrently; gave up"),
            )
        }
    }
}

fn status_error(operation: String, key: String, status: StatusCode, body: String) -> Error {
    match status.as_u16() {
        401 | 403 => Error::Unauthorized {
            message: format!("{operation}: {body}"),
            source: None,
        },
        413 => {
            let number_after = |marker: &str| {
                body.split(marker)
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
            };
            Error::ValueTooLarge {
                key,
                size: number_after("Request body(").unwrap_or(0),
                max: number_after("max size: ").unwrap_or(MAX_VALUE_SIZE),
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
        // Rate limited (429), or between leaders (500 "No cluster leader"): transient.
        429 => backend(true, format!("{operation}: HTTP {status}: {body}")),
        500 if LEADERLESS.iter().any(|m| body.contains(m)) => {
            backend(true, format!("{operation}: HTTP {status}: {body}"))
        }
        _ => backend(false, format!("{operation}: HTTP {status}: {body}")),
    }
}

fn backend(retryable: bool, message: String) -> Error {
    Error::Backend {
        retryable,
        backend: BACKEND,
        message,
        source: None,
    }
}

/// The causes of a transport error, lowercased, without reqwest's own message: that message
/// holds the request URL, hence the key, and a key may contain any word ("tls", ...).
pub(crate) fn causes(e: &reqwest::Error) -> String {
    std::error::Error::source(e)
        .map(|c| error_chain(c).to_ascii_lowercase())
        .unwrap_or_default()
}

fn is_certificate_refusal(causes: &str) -> bool {
    [
        "certificate required",
        "bad certificate",
        "certificaterequired",
        "badcertificate",
    ]
    .iter()
    .any(|m| causes.contains(m))
}

/// A TLS verification failure is a configuration problem: not hidden behind failover.
pub(crate) fn is_tls_rejection(e: &reqwest::Error) -> bool {
    let m = causes(e);
    m.contains("certificate") || m.contains("tls")
}

/// A txn error entry that retrying cannot fix (ACL, size, session problems).
pub(crate) fn is_fatal_what(what: &str) -> bool {
    what.contains("Permission denied")
        || what.contains("ACL not found")
        || what.contains("too large")
        || what.contains("invalid session")
        || what.contains("missing session")
}

/// A transaction answer without its result.
pub(crate) fn missing_result(operation: &str) -> Error {
    to_error(Failure::Missing {
        operation: operation.to_string(),
    })
}

/// A write that kept losing against concurrent writers.
pub(crate) fn contended(operation: &str, key: &str) -> Error {
    to_error(Failure::Contended {
        operation: operation.to_string(),
        key: key.to_string(),
    })
}

/// The error of a refused transaction: every error entry's reason.
pub(crate) fn txn_error(operation: &str, key: &str, errs: Vec<TxnErrorItem>) -> Error {
    let what = errs
        .into_iter()
        .map(|e| e.what)
        .collect::<Vec<_>>()
        .join("; ");
    what_error(operation, key, &what)
}

/// The error of one transaction error entry (`What`).
pub(crate) fn what_error(operation: &str, key: &str, what: &str) -> Error {
    to_error(Failure::TxnWhat {
        operation: operation.to_string(),
        key: key.to_string(),
        what: what.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(s: u16, body: &str) -> Error {
        to_error(Failure::Status {
            operation: "put".into(),
            key: "k".into(),
            status: StatusCode::from_u16(s).unwrap(),
            body: body.into(),
        })
    }

    #[test]
    fn statuses_map_to_kinds() {
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

    #[test]
    fn transient_answers_are_retryable() {
        assert!(st(500, "No cluster leader").is_transient());
        assert!(st(
            500,
            "rpc error making call: leadership lost while committing log"
        )
        .is_transient());
        // Forwarding to a leader that was just killed (seen in the linearizability test).
        assert!(st(
            500,
            "rpc error getting client: failed to get conn: dial tcp 127.0.0.1:0->127.0.0.1:35911: connect: connection refused"
        )
        .is_transient());
        assert!(st(
            500,
            "rpc error getting client: failed to get conn: rpc error: lead thread didn't get connection"
        )
        .is_transient());
        assert!(st(500, "rpc error making call: EOF").is_transient());
        assert!(st(500, "rpc error making call: stream closed").is_transient());
        assert!(!st(500, "rpc error making call: Permission denied").is_transient());
        assert!(st(429, "rate limit exceeded").is_transient());
        assert!(st(503, "unavailable").is_transient());
        assert!(!st(500, "boom").is_transient());
        assert!(!st(403, "Permission denied").is_transient());
        assert!(!what_error("put", "k", "Permission denied").is_transient());
    }
}
