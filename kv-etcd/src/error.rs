//! The one place where etcd-client errors become kv errors.

use std::time::Duration;

use etcd_client::Error as EtcdError;
use kv_core::raw::error_chain;
use kv_core::Error;
use tonic::Code;

use crate::BACKEND;

/// What was being done when an error happened (for the error's fields).
pub(crate) struct Ctx<'a> {
    /// Endpoints, for `Unreachable`.
    pub endpoints: &'a str,
    /// The call (`"put"`, ...), for `Timeout`.
    pub op: &'a str,
    /// The normalized key, if any.
    pub key: &'a str,
    /// Size of the value being written, for `ValueTooLarge`.
    pub size: Option<usize>,
    /// The store's timeout.
    pub timeout: Duration,
}

/// True when etcd says the lease no longer exists (expired or revoked).
pub(crate) fn is_lease_gone(e: &EtcdError) -> bool {
    error_chain(e).contains("lease not found")
}

fn contains_any(haystack: &str, needles: &[&str]) -> bool {
    let h = haystack.to_ascii_lowercase();
    needles.iter().any(|n| h.contains(n))
}

/// Messages that mean the server refused our credentials (password, token or certificate).
const AUTH_MARKERS: &[&str] = &[
    "authentication failed",
    "invalid user id or password",
    "permission denied",
    "user name is empty",
    "invalid auth token",
    "auth: revision in header is old",
    "user name not found",
    "certificaterequired",
    "certificate required",
    "bad certificate",
    "badcertificate",
    "unknown ca",
    "unknownca",
    "decrypterror",
    "access denied",
];

/// Messages that mean the server (or the path to it) is not available.
const UNREACHABLE_MARKERS: &[&str] = &[
    "transport error",
    "connection refused",
    "connection reset",
    "broken pipe",
    "tcp connect",
    "dns error",
    "error trying to connect",
    "no leader",
    "leader changed",
    "not capable",
    "stopped",
    "h2 protocol error",
    "connection closed",
    "channel closed",
    "service was not ready",
    "invalid peer certificate",
    "tls handshake",
    "unexpected eof",
];

/// Server answers that are momentary by nature (the same call may succeed later).
const RETRYABLE_MARKERS: &[&str] = &[
    "too many requests",
    "request timed out",
    "timed out",
    "leader",
    "server is busy",
    "retry",
];

/// Maps an etcd-client error to a kv error: the one place that decides the kind, and for
/// [`Error::Backend`] whether the call is worth retrying.
pub(crate) fn map_err(e: EtcdError, ctx: &Ctx<'_>) -> Error {
    let text = error_chain(&e);
    let unreachable = |message: String, source: EtcdError| Error::Unreachable {
        endpoint: ctx.endpoints.to_string(),
        message,
        source: Some(Box::new(source)),
    };
    if contains_any(&text, AUTH_MARKERS) {
        return Error::Unauthorized {
            message: text,
            source: Some(Box::new(e)),
        };
    }
    if contains_any(
        &text,
        &[
            "request is too large",
            "message length too large",
            "larger than max",
        ],
    ) {
        if let Some(size) = ctx.size {
            return Error::ValueTooLarge {
                key: ctx.key.to_string(),
                size,
                max: crate::MAX_VALUE_SIZE,
                backend: BACKEND,
            };
        }
        return Error::invalid_argument(format!(
            "{}: the request is too large for etcd ({text})",
            ctx.op
        ));
    }
    match &e {
        EtcdError::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::Cancelled | Code::Aborted => unreachable(text, e),
            Code::DeadlineExceeded => Error::Timeout {
                operation: ctx.op.to_string(),
                after: ctx.timeout,
            },
            Code::Unauthenticated | Code::PermissionDenied => Error::Unauthorized {
                message: text,
                source: Some(Box::new(e)),
            },
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition
                if contains_any(&text, &["too many operations", "duplicate key"]) =>
            {
                Error::invalid_argument(text)
            }
            // "too many requests": the server sheds load, the same call may pass later.
            Code::ResourceExhausted => {
                Error::retryable_backend(BACKEND, format!("{}: {text}", ctx.op), e)
            }
            _ if contains_any(&text, UNREACHABLE_MARKERS) => unreachable(text, e),
            _ if contains_any(&text, RETRYABLE_MARKERS) => {
                Error::retryable_backend(BACKEND, format!("{} failed: {text}", ctx.op), e)
            }
            _ => Error::backend(BACKEND, format!("{} failed: {text}", ctx.op), e),
        },
        EtcdError::TransportError(_) | EtcdError::IoError(_) => unreachable(text, e),
        EtcdError::InvalidArgs(_) | EtcdError::InvalidUri(_) => {
            Error::config(format!("etcd client configuration: {text}"))
        }
        _ if contains_any(&text, UNREACHABLE_MARKERS) => unreachable(text, e),
        _ if contains_any(&text, RETRYABLE_MARKERS) => {
            Error::retryable_backend(BACKEND, format!("{} failed: {text}", ctx.op), e)
        }
        _ => Error::backend(BACKEND, format!("{} failed: {text}", ctx.op), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx {
            endpoints: "127.0.0.1:1",
            op: "put",
            key: "k",
            size: Some(10),
            timeout: Duration::from_secs(1),
        }
    }

    fn status(code: Code, msg: &str) -> EtcdError {
        EtcdError::GRpcStatus(tonic::Status::new(code, msg))
    }

    #[test]
    fn kinds() {
        let c = ctx();
        assert!(matches!(
            map_err(status(Code::Unavailable, "connection refused"), &c),
            Error::Unreachable { .. }
        ));
        assert!(matches!(
            map_err(status(Code::DeadlineExceeded, "x"), &c),
            Error::Timeout { .. }
        ));
        assert!(matches!(
            map_err(
                status(
                    Code::InvalidArgument,
                    "etcdserver: authentication failed, invalid user ID or password"
                ),
                &c
            ),
            Error::Unauthorized { .. }
        ));
        assert!(matches!(
            map_err(
                status(Code::PermissionDenied, "etcdserver: permission denied"),
                &c
            ),
            Error::Unauthorized { .. }
        ));
        assert!(matches!(
            map_err(
                status(Code::InvalidArgument, "etcdserver: request is too large"),
                &c
            ),
            Error::ValueTooLarge { size: 10, .. }
        ));
        assert!(matches!(
            map_err(status(Code::Internal, "boom"), &c),
            Error::Backend {
                retryable: false,
                ..
            }
        ));
        for e in [
            status(Code::ResourceExhausted, "etcdserver: too many requests"),
            status(Code::Unknown, "etcdserver: request timed out"),
        ] {
            let m = map_err(e, &c);
            assert!(
                matches!(
                    m,
                    Error::Backend {
                        retryable: true,
                        ..
                    }
                ) && m.is_transient(),
                "{m:?}"
            );
        }
        assert!(is_lease_gone(&status(
            Code::NotFound,
            "etcdserver: requested lease not found"
        )));
        assert!(!is_lease_gone(&status(Code::Internal, "boom")));
        assert!(matches!(
            map_err(EtcdError::InvalidArgs("x".into()), &c),
            Error::Config { .. }
        ));
    }
}
