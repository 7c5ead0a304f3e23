use std::path::PathBuf;
use std::time::Duration;

use kv_core::raw::TlsFiles;
use kv_core::retry::DEFAULT_TIMEOUT;
use kv_core::{ConnectUrl, Consistency, Error, Result};

use crate::connect::normalize_endpoint;
use crate::{ConsulConfig, ConsulStore, DEFAULT_PORT, DRIVER};

#[test]
fn url_options() {
    let c = ConsulConfig::from_url("consul://h1:8500,h2/app/x?token=t&timeout=3s").unwrap();
    assert_eq!(c.endpoints, vec!["h1:8500", "h2"]);
    assert_eq!(c.namespace, "/app/x");
    assert_eq!(c.token.as_ref().map(|t| t.expose()), Some("t"));
    assert_eq!(c.timeout, Duration::from_secs(3));
    assert_eq!(c.connect_timeout, None);
    assert!(c.tls.is_none());
    let c = ConsulConfig::from_url("consul://h/?connect_timeout=250ms").unwrap();
    assert_eq!(c.connect_timeout, Some(Duration::from_millis(250)));
    let e = ConsulConfig::from_url("consul://h/?bogus=1").unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    assert!(matches!(
        ConsulConfig::from_url("consul://u:p@h/"),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        ConsulConfig::from_url("consul:///x"),
        Err(Error::Config { .. })
    ));
    assert_eq!(normalize_endpoint("h", false).unwrap(), "http://h:8500");
    assert_eq!(normalize_endpoint("h:1", true).unwrap(), "https://h:1");
    assert!(normalize_endpoint("http://h:1", false).is_err());
    assert!(normalize_endpoint("h:x", false).is_err());
}

/// The TLS options are kv-core's: the same names and rules as on every network driver.
#[test]
fn tls_options() {
    let c = ConsulConfig::from_url("consul://h/?ca=/c.pem&cert=/a&key=/b&domain=d").unwrap();
    let t = c.tls.unwrap();
    assert_eq!(t.ca, Some(PathBuf::from("/c.pem")));
    assert_eq!(t.cert, Some(PathBuf::from("/a")));
    assert_eq!(t.key, Some(PathBuf::from("/b")));
    assert_eq!(t.domain.as_deref(), Some("d"));
    let c = ConsulConfig::from_url("consul://h/?tls=true").unwrap();
    assert_eq!(c.tls, Some(TlsFiles::default()));
    assert!(ConsulConfig::from_url("consul://h/?tls=false")
        .unwrap()
        .tls
        .is_none());
    assert!(matches!(
        ConsulConfig::from_url("consul://h/?tls=false&ca=/c.pem"),
        Err(Error::Config { .. })
    ));
    let c = ConsulConfig::new(["h"]).with_tls(TlsFiles::default().with_ca("/c.pem"));
    assert_eq!(c.tls.unwrap().ca, Some(PathBuf::from("/c.pem")));
}

#[test]
fn builders() {
    let c = ConsulConfig::new(vec![String::from("h")])
        .with_namespace("ns")
        .with_timeout(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_millis(300))
        .with_consistency(Consistency::Stale)
        .with_token("t");
    assert_eq!(c.endpoints, vec!["h"]);
    assert_eq!(c.namespace, "ns");
    assert_eq!(c.timeout, Duration::from_secs(2));
    assert_eq!(c.connect_timeout, Some(Duration::from_millis(300)));
    assert_eq!(c.consistency, Consistency::Stale);
    assert_eq!(c.token.unwrap().expose(), "t");
}

#[test]
fn consistency_option() {
    let c = ConsulConfig::from_url("consul://h/app").unwrap();
    assert_eq!(c.consistency, Consistency::Linearizable);
    let c = ConsulConfig::from_url("consul://h/app?consistency=stale").unwrap();
    assert_eq!(c.consistency, Consistency::Stale);
    let c = ConsulConfig::from_url("consul://h/app?consistency=linearizable").unwrap();
    assert_eq!(c.consistency, Consistency::Linearizable);
    let c = ConsulConfig::new(["h"]).with_consistency(Consistency::Stale);
    assert_eq!(c.consistency, Consistency::Stale);
    let e = ConsulConfig::from_url("consul://h/?consistency=default").unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("linearizable, stale"), "{e}");
}

