//! The one error type every driver returns.

use std::time::Duration;

/// A boxed error from a backend client, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error and its `source` chain in one line (`outer: inner: root`), skipping a source whose
/// text the line already holds. Drivers use it to put a client error's causes in a message.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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

/// `Result` with kv's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a transaction compare did not hold (see [`Error::CompareFailed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompareFailure {
    /// `Compare::Version` failed: the key holds another version, or is absent (`actual: None`).
    VersionMismatch {
        /// The version the compare expected.
        expected: u64,
        /// The version found, `None` when the key is absent.
        actual: Option<u64>,
    },
    /// `Compare::Absent` failed: the key exists.
    Exists,
    /// `Compare::Present` failed: the key is absent.
    Missing,
}

impl std::fmt::Display for CompareFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompareFailure::VersionMismatch {
                expected,
                actual: Some(a),
            } => {
                write!(f, "expected version {expected}, found version {a}")
            }
            CompareFailure::VersionMismatch {
                expected,
                actual: None,
            } => {
                write!(f, "expected version {expected}, but the key is absent")
            }
            CompareFailure::Exists => f.write_str("expected the key to be absent, but it exists"),
            CompareFailure::Missing => f.write_str("expected the key to exist, but it is absent"),
        }
    }
}

/// Every failure a [`Store`](crate::Store) call can report, with matchable kinds.
///
/// Drivers map their client's errors in one function each; anything that fits no kind
/// below is [`Error::Backend`], with the original error as `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key does not exist (get, delete, atomic ops on a deleted key).
    #[error("key not found: {key:?}")]
    NotFound {
        /// The normalized key.
        key: String,
    },
    /// A create-only write (`atomic_put` with `previous = None`) found the key present.
    #[error("key already exists: {key:?}")]
    KeyExists {
        /// The normalized key.
        key: String,
    },
    /// A compare-and-swap found another version than the caller's.
    #[error("key {key:?} was modified: expected version {expected}, found version {actual}")]
    KeyModified {
        /// The normalized key.
        key: String,
        /// The version the caller passed.
        expected: u64,
        /// The version currently stored.
        actual: u64,
    },
    /// The key (or prefix) breaks kv's key rules; see [`crate::key`].
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key exactly as the caller passed it.
        key: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The value is larger than the backend accepts; nothing was sent.
    #[error("value for key {key:?} is {size} bytes, larger than the {max} bytes the {backend} backend accepts")]
    ValueTooLarge {
        /// The normalized key.
        key: String,
        /// Size of the rejected value.
        size: usize,
        /// Largest value the backend accepts.
        max: usize,
        /// Backend name.
        backend: &'static str,
    },
    /// The backend cannot do this; nothing was done.
    #[error("{operation} is not supported by the {backend} backend")]
    Unsupported {
        /// The call or option that is unsupported.
        operation: String,
        /// Backend name.
        backend: &'static str,
    },
    /// The server could not be reached (connection refused, DNS, TLS handshake, ...).
    #[error("cannot reach {endpoint}: {message}")]
    Unreachable {
        /// The endpoint(s) tried.
        endpoint: String,
        /// What went wrong.
        message: String,
        /// The client's error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The call did not complete within the store's timeout.
    ///
    /// A write that timed out may or may not have happened, and may still happen after this
    /// error is returned (the server can apply a request it already received once it recovers).
    /// Read the key back, or guard the retry with `previous`, before assuming either.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// The call that timed out.
        operation: String,
        /// The timeout in force.
        after: Duration,
    },
    /// A lock this handle held is no longer held (expired, deleted or session lost).
    #[error("lock {key:?} was lost: {reason}")]
    LockLost {
        /// The lock key.
        key: String,
        /// Why it was lost.
        reason: String,
    },
    /// The server refused the credentials (bad password, token, certificate).
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The server's or client's explanation.
        message: String,
        /// The client's error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// A bad URL, option or configuration value.
    #[error("configuration error: {message}")]
    Config {
        /// What is wrong, naming the offending option.
        message: String,
    },
    /// A call argument is malformed (e.g. a transaction writing one key twice).
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What is wrong.
        message: String,
    },
    /// A transaction was rejected because one of its compares did not hold; nothing was applied.
    #[error("transaction rejected: compare #{index} on key {key:?} failed: {reason}")]
    CompareFailed {
        /// Position of the failed compare in [`Txn::compares`](crate::Txn).
        index: usize,
        /// The compared key.
        key: String,
        /// What was found instead.
        reason: CompareFailure,
    },
    /// A guarded write was rejected: a [`Txn::when_held`](crate::Txn::when_held) compare found
    /// that the lock at `key` is no longer held by the acquisition with fencing token `token`
    /// (it was lost, released or taken by another holder, whose write changed the version to
    /// `actual`; `None` when the key is absent). Nothing was applied. This is how a holder
    /// paused past its TTL learns that it was superseded; other compares of the same
    /// transaction failing give [`Error::CompareFailed`] instead.
    #[error("guarded write rejected: compare #{index}: the lock {key:?} is no longer held by the acquisition with fencing token {token} ({})", match actual { Some(a) => format!("the key now has version {a}"), None => "the key is absent".to_string() })]
    FencingFailed {
        /// Position of the guard in [`Txn::compares`](crate::Txn).
        index: usize,
        /// The lock key.
        key: String,
        /// The fencing token the guard expected.
        token: u64,
        /// The key's version found instead, `None` if absent.
        actual: Option<u64>,
    },
    /// The store was closed with [`Store::close`](crate::Store::close).
    #[error("the store is closed")]
    Closed,
    /// Any other backend failure, with the backend's error as source.
    #[error("{backend} backend error: {message}")]
    Backend {
        /// True when the driver knows that the same call may succeed later (a server busy
        /// or between leaders); decided where the error is created.
        retryable: bool,
        /// Backend name.
        backend: &'static str,
        /// Short description.
        message: String,
        /// The client's error.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// `Unsupported` for `operation` on `backend`.
    pub fn unsupported(operation: impl Into<String>, backend: &'static str) -> Self {
        Error::Unsupported {
            operation: operation.into(),
            backend,
        }
    }

    /// `Config` with a message.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    /// `InvalidArgument` with a message.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            message: message.into(),
        }
    }

    /// `Backend` wrapping a client error.
    pub fn backend(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            retryable: false,
            backend,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// `NotFound` for `key`.
    pub fn not_found(key: impl Into<String>) -> Self {
        Error::NotFound { key: key.into() }
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for [`Error::FencingFailed`] (a guarded write by a lost or superseded lock).
    pub fn is_fencing_failure(&self) -> bool {
        matches!(self, Error::FencingFailed { .. })
    }

    /// True when retrying the same call later may succeed: [`Error::Unreachable`],
    /// [`Error::Timeout`], and [`Error::Backend`] errors their driver marked `retryable`.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. }
                | Error::Timeout { .. }
                | Error::Backend {
                    retryable: true,
                    ..
                }
        )
    }

    /// `Backend` that the same call may get past later (see [`Error::is_transient`]).
    pub fn retryable_backend(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            retryable: true,
            backend,
            message: message.into(),
            source: Some(source.into()),
        }
    }
}
