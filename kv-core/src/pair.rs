//! Stored pairs and per-call options.

use std::time::Duration;

/// A key, its value and its version, as read from a store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KvPair {
    /// The normalized key (see [`crate::key`]), relative to the store's namespace.
    pub key: String,
    /// The value bytes.
    pub value: Vec<u8>,
    /// Changes on every write of this key, including a delete and re-create; never 0.
    /// Compare-and-swap calls compare it.
    pub version: u64,
}

impl KvPair {
    /// Builds a pair.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>, version: u64) -> Self {
        KvPair {
            key: key.into(),
            value: value.into(),
            version,
        }
    }

    /// The value as UTF-8, lossily.
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// Options of a write (`put`, `atomic_put`, a put in a transaction).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Expire the key this long after the write. `None`: the key stays until deleted.
    ///
    /// Every write sets the TTL anew: a later write without TTL makes the key permanent.
    pub ttl: Option<Duration>,
}

impl PutOptions {
    /// Options with a TTL.
    pub fn with_ttl(ttl: Duration) -> Self {
        PutOptions { ttl: Some(ttl) }
    }
}

/// Options of [`Store::new_lock`](crate::Store::new_lock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOptions {
    /// Stored at the lock key while the lock is held; readable by others with `get`.
    pub value: Vec<u8>,
    /// How long the lock survives its holder going silent. Default 15 s.
    pub ttl: Duration,
    /// Renew the lock in the background while held (default `true`). With `false` the lock
    /// is a lease: it is lost `ttl` after acquisition unless unlocked earlier.
    pub keep_alive: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            value: Vec::new(),
            ttl: Duration::from_secs(15),
            keep_alive: true,
        }
    }
}

impl LockOptions {
    /// Default options with a value.
    pub fn with_value(value: impl Into<Vec<u8>>) -> Self {
        LockOptions {
            value: value.into(),
            ..Default::default()
        }
    }

    /// Sets the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets whether the lock renews itself.
    pub fn keep_alive(mut self, keep_alive: bool) -> Self {
        self.keep_alive = keep_alive;
        self
    }
}
