//! Property tests (proptest) of transaction shapes: `Txn::prepare` with random compares and
//! operations (keys from a small pool so that repeats happen, some invalid; values around
//! the size limit; TTLs around the minimum) against random `Capabilities`.
//!
//! `prepare` must never panic, must accept exactly the transactions the rules allow (stated
//! independently in [`violations`]), must return them with every key normalized and nothing
//! else changed, and every rejection must be a typed error justified by a rule the
//! transaction really breaks, naming the offending key or count.

use std::collections::HashMap;
use std::time::Duration;

use kv_core::{normalize_key, Capabilities, Compare, Error, PutOptions, Txn, TxnOp};
use proptest::prelude::*;

const CASES: u32 = 1000;

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["a", "/a", "a/", "b", "b/c", "/b/c/", "c", "d/e"]).prop_map(String::from),
        1 => prop::sample::select(vec!["", "/", "a//b", "a/../b", "x\u{0}", " a"]).prop_map(String::from),
    ]
}

fn ttl() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        3 => Just(None),
        1 => (0u64..3000).prop_map(|ms| Some(Duration::from_millis(ms))),
    ]
}

fn compare() -> impl Strategy<Value = Compare> {
    prop_oneof![
        (key(), any::<u64>()).prop_map(|(key, version)| Compare::Version { key, version }),
        key().prop_map(|key| Compare::Absent { key }),
        key().prop_map(|key| Compare::Present { key }),
    ]
}

fn op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        2 => (key(), 0usize..20, ttl()).prop_map(|(key, len, ttl)| TxnOp::Put {
            key,
            value: vec![7u8; len],
            options: PutOptions { ttl },
        }),
        1 => key().prop_map(|key| TxnOp::Delete { key }),
        1 => key().prop_map(|key| TxnOp::Get { key }),
    ]
}

fn caps() -> impl Strategy<Value = Capabilities> {
    (any::<bool>(), 0u64..2000, 0usize..10, 0usize..20).prop_map(
        |(ttl, min_ttl_ms, max_txn_ops, max_value_size)| Capabilities {
            txn: true,
            ttl,
            min_ttl: Duration::from_millis(min_ttl_ms),
            max_ttl: None,
            lock_min_ttl: Duration::ZERO,
            max_txn_ops,
            max_value_size,
            ..Capabilities::default()
        },
    )
}

fn txn() -> impl Strategy<Value = Txn> {
    (
        prop::collection::vec(compare(), 0..5),
        prop::collection::vec(op(), 0..8),
    )
        .prop_map(|(compares, ops)| Txn { compares, ops })
}

/// Every rule `txn` breaks under `caps`, as checks on an error.
#[derive(Debug, Default)]
struct Violations {
    too_many: bool,
    invalid_keys: Vec<String>,
    /// (normalized key, size) of puts above the limit.
    too_large: Vec<(String, usize)>,
    bad_ttl: bool,
    written_twice: Vec<String>,
    read_and_written: Vec<String>,
}

impl Violations {
    fn any(&self) -> bool {
        self.too_many
            || !self.invalid_keys.is_empty()
            || !self.too_large.is_empty()
            || self.bad_ttl
            || !self.written_twice.is_empty()
            || !self.read_and_written.is_empty()
    }
}

fn violations(txn: &Txn, caps: &Capabilities) -> Violations {
    let mut v = Violations {
        too_many: txn.compares.len() + txn.ops.len() > caps.max_txn_ops,
        ..Violations::default()
    };
    let raw_keys = txn
        .compares
        .iter()
        .map(|c| c.key())
        .chain(txn.ops.iter().map(|o| o.key()));
    for k in raw_keys {
        if normalize_key(k).is_err() {
            v.invalid_keys.push(k.to_string());
        }
    }
    let mut writes: HashMap<String, usize> = HashMap::new();
    let mut reads = Vec::new();
    for op in &txn.ops {
        let Ok(k) = normalize_key(op.key()) else {
            continue;
        };
        match op {
            TxnOp::Put { value, options, .. } => {
                if value.len() > caps.max_value_size {
                    v.too_large.push((k.clone(), value.len()));
                }
                if let Some(t) = options.ttl {
                    if !caps.ttl || t < caps.min_ttl {
                        v.bad_ttl = true;
                    }
                }
                *writes.entry(k).or_default() += 1;
            }
            TxnOp::Delete { .. } => *writes.entry(k).or_default() += 1,
            TxnOp::Get { .. } => reads.push(k),
        }
    }
    v.written_twice = writes
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k.clone())
        .collect();
    v.read_and_written = reads
        .into_iter()
        .filter(|k| writes.contains_key(k))
        .collect();
    v
}

