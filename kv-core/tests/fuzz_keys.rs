//! Property tests (proptest) of the key rules: `normalize_key`, `normalize_prefix`, the
//! namespace helpers `join` / `strip_namespace` / `in_subtree` / `subtree_start`, and
//! `check_value_size` at the limits.
//!
//! Inputs mix arbitrary Unicode with strings built from the characters the rules care about
//! (`/`, `.`, white space, control characters, multi-byte letters) and keys near
//! `MAX_KEY_LEN`. Every property checks the implementation against the rules as the module
//! docs state them, written out independently below ([`rule_violation`]).

use kv_core::key::{
    check_value_size, in_subtree, join, strip_namespace, subtree_start, MAX_KEY_LEN,
};
use kv_core::{normalize_key, normalize_prefix, Error};
use proptest::prelude::*;

const CASES: u32 = 1000;

/// Pieces the rules care about, glued together into keys.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_-]{1,8}",
        2 => Just("/".to_string()),
        1 => Just("//".to_string()),
        1 => Just(".".to_string()),
        1 => Just("..".to_string()),
        1 => Just(" ".to_string()),
        1 => Just("\t".to_string()),
        1 => Just("\u{a0}".to_string()),  // no-break space: white space, not control
        1 => Just("\u{3000}".to_string()), // ideographic space
        1 => Just("\u{0}".to_string()),
        1 => Just("\n".to_string()),
        1 => Just("\u{7f}".to_string()),
        1 => Just("\u{85}".to_string()),  // NEL: control and white space
        1 => Just("\u{9f}".to_string()),
        1 => Just("é".to_string()),
        1 => Just("日本".to_string()),
        1 => Just("🦀".to_string()),
        1 => Just("%2F".to_string()),
        1 => any::<char>().prop_map(String::from),
    ]
}

/// Keys: glued pieces, arbitrary strings, and long keys around `MAX_KEY_LEN`.
fn raw_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec(piece(), 0..12).prop_map(|v| v.concat()),
        2 => any::<String>(),
        1 => (MAX_KEY_LEN - 3..MAX_KEY_LEN + 3, 0..4usize, any::<bool>()).prop_map(
            |(len, slashes, multibyte)| {
                let fill = if multibyte { "é" } else { "x" };
                let mut s = String::new();
                while s.len() < len {
                    s.push_str(fill);
                    if s.len() % 100 == 0 {
                        s.push('/');
                    }
                }
                let pad = "/".repeat(slashes);
                format!("{pad}{s}{pad}")
            }
        ),
    ]
}

/// A valid normalized key (non-empty segments of safe characters).
fn valid_key() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9_.:@ -]{0,6}[a-z0-9é]", 1..5).prop_map(|s| s.join("/"))
}

/// The rules of `kv_core::key`, checked on the path left after trimming `/`: `None` when it is
/// a valid key, otherwise a word the implementation's reason must contain.
fn rule_violation(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("empty".into());
    }
    if path.len() > MAX_KEY_LEN {
        return Some(format!("{} bytes", path.len()));
    }
    if let Some(c) = path.chars().find(|c| {
        let u = *c as u32;
        u <= 0x1f || (0x7f..=0x9f).contains(&u)
    }) {
        return Some(format!("U+{:04X}", c as u32));
    }
    for seg in path.split('/') {
        if seg.is_empty() {
            return Some("empty segment".into());
        }
        if seg == "." || seg == ".." {
            return Some(format!("{seg:?} segment"));
        }
        let first = seg.chars().next().unwrap();
        let last = seg.chars().last().unwrap();
        if first.is_whitespace() || last.is_whitespace() {
            return Some("white space".into());
        }
    }
    None
}

fn check_key_result(input: &str, got: &Result<String, Error>, prefix: bool) {
    let path = input.trim_matches('/');
    let expected = if prefix && path.is_empty() {
        None
    } else {
        rule_violation(path)
    };
    match (got, expected) {
        (Ok(k), None) => {
            assert_eq!(k, path, "{input:?}: normalized form is the trimmed path");
        }
        (Ok(k), Some(why)) => panic!("{input:?} was accepted as {k:?}, but breaks a rule ({why})"),
        (Err(Error::InvalidKey { key, reason }), Some(why)) => {
            assert_eq!(key, input, "InvalidKey must quote the key as given");
            assert!(
                reason.contains(&why),
                "{input:?}: reason {reason:?} should name the broken rule ({why})"
            );
            let shown = got.as_ref().unwrap_err().to_string();
            assert!(
                shown.contains(&format!("{input:?}")),
                "{shown:?} should quote the key"
            );
        }
        (Err(e), None) => panic!("{input:?} is a valid key but was rejected: {e:?}"),
        (Err(e), Some(_)) => panic!("{input:?}: rejection is not InvalidKey: {e:?}"),
    }
}

