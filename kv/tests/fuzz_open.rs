//! Property tests of `kv::open` on URLs that must fail before anything is dialled or opened:
//! no scheme, unknown schemes, and every known scheme with garbage plus an option no driver
//! knows (each driver rejects unknown options while parsing, before it connects).
//!
//! `open` runs on `futures::executor::block_on`, outside any tokio runtime: an attempt to
//! connect, spawn or sleep would panic there and fail the test, so "returns a `Config` error
//! without connecting" is checked, not assumed.

use futures::executor::block_on;
use proptest::prelude::*;

const CASES: u32 = 512;

fn garbage() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-z0-9]{1,6}",
        1 => prop::sample::select(vec![
            "://", ":", "/", "//", "@", ",", "?", "&", "=", "%", "%zz", "%ff", "[::1]", " ", ".",
            "..", "\u{0}", "127.0.0.1:2379", "?timeout=", "\u{e9}",
        ])
        .prop_map(String::from),
        1 => any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        3 => prop::collection::vec(piece, 0..12).prop_map(|v| v.concat()),
        1 => any::<String>(),
    ]
}

fn open_err(url: &str) -> kv::Error {
    match block_on(kv::open(url)) {
        Ok(store) => panic!("{url:?} opened a {} store", store.backend()),
        Err(e) => e,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// No `scheme://`: a `Config` error that lists the available schemes.
    #[test]
    fn no_scheme(s in garbage()) {
        prop_assume!(kv_core::url::scheme_of(&s).is_none());
        match open_err(&s) {
            kv::Error::Config { message } => {
                prop_assert!(message.contains("available schemes"), "{}", message);
            }
            e => prop_assert!(false, "{:?}: {:?}", s, e),
        }
    }

    /// A scheme no driver has: a `Config` error naming it.
    #[test]
    fn unknown_scheme(scheme in "[a-zA-Z][a-zA-Z0-9+.-]{0,8}", rest in garbage()) {
        let lower = scheme.to_ascii_lowercase();
        prop_assume!(!kv::SCHEMES.iter().any(|(s, _)| *s == lower));
        let url = format!("{scheme}://{rest}");
        match open_err(&url) {
            kv::Error::Config { message } => {
                prop_assert!(message.contains(&format!("{lower:?}")), "{}", message);
            }
            e => prop_assert!(false, "{:?}: {:?}", url, e),
        }
    }

    /// Every known scheme, garbage, and an unknown option: a `Config` error, never a panic or
    /// a connection attempt.
    #[test]
    fn known_scheme_with_garbage(
        scheme in prop::sample::select(vec!["sled", "etcd", "zk", "consul", "ETCD", "Zk"]),
        rest in garbage(),
    ) {
        let url = format!("{scheme}://{rest}?kv_fuzz_no_such_option=1");
        let e = open_err(&url);
        prop_assert!(matches!(e, kv::Error::Config { .. }), "{:?}: {:?}", url, e);
    }
}