proptest! {
    // Failures are kept as explicit regression tests, not in files next to the sources.
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn prepare_accepts_exactly_the_valid_shapes(txn in txn(), caps in caps()) {
        let v = violations(&txn, &caps);
        match txn.prepare(&caps, "test-backend") {
            Ok(p) => {
                prop_assert!(!v.any(), "accepted although it breaks a rule: {:?}", v);
                prop_assert_eq!(p.compares.len(), txn.compares.len());
                prop_assert_eq!(p.ops.len(), txn.ops.len());
                for (a, b) in p.compares.iter().zip(&txn.compares) {
                    let normalized = normalize_key(b.key()).unwrap();
                    prop_assert_eq!(a.key(), normalized.as_str());
                    let same_kind = matches!(
                        (a, b),
                        (Compare::Version { version: x, .. }, Compare::Version { version: y, .. }) if x == y
                    ) || matches!((a, b), (Compare::Absent { .. }, Compare::Absent { .. }))
                        || matches!((a, b), (Compare::Present { .. }, Compare::Present { .. }));
                    prop_assert!(same_kind, "{:?} became {:?}", b, a);
                }
                for (a, b) in p.ops.iter().zip(&txn.ops) {
                    let normalized = normalize_key(b.key()).unwrap();
                    prop_assert_eq!(a.key(), normalized.as_str());
                    match (a, b) {
                        (TxnOp::Put { value: x, options: o1, .. }, TxnOp::Put { value: y, options: o2, .. }) => {
                            prop_assert_eq!(x, y);
                            prop_assert_eq!(o1, o2);
                        }
                        (TxnOp::Delete { .. }, TxnOp::Delete { .. }) | (TxnOp::Get { .. }, TxnOp::Get { .. }) => {}
                        _ => prop_assert!(false, "{:?} became {:?}", b, a),
                    }
                }
                // Preparing a prepared transaction changes nothing.
                prop_assert_eq!(p.prepare(&caps, "test-backend").ok(), Some(p.clone()));
            }
            Err(e) => {
                prop_assert!(v.any(), "rejected a valid transaction: {:?}", e);
                let shown = e.to_string();
                match &e {
                    Error::InvalidKey { key, reason } => {
                        prop_assert!(v.invalid_keys.contains(key), "{:?} not among {:?}", key, v.invalid_keys);
                        prop_assert!(!reason.is_empty());
                    }
                    Error::ValueTooLarge { key, size, max, backend } => {
                        prop_assert!(v.too_large.contains(&(key.clone(), *size)), "{}", shown);
                        prop_assert_eq!(*max, caps.max_value_size);
                        prop_assert_eq!(*backend, "test-backend");
                    }
                    Error::Unsupported { operation, backend } => {
                        prop_assert!(v.bad_ttl, "{}", shown);
                        prop_assert!(operation.contains("TTL"), "{}", shown);
                        prop_assert_eq!(*backend, "test-backend");
                    }
                    Error::InvalidArgument { message } => {
                        let count = format!("{} compares and operations", txn.compares.len() + txn.ops.len());
                        let justified = (v.too_many && message.contains(&count) && message.contains(&caps.max_txn_ops.to_string()))
                            || v.written_twice.iter().any(|k| message.contains(&format!("writes key {k:?} more than once")))
                            || v.read_and_written.iter().any(|k| message.contains(&format!("reads and writes key {k:?}")));
                        prop_assert!(justified, "{} for {:?}", message, v);
                    }
                    other => prop_assert!(false, "unexpected error kind {:?}", other),
                }
            }
        }
    }
}

/// At the limits: exactly `max_txn_ops` entries and exactly `max_value_size` bytes pass, one
/// more of either fails.
#[test]
fn limits_are_inclusive() {
    let caps = Capabilities {
        txn: true,
        max_txn_ops: 3,
        max_value_size: 5,
        ..Capabilities::default()
    };
    let ok = Txn::new().when_absent("a").put("b", vec![0; 5]).get("c");
    assert!(ok.prepare(&caps, "t").is_ok());
    assert!(matches!(
        ok.clone().get("d").prepare(&caps, "t"),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        Txn::new().put("b", vec![0; 6]).prepare(&caps, "t"),
        Err(Error::ValueTooLarge {
            size: 6,
            max: 5,
            ..
        })
    ));
}
