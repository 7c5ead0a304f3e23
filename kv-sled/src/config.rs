//! The configuration of a sled store and its builder.

use std::path::PathBuf;
use std::time::Duration;

use kv_core::retry::DEFAULT_TIMEOUT;
use kv_core::{Consistency, Result};

/// Configuration of a [`SledStore`](crate::SledStore): `SledConfig::new(path)` plus `with_*`
/// setters, or [`SledConfig::from_url`]. It holds no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SledConfig {
    /// Directory of the database (created if missing).
    pub path: PathBuf,
    /// Bound on every call (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Every write waits until it is on stable storage, `fdatasync` included (default `true`;
    /// see [Durability](crate#durability) for exactly what each setting guarantees).
    pub flush: bool,
    /// Every key lives under this namespace (default `""`: none).
    pub namespace: String,
    /// Read consistency. Accepted for URLs written for network backends; both values give the
    /// same linearizable reads (one process owns the database).
    pub consistency: Consistency,
}

impl SledConfig {
    /// Default configuration for the database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SledConfig {
            path: path.into(),
            timeout: DEFAULT_TIMEOUT,
            flush: true,
            namespace: String::new(),
            consistency: Consistency::default(),
        }
    }

    /// Parses a `sled://` URL (see the [crate docs](crate#urls)).
    pub fn from_url(url: &str) -> Result<Self> {
        crate::parse::parse_url(url)
    }

    /// Sets the call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets whether every write waits for stable storage ([Durability](crate#durability)).
    pub fn with_flush(mut self, flush: bool) -> Self {
        self.flush = flush;
        self
    }

    /// Sets the namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the read consistency (it changes nothing on sled: every read is linearizable).
    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder() {
        let c = SledConfig::new("/d")
            .with_timeout(Duration::from_secs(2))
            .with_flush(false)
            .with_namespace("app")
            .with_consistency(Consistency::Stale);
        assert_eq!(c.path, PathBuf::from("/d"));
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert!(!c.flush);
        assert_eq!(c.namespace, "app");
        assert_eq!(c.consistency, Consistency::Stale);
    }
}
