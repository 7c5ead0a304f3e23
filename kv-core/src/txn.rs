//! Multi-key transactions: compares, then operations, all-or-nothing.

use std::collections::HashSet;

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::key::{check_value_size, normalize_key};
use crate::pair::{KvPair, PutOptions};

/// A condition a transaction checks before applying its operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key exists with exactly this version.
    Version {
        /// Key.
        key: String,
        /// Expected version.
        version: u64,
    },
    /// The key does not exist.
    Absent {
        /// Key.
        key: String,
    },
    /// The key exists (any version).
    Present {
        /// Key.
        key: String,
    },
    /// A guard ([`Txn::when_held`]): the lock key still has exactly the version `token` it got
    /// from the acquisition with that fencing token. Drivers check it exactly like
    /// [`Compare::Version`]; a failure is [`Error::FencingFailed`].
    Held {
        /// The lock key.
        key: String,
        /// The lock's [fencing token](crate::Lock::fencing_token).
        token: u64,
    },
}

impl Compare {
    /// The compared key.
    pub fn key(&self) -> &str {
        match self {
            Compare::Version { key, .. }
            | Compare::Absent { key }
            | Compare::Present { key }
            | Compare::Held { key, .. } => key,
        }
    }

    fn key_mut(&mut self) -> &mut String {
        match self {
            Compare::Version { key, .. }
            | Compare::Absent { key }
            | Compare::Present { key }
            | Compare::Held { key, .. } => key,
        }
    }

    /// The exact version the compare requires (for [`Compare::Version`] and
    /// [`Compare::Held`]), `None` for the others.
    pub fn expected_version(&self) -> Option<u64> {
        match self {
            Compare::Version { version, .. } => Some(*version),
            Compare::Held { token, .. } => Some(*token),
            Compare::Absent { .. } | Compare::Present { .. } => None,
        }
    }

    /// Checks the compare against the key's current version (`None`: absent); the
    /// error names compare `index`. Drivers that evaluate compares themselves use this.
    pub fn evaluate(&self, index: usize, current: Option<u64>) -> Result<()> {
        use crate::error::CompareFailure as F;
        if let Compare::Held { key, token } = self {
            if current == Some(*token) {
                return Ok(());
            }
            return Err(Error::FencingFailed {
                index,
                key: key.clone(),
                token: *token,
                actual: current,
            });
        }
        let failure = match (self, current) {
            (Compare::Version { version, .. }, Some(v)) if v == *version => return Ok(()),
            (Compare::Version { version, .. }, actual) => F::VersionMismatch {
                expected: *version,
                actual,
            },
            (Compare::Absent { .. }, None) | (Compare::Present { .. }, Some(_)) => return Ok(()),
            (Compare::Absent { .. }, Some(_)) => F::Exists,
            (Compare::Present { .. }, None) => F::Missing,
            (Compare::Held { .. }, _) => unreachable!("handled above"),
        };
        Err(Error::CompareFailed {
            index,
            key: self.key().to_string(),
            reason: failure,
        })
    }
}

/// An operation a transaction applies when every compare holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Write a value.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Write options (TTL).
        options: PutOptions,
    },
    /// Delete a key; a missing key is not an error inside a transaction.
    Delete {
        /// Key.
        key: String,
    },
    /// Read a key as it is before the transaction's writes.
    Get {
        /// Key.
        key: String,
    },
}

impl TxnOp {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
        }
    }

    fn key_mut(&mut self) -> &mut String {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
        }
    }
}

/// The outcome of one [`TxnOp`], in the same position as the operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnResult {
    /// The written pair with its new version.
    Put(KvPair),
    /// The key was deleted (or was already absent).
    Delete,
    /// The pair read, `None` if absent.
    Get(Option<KvPair>),
}

