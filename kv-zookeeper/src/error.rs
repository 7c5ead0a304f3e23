//! The one mapping from zookeeper-client errors to kv errors.

use std::time::Duration;

use kv_core::Error;
use zookeeper_client as zk;

use crate::BACKEND;

/// What an error is about, for [`map`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Context<'a> {
    /// The key involved (may be empty).
    pub key: &'a str,
    /// The store's servers, for `Unreachable`.
    pub endpoints: &'a str,
    /// The store timeout, for `Timeout`.
    pub timeout: Duration,
    /// The request wrote a TTL znode (an `Unimplemented` answer then names the server setting).
    pub ttl: bool,
}

/// Maps a client error to kv's error, deciding retryability here.
pub(crate) fn map(e: zk::Error, cx: Context<'_>) -> Error {
    use zk::Error as Z;
    let key = cx.key;
    let unreachable = |message: String, e: Z| Error::Unreachable {
        endpoint: cx.endpoints.to_string(),
        message,
        source: Some(Box::new(e)),
    };
    match e {
        Z::NoNode => Error::not_found(key),
        Z::NodeExists => Error::KeyExists {
            key: key.to_string(),
        },
        Z::ConnectionLoss => unreachable("connection to ZooKeeper lost".into(), e),
        Z::NoHosts => unreachable(
            "no ZooKeeper server could be reached (connection refused, or TLS handshake failed)"
                .into(),
            e,
        ),
        Z::SessionExpired | Z::SessionMoved => unreachable(
            "ZooKeeper session expired; a new session is being opened".into(),
            e,
        ),
        Z::Custom(_) => unreachable(format!("{e}"), e),
        Z::Timeout => Error::Timeout {
            operation: format!("ZooKeeper request on {key:?}"),
            after: cx.timeout,
        },
        Z::NoAuth => Error::Unauthorized {
            message: format!("not authorized to access {key:?} (znode ACL)"),
            source: Some(Box::new(e)),
        },
        Z::AuthFailed => Error::Unauthorized {
            message: "ZooKeeper authentication failed".into(),
            source: Some(Box::new(e)),
        },
        Z::ClientClosed => Error::Closed,
        Z::Unimplemented if cx.ttl => Error::unsupported(
            "TTL keys on this ZooKeeper server (enable TTL nodes with extendedTypesEnabled=true in zoo.cfg)",
            BACKEND,
        ),
        Z::Unimplemented => Error::unsupported(
            "this request (the ZooKeeper server is too old or lacks a setting)",
            BACKEND,
        ),
        Z::NoChildrenForEphemerals => Error::invalid_argument(format!(
            "cannot write {key:?}: its parent is held as a lock value (an ephemeral znode cannot have children)"
        )),
        Z::BadArguments(m) => Error::invalid_argument(format!("{key:?}: {m}")),
        // A busy server, or a write sent to a read-only server between leaders.
        Z::Throttled | Z::NotReadOnly => {
            Error::retryable_backend(BACKEND, format!("{e} (key {key:?})"), e)
        }
        other => Error::backend(BACKEND, format!("{other} (key {key:?})"), other),
    }
}

/// A write that kept meeting concurrent changes of its znode: the same call may succeed later.
pub(crate) fn racing(what: String) -> Error {
    Error::retryable_backend(BACKEND, what, zk::Error::RuntimeInconsistent)
}

/// Errors after which a read is retried on the store's current session.
pub(crate) fn is_retryable_read(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::ConnectionLoss | zk::Error::SessionExpired | zk::Error::SessionMoved
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(ttl: bool) -> Context<'static> {
        Context {
            key: "k",
            endpoints: "h:2181",
            timeout: Duration::from_secs(3),
            ttl,
        }
    }

    #[test]
    fn mapping() {
        assert!(matches!(
            map(zk::Error::NoNode, cx(false)),
            Error::NotFound { .. }
        ));
        assert!(map(zk::Error::ConnectionLoss, cx(false)).is_transient());
        assert!(matches!(
            map(zk::Error::Timeout, cx(false)),
            Error::Timeout { after, .. } if after == Duration::from_secs(3)
        ));
        match map(zk::Error::Unimplemented, cx(true)) {
            Error::Unsupported { operation, .. } => {
                assert!(operation.contains("extendedTypesEnabled"))
            }
            e => panic!("{e:?}"),
        }
        assert!(map(zk::Error::Throttled, cx(false)).is_transient());
        assert!(!map(zk::Error::InvalidAcl, cx(false)).is_transient());
        assert!(racing("put kept racing".into()).is_transient());
        assert!(matches!(
            map(zk::Error::ClientClosed, cx(false)),
            Error::Closed
        ));
    }
}