proptest! {
    // Failures are kept as explicit regression tests, not in files next to the sources.
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// `normalize_key`: never panics, accepts exactly the keys the rules allow, names the key
    /// and the rule on rejection, and is idempotent.
    #[test]
    fn normalize_key_follows_the_rules(input in raw_key()) {
        let got = normalize_key(&input);
        check_key_result(&input, &got, false);
        if let Ok(k) = got {
            prop_assert_eq!(normalize_key(&k).ok(), Some(k.clone()));
            // Leading and trailing slashes never matter.
            let slashed = format!("//{input}/");
            prop_assert_eq!(normalize_key(&slashed).ok(), Some(k.clone()));
            // A valid key is a valid prefix with the same form.
            prop_assert_eq!(normalize_prefix(&k).ok(), Some(k));
        }
    }

    /// `normalize_prefix`: the same rules, except that the empty prefix (the whole store) is
    /// allowed; idempotent.
    #[test]
    fn normalize_prefix_follows_the_rules(input in raw_key()) {
        let got = normalize_prefix(&input);
        check_key_result(&input, &got, true);
        if let Ok(p) = got {
            prop_assert_eq!(normalize_prefix(&p).ok(), Some(p.clone()));
            if !p.is_empty() {
                prop_assert_eq!(normalize_key(&p).ok(), Some(p));
            }
        }
    }

    /// Keys accepted under a namespace round-trip through `join` and `strip_namespace`, stay in
    /// the namespace's subtree, and a stored key outside the namespace is never stripped into it.
    #[test]
    fn namespace_join_strip_round_trip(
        ns_raw in prop_oneof![Just(String::new()), valid_key(), raw_key()],
        key_raw in prop_oneof![valid_key(), raw_key()],
        other in raw_key(),
    ) {
        let (Ok(ns), Ok(key)) = (normalize_prefix(&ns_raw), normalize_key(&key_raw)) else {
            return Ok(());
        };
        let stored = join(&ns, &key);
        prop_assert_eq!(strip_namespace(&ns, &stored), Some(key.as_str()));
        // The stored form is itself a valid key (limits aside: the namespace adds length).
        if stored.len() <= MAX_KEY_LEN {
            prop_assert_eq!(normalize_key(&stored).ok(), Some(stored.clone()));
        }
        prop_assert!(stored.starts_with(&subtree_start(&ns)));
        prop_assert_eq!(in_subtree(&ns, &stored), true);
        prop_assert_eq!(join(&ns, ""), ns.clone());
        // Whatever `strip_namespace` accepts joins back to the stored string.
        if let Some(rest) = strip_namespace(&ns, &other) {
            if !rest.is_empty() {
                prop_assert_eq!(join(&ns, rest), other.clone());
            }
            let inside = other.starts_with(&format!("{ns}/"));
            prop_assert!(ns.is_empty() || inside);
        } else {
            let inside = other.starts_with(&format!("{ns}/"));
            prop_assert!(!ns.is_empty() && !inside);
        }
        // A key in a sibling namespace that merely starts with the same letters is outside.
        if !ns.is_empty() {
            let sibling = format!("{ns}x/{key}");
            prop_assert_eq!(strip_namespace(&ns, &sibling), None);
            prop_assert!(!in_subtree(&ns, &sibling));
        }
    }

    /// `in_subtree(p, k)` is exactly "k starts with p/ and is longer" for normalized p and k.
    #[test]
    fn subtree_membership_is_prefix_plus_slash(p_raw in raw_key(), k_raw in raw_key()) {
        let (Ok(p), Ok(k)) = (normalize_prefix(&p_raw), normalize_key(&k_raw)) else {
            return Ok(());
        };
        let start = subtree_start(&p);
        prop_assert_eq!(in_subtree(&p, &k), k.starts_with(&start) && k.len() > start.len());
        prop_assert!(!in_subtree(&p, &p));
    }

    /// `check_value_size` at and around the limit: `max` bytes pass, `max + 1` is
    /// `ValueTooLarge` naming key, size, limit and backend.
    #[test]
    fn value_size_limits(max in 0usize..70_000, delta in -2i64..=2, key in valid_key()) {
        let size = max as i64 + delta;
        prop_assume!(size >= 0);
        let value = vec![0u8; size as usize];
        match check_value_size(&key, &value, max, "test-backend") {
            Ok(()) => prop_assert!(value.len() <= max),
            Err(e) => {
                prop_assert!(value.len() > max);
                let shown = e.to_string();
                match e {
                    Error::ValueTooLarge { key: k, size: s, max: m, backend } => {
                        prop_assert_eq!(k, key);
                        prop_assert_eq!(s, value.len());
                        prop_assert_eq!(m, max);
                        prop_assert_eq!(backend, "test-backend");
                        prop_assert!(shown.contains(&value.len().to_string()) && shown.contains(&max.to_string()), "{}", shown);
                    }
                    other => prop_assert!(false, "not ValueTooLarge: {:?}", other),
                }
            }
        }
    }
}

/// The limit is in bytes, after trimming: a key of exactly `MAX_KEY_LEN` bytes of multi-byte
/// characters passes, one byte more fails naming the length.
#[test]
fn key_length_limit_counts_bytes() {
    let ok = "é".repeat(MAX_KEY_LEN / 2);
    assert_eq!(ok.len(), MAX_KEY_LEN);
    assert_eq!(normalize_key(&format!("/{ok}/")).unwrap(), ok);
    let long = format!("{ok}x");
    match normalize_key(&long) {
        Err(Error::InvalidKey { reason, .. }) => {
            assert!(
                reason.contains(&format!("{} bytes", MAX_KEY_LEN + 1)),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}