/// A transaction: if every compare holds, every operation is applied atomically; otherwise
/// nothing is applied and [`Error::CompareFailed`] names the first compare that failed.
///
/// ```
/// use kv_core::Txn;
/// let txn = Txn::new()
///     .when_version("accounts/a", 7)
///     .when_absent("accounts/lock")
///     .put("accounts/a", b"90".to_vec())
///     .put("accounts/b", b"10".to_vec())
///     .get("accounts/c");
/// assert_eq!(txn.ops.len(), 3);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Operations applied when they do.
    pub ops: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `key` to have `version`.
    pub fn when_version(mut self, key: impl Into<String>, version: u64) -> Self {
        self.compares.push(Compare::Version {
            key: key.into(),
            version,
        });
        self
    }

    /// Guards the transaction with a held lock: it applies only while `lock`'s acquisition is
    /// still current (the lock key still has the version [`Lock::fencing_token`] names). If the
    /// lock was lost, released or taken over meanwhile, the transaction is rejected with
    /// [`Error::FencingFailed`] and nothing is applied.
    ///
    /// ```no_run
    /// # async fn demo(store: &dyn kv_core::Store, lock: &kv_core::Lock) -> kv_core::Result<()> {
    /// use kv_core::{Error, Txn};
    /// match store.txn(Txn::new().when_held(lock).put("shared/config", "v2")).await {
    ///     Ok(_) => println!("written under token {}", lock.fencing_token()),
    ///     Err(Error::FencingFailed { .. }) => println!("superseded: not written"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// [`Lock::fencing_token`]: crate::Lock::fencing_token
    pub fn when_held(self, lock: &crate::Lock) -> Self {
        self.when_fenced(lock.key(), lock.fencing_token())
    }

    /// Like [`when_held`](Txn::when_held), from the lock key and fencing token alone (e.g. a
    /// leadership term passed to another task).
    pub fn when_fenced(mut self, key: impl Into<String>, token: u64) -> Self {
        self.compares.push(Compare::Held {
            key: key.into(),
            token,
        });
        self
    }

    /// Requires `key` to be absent.
    pub fn when_absent(mut self, key: impl Into<String>) -> Self {
        self.compares.push(Compare::Absent { key: key.into() });
        self
    }

    /// Requires `key` to exist.
    pub fn when_present(mut self, key: impl Into<String>) -> Self {
        self.compares.push(Compare::Present { key: key.into() });
        self
    }

    /// Writes `value` at `key`.
    pub fn put(self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.put_with(key, value, PutOptions::default())
    }

    /// Writes `value` at `key` with options.
    pub fn put_with(
        mut self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Self {
        self.ops.push(TxnOp::Put {
            key: key.into(),
            value: value.into(),
            options,
        });
        self
    }

    /// Deletes `key`.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(TxnOp::Delete { key: key.into() });
        self
    }

    /// Reads `key`.
    pub fn get(mut self, key: impl Into<String>) -> Self {
        self.ops.push(TxnOp::Get { key: key.into() });
        self
    }

    /// Checks the transaction against the contract and a backend's limits, and returns it with
    /// every key normalized. Drivers call this before sending anything.
    ///
    /// Rules: every key valid; at most `max_txn_ops` compares + operations; each key written
    /// (put or delete) at most once; no get of a key the transaction writes; values within
    /// `max_value_size`; TTLs supported.
    pub fn prepare(&self, caps: &Capabilities, backend: &'static str) -> Result<Txn> {
        let total = self.compares.len() + self.ops.len();
        if total > caps.max_txn_ops {
            return Err(Error::invalid_argument(format!(
                "the transaction has {total} compares and operations, the {backend} backend accepts at most {}",
                caps.max_txn_ops
            )));
        }
        let mut txn = self.clone();
        for c in &mut txn.compares {
            let k = normalize_key(c.key())?;
            *c.key_mut() = k;
        }
        let mut written = HashSet::new();
        for op in &mut txn.ops {
            let k = normalize_key(op.key())?;
            *op.key_mut() = k;
            match op {
                TxnOp::Put {
                    key,
                    value,
                    options,
                } => {
                    check_value_size(key, value, caps.max_value_size, backend)?;
                    caps.check_ttl(options.ttl, backend)?;
                    if !written.insert(key.clone()) {
                        return Err(Error::invalid_argument(format!(
                            "the transaction writes key {key:?} more than once"
                        )));
                    }
                }
                TxnOp::Delete { key } => {
                    if !written.insert(key.clone()) {
                        return Err(Error::invalid_argument(format!(
                            "the transaction writes key {key:?} more than once"
                        )));
                    }
                }
                TxnOp::Get { .. } => {}
            }
        }
        if let Some(k) = txn.ops.iter().find_map(|op| match op {
            TxnOp::Get { key } if written.contains(key) => Some(key),
            _ => None,
        }) {
            return Err(Error::invalid_argument(format!(
                "the transaction both reads and writes key {k:?}"
            )));
        }
        Ok(txn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CompareFailure;

    fn caps() -> Capabilities {
        Capabilities {
            txn: true,
            max_txn_ops: 4,
            max_value_size: 8,
            ..Default::default()
        }
    }

    #[test]
    fn prepare_normalizes_and_limits() {
        let t = Txn::new().when_absent("/a/").put("/b", b"1".to_vec());
        let p = t.prepare(&caps(), "t").unwrap();
        assert_eq!(p.compares[0].key(), "a");
        assert_eq!(p.ops[0].key(), "b");
        let too_many = Txn::new()
            .put("a", vec![])
            .put("b", vec![])
            .put("c", vec![])
            .put("d", vec![])
            .get("e");
        assert!(matches!(
            too_many.prepare(&caps(), "t"),
            Err(Error::InvalidArgument { .. })
        ));
        let twice = Txn::new().put("a", vec![]).delete("/a");
        assert!(matches!(
            twice.prepare(&caps(), "t"),
            Err(Error::InvalidArgument { .. })
        ));
        let rw = Txn::new().put("a", vec![]).get("a");
        assert!(matches!(
            rw.prepare(&caps(), "t"),
            Err(Error::InvalidArgument { .. })
        ));
        let big = Txn::new().put("a", vec![0; 9]);
        assert!(matches!(
            big.prepare(&caps(), "t"),
            Err(Error::ValueTooLarge {
                size: 9,
                max: 8,
                ..
            })
        ));
        let bad = Txn::new().get("a//b");
        assert!(matches!(
            bad.prepare(&caps(), "t"),
            Err(Error::InvalidKey { .. })
        ));
        let ttl = Txn::new().put_with(
            "a",
            vec![],
            PutOptions::with_ttl(std::time::Duration::from_secs(1)),
        );
        assert!(matches!(
            ttl.prepare(&caps(), "t"),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn evaluate_compares() {
        let v = Compare::Version {
            key: "k".into(),
            version: 3,
        };
        assert!(v.evaluate(0, Some(3)).is_ok());
        match v.evaluate(2, Some(4)) {
            Err(Error::CompareFailed {
                index: 2,
                reason:
                    CompareFailure::VersionMismatch {
                        expected: 3,
                        actual: Some(4),
                    },
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Compare::Absent { key: "k".into() }.evaluate(0, Some(1)),
            Err(Error::CompareFailed {
                reason: CompareFailure::Exists,
                ..
            })
        ));
        assert!(matches!(
            Compare::Present { key: "k".into() }.evaluate(0, None),
            Err(Error::CompareFailed {
                reason: CompareFailure::Missing,
                ..
            })
        ));
        assert!(Compare::Absent { key: "k".into() }
            .evaluate(0, None)
            .is_ok());
        let held = Compare::Held {
            key: "k".into(),
            token: 5,
        };
        assert!(held.evaluate(0, Some(5)).is_ok());
        assert!(matches!(
            held.evaluate(1, Some(9)),
            Err(Error::FencingFailed {
                index: 1,
                token: 5,
                actual: Some(9),
                ..
            })
        ));
        assert!(matches!(
            held.evaluate(0, None),
            Err(Error::FencingFailed { actual: None, .. })
        ));
        assert_eq!(held.expected_version(), Some(5));
    }
}
