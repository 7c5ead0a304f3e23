//! Tests of URL parsing: the forms, the rejections, redaction, and property tests.

use std::path::PathBuf;
use std::time::Duration;

use kv_core::retry::DEFAULT_TIMEOUT;

use super::*;

#[test]
fn url_forms() {
    let c = parse_url("sled:///var/lib/x?timeout=2s&flush=false&namespace=app/a").unwrap();
    assert_eq!(c.path, PathBuf::from("/var/lib/x"));
    assert_eq!(c.timeout, Duration::from_secs(2));
    assert!(!c.flush);
    assert_eq!(c.namespace, "app/a");
    let c = parse_url("sled://./data/db").unwrap();
    assert_eq!(c.path, PathBuf::from("data/db"));
    assert!(c.flush);
    assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    for ok in ["stale", "linearizable"] {
        let c = parse_url(&format!("sled:///x?consistency={ok}")).unwrap();
        let expected = kv_core::Consistency::parse(ok).unwrap();
        assert_eq!(c, SledConfig::new("/x").with_consistency(expected), "{ok}");
    }
    let e = parse_url("sled:///x?consistency=eventual").unwrap_err();
    assert!(e.to_string().contains("linearizable, stale"), "{e}");
    for bad in [
        "sled://",
        "sled:///",
        "sled://./",
        "sled://host/x",
        "sled:///x?bogus=1",
        "sled:///x?flush=maybe",
        "sled:///x?consistency=eventual",
        "etcd:///x",
    ] {
        assert!(
            matches!(parse_url(bad), Err(Error::Config { .. })),
            "{bad}: {:?}",
            parse_url(bad)
        );
    }
}

#[test]
fn errors_never_quote_a_password() {
    assert_eq!(redact("sled://u:hunter2@h/x?a=b@c"), "sled://h/x?a=b@c");
    assert_eq!(redact("sled://u@./x"), "sled://./x");
    assert_eq!(redact("sled:///x?n=a@b"), "sled:///x?n=a@b");
    assert_eq!(redact("not a url"), "not a url");
    for url in [
        "sled://admin:hunter2@host/x",
        "sled://admin:hunter2@/x",
        "sled://admin:hunter2@./x",
        "etcd://admin:hunter2@host/x",
        "sled://admin:hunter2@a,b/",
        "sled://admin:hunter2@/",
    ] {
        let e = parse_url(url).unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{url}: {e:?}");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("hunter2"), "{url}: {shown}");
    }
    let e = parse_url("sled://admin:hunter2@host/x").unwrap_err();
    assert!(e.to_string().contains("has no host"), "{e}");
    assert!(e.to_string().contains("sled://host/x"), "{e}");
}

#[test]
fn config_debug_shows_the_settings() {
    let c = SledConfig::from_url("sled:///d?namespace=app&timeout=2s").unwrap();
    let shown = format!("{c:?}");
    assert!(shown.contains("\"/d\"") && shown.contains("app"), "{shown}");
}

mod fuzz {
    //! Property tests of `parse_url`.

    use super::*;
    use kv_testkit::fuzz;
    use proptest::prelude::*;

    const OPTIONS: &[&str] = &["timeout", "flush", "namespace"];

    fn config_error<T: std::fmt::Debug>(r: &Result<T>) -> bool {
        matches!(r, Err(Error::Config { message }) if !message.is_empty())
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        /// Garbage never panics; every rejection is `Config`; an accepted URL has a path.
        #[test]
        fn garbage_is_a_config_error(url in prop_oneof![fuzz::url_garbage("sled://"), fuzz::url_garbage("")]) {
            let parsed = parse_url(&url);
            match &parsed {
                Ok(c) => prop_assert!(
                    matches!(c.path.components().next_back(), Some(std::path::Component::Normal(_))),
                    "{:?} accepted with database path {:?}", url, c.path
                ),
                Err(_) => prop_assert!(config_error(&parsed), "{:?}: {:?}", url, parsed),
            }
        }

        /// `sled:///abs` and `sled://./rel` with random options: the config holds what the
        /// URL says; a host other than `.` and a missing path are rejected.
        #[test]
        fn structured_urls(
            host in prop_oneof![3 => Just(String::new()), 3 => Just(".".to_string()), 1 => "[a-z]{1,4}"],
            path in prop_oneof![3 => "(/[a-z0-9._-]{1,6}){1,3}", 1 => Just("/".to_string()), 1 => Just(String::new())],
            opts in fuzz::options(OPTIONS),
        ) {
            let url = format!("sled://{host}{path}{}", fuzz::query(&opts));
            let mut r = ConnectUrl::parse(&url).unwrap();
            let parsed = parse_url(&url);
            let expected_path = match host.as_str() {
                "" => Some(path.clone()),
                "." => Some(path.trim_start_matches('/').to_string()),
                _ => None,
            }
            .filter(|p| ends_in_a_name(p));
            let timeout = r.take_duration("timeout");
            let flush = r.take_bool("flush");
            let bogus = opts.iter().any(|(k, _)| k == "bogus");
            match (parsed, expected_path) {
                (Ok(c), Some(p)) if !bogus => {
                    prop_assert_eq!(c.path, PathBuf::from(p));
                    prop_assert_eq!(c.timeout, timeout.unwrap().unwrap_or(DEFAULT_TIMEOUT));
                    prop_assert_eq!(c.flush, flush.unwrap().unwrap_or(true));
                    prop_assert_eq!(c.namespace, r.take("namespace").unwrap_or_default());
                }
                (Err(e), p) => {
                    prop_assert!(matches!(e, Error::Config { .. }), "{:?}", e);
                    prop_assert!(p.is_none() || bogus || timeout.is_err() || flush.is_err(), "{:?}: {}", url, e);
                }
                (Ok(c), _) => prop_assert!(false, "{:?} accepted as {:?}", url, c),
            }
        }
    }

    /// Regression found by the properties: `sled:////` was accepted with the database
    /// path `//` (the root directory); so were `.` and `..`.
    #[test]
    fn database_path_must_end_in_a_name() {
        for bad in [
            "sled:////",
            "sled:///.",
            "sled://./.",
            "sled://./..",
            "sled:///a/..",
        ] {
            let r = parse_url(bad);
            assert!(config_error(&r), "{bad}: {r:?}");
        }
        assert_eq!(
            parse_url("sled:///a/b/.").unwrap().path,
            PathBuf::from("/a/b/.")
        );
        assert_eq!(parse_url("sled://./a").unwrap().path, PathBuf::from("a"));
    }
}