/// The token never shows in `Debug`, neither set by the builder nor by the URL.
#[test]
fn debug_redacts_the_token() {
    let secret = "s3cr3t-acl-token-7f1e";
    for c in [
        ConsulConfig::new(["h"]).with_token(secret),
        ConsulConfig::from_url(&format!("consul://h/app?token={secret}")).unwrap(),
    ] {
        let shown = format!("{c:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}

/// "Not a consul:// URL" quotes the URL without its credentials or options.
#[test]
fn wrong_scheme_error_hides_credentials() {
    let e = ConsulConfig::from_url("etcd://user:hunter2@h:2379/app?token=tok3n").unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, Error::Config { .. }), "{e:?}");
    assert!(m.contains("not a consul:// URL"), "{m}");
    assert!(m.contains("etcd://h:2379/app"), "{m}");
    assert!(
        !m.contains("hunter2") && !m.contains("user") && !m.contains("tok3n"),
        "{m}"
    );
}

#[test]
fn descriptor() {
    assert_eq!(DRIVER.name, "consul");
    assert!(DRIVER.handles("consul") && !DRIVER.handles("etcd"));
    assert_eq!(DRIVER.default_port, Some(DEFAULT_PORT));
    assert_eq!(
        DRIVER.with_namespace("consul://h:8500/app?timeout=1s", "t"),
        "consul://h:8500/app/t?timeout=1s"
    );
}

/// The TTL limits are Capabilities, enforced by the checking layer.
#[test]
fn ttl_limits() {
    let caps = crate::store::capabilities();
    assert!(matches!(
        caps.check_ttl(Some(Duration::from_secs(19)), "consul"),
        Err(Error::Unsupported { .. })
    ));
    assert!(caps.check_ttl(Some(crate::MIN_TTL), "consul").is_ok());
    assert!(matches!(
        caps.check_ttl(Some(crate::MAX_TTL + Duration::from_secs(1)), "consul"),
        Err(Error::Unsupported { .. })
    ));
    // Locks from 10 s: below the key minimum (kv-core's layer checks them with these limits).
    let lock = |ttl| caps.check_lock_ttl(ttl, "consul");
    assert!(lock(crate::MIN_LOCK_TTL).is_ok());
    assert!(lock(Duration::from_secs(15)).is_ok());
    assert!(matches!(
        lock(Duration::from_secs(9)),
        Err(Error::Unsupported { .. })
    ));
    assert!(lock(crate::MAX_TTL + Duration::from_secs(1)).is_err());
    assert!(caps.check_lock_ttl(crate::MIN_TTL, "consul").is_ok());
    assert!(caps
        .check_lock_ttl(crate::MAX_TTL + Duration::from_secs(1), "consul")
        .is_err());
}

#[tokio::test]
async fn a_token_that_is_no_header_value_is_a_config_error() {
    let c = ConsulConfig::new(["127.0.0.1:1"]).with_token("a\nb");
    match ConsulStore::connect(c).await {
        Err(Error::Config { message }) => assert!(message.contains("ACL token"), "{message}"),
        r => panic!("{:?}", r.err()),
    }
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn tls_needs_the_feature() {
    let e = ConsulStore::from_url("consul://127.0.0.1:1/?ca=/x.pem")
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("`tls` feature"), "{e}");
}

mod fuzz {
    //! Property tests: `ConsulConfig::from_url` and the address rule `connect` applies
    //! before it dials, on garbage and on structured URLs with random options.

    use super::*;
    use kv_testkit::fuzz;
    use proptest::prelude::*;

    const OPTIONS: &[&str] = &["token", "timeout", "tls", "ca", "cert", "key"];

    fn config_error<T: std::fmt::Debug>(r: &Result<T>) -> bool {
        matches!(r, Err(Error::Config { message }) if !message.is_empty())
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        /// Garbage never panics; every rejection is `Config`.
        #[test]
        fn garbage_is_a_config_error(url in prop_oneof![fuzz::url_garbage("consul://"), fuzz::url_garbage("")]) {
            let parsed = ConsulConfig::from_url(&url);
            match &parsed {
                Ok(c) => {
                    for h in &c.endpoints {
                        let e = normalize_endpoint(h, c.tls.is_some());
                        prop_assert!(e.is_ok() || config_error(&e), "{:?}", e);
                    }
                }
                Err(_) => prop_assert!(config_error(&parsed), "{:?}: {:?}", url, parsed),
            }
        }

        /// Structured URLs: the config holds what the URL says; agent addresses pass
        /// exactly when they are host[:port] with a port of 1-65535.
        #[test]
        fn structured_urls(hosts in fuzz::hosts(), ns in fuzz::namespace(), opts in fuzz::options(OPTIONS)) {
            let url = format!("consul://{}{ns}{}", hosts.join(","), fuzz::query(&opts));
            let mut r = ConnectUrl::parse(&url).unwrap();
            let parsed = ConsulConfig::from_url(&url);
            let token = r.take("token");
            let timeout = r.take_duration("timeout");
            let tls = TlsFiles::take(&mut r);
            let bogus = opts.iter().any(|(k, _)| k == "bogus");
            if bogus || r.hosts.is_empty() || timeout.is_err() || tls.is_err() {
                prop_assert!(config_error(&parsed), "{:?}: {:?}", url, parsed);
                return Ok(());
            }
            let c = parsed.map_err(|e| TestCaseError::fail(format!("{url:?}: {e}")))?;
            prop_assert_eq!(&c.endpoints, &r.hosts);
            prop_assert_eq!(&c.namespace, &r.path);
            prop_assert_eq!(
                c.token.as_ref().map(|t| t.expose().to_string()),
                token.filter(|t| !t.is_empty())
            );
            prop_assert_eq!(c.timeout, timeout.unwrap().unwrap_or(DEFAULT_TIMEOUT));
            prop_assert_eq!(&c.tls, &tls.unwrap());
            for h in &c.endpoints {
                let https = c.tls.is_some();
                let got = normalize_endpoint(h, https);
                match kv_core::url::host_port(h, DEFAULT_PORT) {
                    Ok(hp) => {
                        let scheme = if https { "https" } else { "http" };
                        prop_assert_eq!(got.ok(), Some(format!("{scheme}://{hp}")));
                    }
                    Err(_) => prop_assert!(config_error(&got), "{:?}: {:?}", h, got),
                }
            }
        }
    }

    /// Regressions found by the properties: an address without a host, with port 0 or
    /// with two ports passed and failed only when dialled.
    #[test]
    fn agent_addresses_need_a_host_and_one_real_port() {
        for bad in [":8500", "h:0", "h:1:2", "::1"] {
            let r = normalize_endpoint(bad, false);
            assert!(config_error(&r), "{bad}: {r:?}");
        }
        assert_eq!(
            normalize_endpoint("[::1]", false).unwrap(),
            "http://[::1]:8500"
        );
    }
}

#[test]
fn watch_pool_option() {
    assert_eq!(
        ConsulConfig::from_url("consul://h/").unwrap().watch_pool,
        crate::DEFAULT_WATCH_POOL
    );
    let c = ConsulConfig::from_url("consul://h/?watch_pool=4").unwrap();
    assert_eq!(c.watch_pool, 4);
    assert_eq!(ConsulConfig::new(["h"]).with_watch_pool(1).watch_pool, 1);
    for bad in ["0", "65", "-1", "x", ""] {
        let e = ConsulConfig::from_url(&format!("consul://h/?watch_pool={bad}")).unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{bad}: {e:?}");
        assert!(e.to_string().contains("watch_pool"), "{e}");
    }
    assert!(ConsulConfig::new(["h"])
        .with_watch_pool(65)
        .validate()
        .is_err());
    assert!(ConsulConfig::new(["h"])
        .with_watch_pool(crate::MAX_WATCH_POOL)
        .validate()
        .is_ok());
}
