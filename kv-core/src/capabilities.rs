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
    /// Longest TTL honoured (keys and locks), `None` for no limit.
    pub max_ttl: Option<Duration>,
    /// Shortest lock TTL when it differs from [`min_ttl`](Self::min_ttl) (zero: `min_ttl`).
    /// Consul, for example, honours 10 s session TTLs for locks but 20 s TTLs for keys.
    pub lock_min_ttl: Duration,
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
            Some(t) if self.max_ttl.is_some_and(|m| t > m) => Err(Error::unsupported(
                format!(
                    "TTL of {t:?} (the longest this backend honours is {:?})",
                    self.max_ttl.unwrap_or_default()
                ),
                backend,
            )),
            Some(_) => Ok(()),
        }
    }

    /// The shortest lock TTL: [`lock_min_ttl`](Self::lock_min_ttl), or `min_ttl` when zero.
    pub fn shortest_lock_ttl(&self) -> Duration {
        if self.lock_min_ttl.is_zero() {
            self.min_ttl
        } else {
            self.lock_min_ttl
        }
    }

    /// `Unsupported` unless locks are supported and `ttl` is within the lock TTL limits.
    pub fn check_lock_ttl(&self, ttl: Duration, backend: &'static str) -> Result<()> {
        if !self.lock {
            return Err(Error::unsupported("locks", backend));
        }
        let min = self.shortest_lock_ttl();
        let max = self.max_ttl;
        if ttl < min || max.is_some_and(|m| ttl > m) {
            let range = match max {
                Some(m) => format!("{min:?} to {m:?}"),
                None => format!("at least {min:?}"),
            };
            return Err(Error::unsupported(
                format!("lock TTL of {ttl:?} (this backend honours {range})"),
                backend,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_limits() {
        let caps = Capabilities {
            ttl: true,
            lock: true,
            min_ttl: Duration::from_secs(1),
            max_ttl: Some(Duration::from_secs(100)),
            lock_min_ttl: Duration::from_secs(10),
            ..Capabilities::default()
        };
        assert!(caps.check_ttl(Some(Duration::from_secs(1)), "x").is_ok());
        assert!(caps
            .check_ttl(Some(Duration::from_millis(999)), "x")
            .is_err());
        let e = caps
            .check_ttl(Some(Duration::from_secs(101)), "x")
            .unwrap_err();
        assert!(e.to_string().contains("longest"), "{e}");
        assert!(caps.check_lock_ttl(Duration::from_secs(10), "x").is_ok());
        let e = caps
            .check_lock_ttl(Duration::from_secs(5), "x")
            .unwrap_err();
        assert!(e.to_string().contains("10s to 100s"), "{e}");
        assert!(caps.check_lock_ttl(Duration::from_secs(101), "x").is_err());
        // A lock minimum below the key minimum (Consul: 10 s sessions, 20 s keys).
        let consul = Capabilities {
            min_ttl: Duration::from_secs(20),
            lock_min_ttl: Duration::from_secs(10),
            ..caps
        };
        assert!(consul.check_lock_ttl(Duration::from_secs(15), "x").is_ok());
        assert!(consul.check_lock_ttl(Duration::from_secs(9), "x").is_err());
        let plain = Capabilities {
            lock_min_ttl: Duration::ZERO,
            ..caps
        };
        assert!(plain.check_lock_ttl(Duration::from_secs(1), "x").is_ok());
    }
}
