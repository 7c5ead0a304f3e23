//! Shared proptest strategies for the URL-parsing property tests of every driver crate.
//!
//! [`url_garbage`] gives URL-shaped garbage for one scheme (or none): pieces of URL syntax,
//! broken percent escapes and arbitrary characters in random order. [`options`] gives query
//! strings drawn from a driver's option names with valid and invalid values.
//! [`config`] is the configuration every such test uses: enough cases to find problems, few
//! enough to keep each test to about a second, and no regression files in the source tree.

use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per property (512), and no failure-persistence files next to the sources (failures
/// become explicit regression tests).
pub fn config() -> Config {
    Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Percent-encodes every byte but the unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One piece of URL syntax (or a random character).
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9]{1,6}",
        1 => Just("://".to_string()),
        1 => Just(":".to_string()),
        1 => Just("/".to_string()),
        1 => Just("//".to_string()),
        1 => Just("@".to_string()),
        1 => Just(",".to_string()),
        1 => Just("?".to_string()),
        1 => Just("&".to_string()),
        1 => Just("=".to_string()),
        1 => Just("%".to_string()),
        1 => Just("%4".to_string()),
        1 => Just("%zz".to_string()),
        1 => Just("%ff".to_string()),
        1 => Just("[::1]".to_string()),
        1 => Just(" ".to_string()),
        1 => Just(".".to_string()),
        1 => Just("..".to_string()),
        1 => Just("\u{0}".to_string()),
        1 => Just("99999".to_string()),
        1 => Just("timeout=".to_string()),
        1 => Just("http://".to_string()),
        1 => any::<char>().prop_map(String::from),
    ]
}

/// URL-shaped garbage after `prefix` (e.g. `"etcd://"`, or `""` for no scheme at all).
pub fn url_garbage(prefix: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(piece(), 0..16).prop_map(move |v| format!("{prefix}{}", v.concat())),
        1 => any::<String>().prop_map(move |s| format!("{prefix}{s}")),
    ]
}

/// A value for an option: durations, booleans, paths, empty, garbage.
pub fn option_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("10s".to_string()),
        Just("250ms".to_string()),
        Just("0s".to_string()),
        Just("99999999999999999999h".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("yes".to_string()),
        Just("".to_string()),
        Just("/tmp/kv-fuzz-does-not-exist.pem".to_string()),
        Just("u:p".to_string()),
        "[a-z0-9:]{1,8}",
        any::<String>().prop_map(|s| encode(&s)),
    ]
}

/// A query string (`?k=v&...`, or empty) of options named from `known` plus an unknown one
/// now and then; values from [`option_value`].
pub fn options(known: &'static [&'static str]) -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        6 => prop::sample::select(known).prop_map(String::from),
        1 => Just("bogus".to_string()),
    ];
    prop::collection::vec((name, option_value()), 0..4)
}

/// Renders options as a query string (with the leading `?`, or empty).
pub fn query(options: &[(String, String)]) -> String {
    if options.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = options.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("?{}", parts.join("&"))
}

/// Host lists: names, IPv4, bracketed IPv6, with or without (sometimes bad) ports.
pub fn hosts() -> impl Strategy<Value = Vec<String>> {
    let host = prop_oneof![
        Just("127.0.0.1".to_string()),
        Just("[::1]".to_string()),
        "[a-z][a-z0-9-]{0,8}",
    ];
    let port = prop_oneof![
        2 => Just(String::new()),
        3 => (1u16..).prop_map(|p| format!(":{p}")),
        1 => Just(":0".to_string()),
        1 => Just(":99999".to_string()),
        1 => Just(":x".to_string()),
    ];
    prop::collection::vec((host, port).prop_map(|(h, p)| format!("{h}{p}")), 0..4)
}

/// Namespaces / paths: empty, valid, or breaking the key rules.
pub fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("/".to_string()),
        "(/[a-z0-9]{1,5}){1,3}",
        Just("/a//b".to_string()),
        Just("/a/../b".to_string()),
        Just("/%20a".to_string()),
        Just("/a%00b".to_string()),
    ]
}
