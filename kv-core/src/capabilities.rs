//! What a backend can do.

use std::time::Duration;

use crate::error::{Error, Result};

/// What a backend supports. A call outside it returns [`Error::Unsupported`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `watch` works.
    pub watch: bool,
    /// `watch_tree` works.
    pub watch_tree: bool,
    /// Watches deliver every intermediate change (`false`: fast changes may be coalesced,
    /// the latest state is still always delivered).
    pub watch_every_change: bool,
    /// `new_lock` works.
    pub lock: bool,
    /// `PutOptions::ttl` works.
    pub ttl: bool,
    /// `txn` works.
    pub txn: bool,
    /// Largest value accepted, in bytes.
    pub max_value_size: usize,
    /// Most compares + operations in one transaction.
    pub max_txn_ops: usize,
    /// Shortest TTL honoured (for keys and locks).
    pub min_ttl: Duration,
}

impl Capabilities {
    /// `Unsupported` unless the TTL (if any) is supported and at least `min_ttl`.
    pub fn check_ttl(&self, ttl: Option<Duration>, backend: &'static str) -> Result<()> {
        match ttl {
            None => Ok(()),
            Some(_) if !self.ttl => Err(Error::unsupported("TTL", backend)),
            Some(t) if t < self.min_ttl => Err(Error::unsupported(
                format!(
                    "TTL of {t:?} (the shortest this backend honours is {:?})",
                    self.min_ttl
                ),
                backend,
            )),
            Some(_) => Ok(()),
        }
    }
}
