use super::*;
use kv_core::raw::{Secret, TlsFiles};
use kv_core::ConnectUrl;

#[test]
fn parses_url() {
    let c = ZkConfig::from_url("zk://h1:2181,h2/app/x?timeout=3s&session_timeout=4s").unwrap();
    assert_eq!(c.endpoints, vec!["h1:2181", "h2:2181"]);
    assert_eq!(c.namespace, "/app/x");
    assert_eq!(c.timeout, Duration::from_secs(3));
    assert_eq!(c.session_timeout, Duration::from_secs(4));
    assert!(c.digest.is_none());
    let c = ZkConfig::from_url("zk://me:p%40ss@h1:2181").unwrap();
    assert_eq!(c.digest, Some(("me".into(), Secret::new("p@ss"))));
    let c = ZkConfig::from_url("zk://h1:2181/?digest=u:p").unwrap();
    assert_eq!(c.digest, Some(("u".into(), Secret::new("p"))));
    assert!(format!("{c:?}").find("\"p\"").is_none());
}

#[test]
fn consistency_option() {
    let c = ZkConfig::from_url("zk://h:1/app").unwrap();
    assert_eq!(c.consistency, Consistency::Linearizable);
    let c = ZkConfig::from_url("zk://h:1/app?consistency=stale").unwrap();
    assert_eq!(c.consistency, Consistency::Stale);
    let c = ZkConfig::from_url("zk://h:1/app?consistency=linearizable").unwrap();
    assert_eq!(c.consistency, Consistency::Linearizable);
    assert_eq!(
        ZkConfig::new(["h:1"])
            .with_consistency(Consistency::Stale)
            .consistency,
        Consistency::Stale
    );
    let e = ZkConfig::from_url("zk://h:1/app?consistency=sequential").unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("linearizable, stale"), "{e}");
}

#[test]
fn read_barrier_option() {
    let c = ZkConfig::from_url("zk://h:1/app").unwrap();
    assert_eq!(c.read_barrier, ReadBarrier::Quorum);
    let c = ZkConfig::from_url("zk://h:1/app?read_barrier=sync").unwrap();
    assert_eq!(c.read_barrier, ReadBarrier::Sync);
    let c = ZkConfig::from_url("zk://h:1/app?read_barrier=QUORUM&consistency=stale").unwrap();
    assert_eq!(
        (c.read_barrier, c.consistency),
        (ReadBarrier::Quorum, Consistency::Stale)
    );
    assert_eq!(
        ZkConfig::new(["h:1"])
            .with_read_barrier(ReadBarrier::Sync)
            .read_barrier,
        ReadBarrier::Sync
    );
    let e = ZkConfig::from_url("zk://h:1/app?read_barrier=none").unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("read_barrier"), "{e}");
    assert!(e.to_string().contains("quorum, sync"), "{e}");
}

#[test]
fn bad_urls_are_config_errors() {
    for bad in [
        "zk:///app",
        "zk://h:1/?bogus=1",
        "zk://h:1/?timeout=0s",
        "zk://h:1/?digest=nocolon",
        "zk://u@h:1/",
        "etcd://h:1/",
        "zk://h:1/a//b",
        "zk://h:1/?cert=/x",
    ] {
        assert!(
            matches!(ZkConfig::from_url(bad), Err(Error::Config { .. })),
            "{bad}"
        );
    }
}

#[test]
fn builders_and_schemes() {
    let c = ZkConfig::new(["h1", "[::1]:2182"])
        .with_namespace("/app")
        .with_timeout(Duration::from_secs(3))
        .with_session_timeout(Duration::from_secs(4))
        .with_credentials("alice", "s3cret");
    assert_eq!(c.hosts().unwrap(), vec!["h1:2181", "[::1]:2182"]);
    assert_eq!(c.namespace, "/app");
    assert_eq!(c.timeout, Duration::from_secs(3));
    assert_eq!(c.session_timeout, Duration::from_secs(4));
    assert_eq!(c.digest.as_ref().unwrap().1.expose(), "s3cret");
    assert!(c.validate().is_ok());
    // IPv6 literals keep their colons, with or without a port.
    let c = ZkConfig::from_url("zookeeper://[::1]:2182,[fe80::1]/app").unwrap();
    assert_eq!(c.endpoints, vec!["[::1]:2182", "[fe80::1]:2181"]);
    assert!(ZkConfig::new(Vec::<String>::new()).validate().is_err());
    assert!(ZkConfig::new(["::1"]).validate().is_err());
    // domain= cannot be honoured by zookeeper-client.
    let e = ZkConfig::new(["h"])
        .with_tls(TlsFiles::default().with_domain("d"))
        .validate()
        .unwrap_err();
    if cfg!(feature = "tls") {
        assert!(e.to_string().contains("domain"), "{e}");
    }
    assert_eq!(crate::DRIVER.schemes, &["zk", "zookeeper"]);
    assert_eq!(crate::DRIVER.default_port, Some(DEFAULT_PORT));
}

#[test]
fn secrets_never_print() {
    let c = ZkConfig::from_url("zk://alice:hunter2@h1:2181/app").unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("alice"), "{shown}");
    let c = ZkConfig::new(["h"]).with_credentials("bob", "t0ps3cret");
    assert!(!format!("{c:?}").contains("t0ps3cret"));
    let c = ZkConfig::from_url("zk://h1/?digest=carol:pw-in-query").unwrap();
    assert!(!format!("{c:?}").contains("pw-in-query"));
    // Errors about a URL never quote its password.
    for bad in [
        "etcd://alice:hunter2@h1:2181/",
        "zk://alice:hunter2@h1:x/",
        "zk://alice:hunter2@h1/?bogus=1",
        "zk://alice:hunter2@h1/a//b",
        "zk://alice:hunter2@/app",
    ] {
        let e = ZkConfig::from_url(bad).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{bad}: {e}");
    }
}

#[test]
fn tls_needs_feature() {
    let r = ZkConfig::from_url("zk://h:1/?ca=/tmp/ca.pem");
    if cfg!(feature = "tls") {
        assert!(r.unwrap().tls.is_some());
    } else {
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("tls"), "{msg}");
    }
}

mod fuzz {
    //! Property tests: `from_url` (which validates everything `connect` checks before it
    //! dials) on garbage and on structured URLs with random options.

    use super::*;
    use kv_testkit::fuzz;
    use proptest::prelude::*;

    const OPTIONS: &[&str] = &[
        "timeout",
        "session_timeout",
        "digest",
        "ca",
        "cert",
        "key",
        "tls",
    ];

    fn config_error<T: std::fmt::Debug>(r: &Result<T>) -> bool {
        matches!(r, Err(Error::Config { message }) if !message.is_empty())
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        /// Garbage never panics; every rejection is `Config`; what is accepted validates.
        #[test]
        fn garbage_is_a_config_error(url in prop_oneof![fuzz::url_garbage("zk://"), fuzz::url_garbage("")]) {
            let parsed = ZkConfig::from_url(&url);
            match &parsed {
                Ok(c) => prop_assert!(c.validate().is_ok()),
                Err(_) => prop_assert!(config_error(&parsed), "{:?}: {:?}", url, parsed),
            }
        }

        /// Structured URLs: accepted exactly when hosts, namespace and options are valid;
        /// then the config holds what the URL says, every endpoint as `host:port`.
        #[test]
        fn structured_urls(hosts in fuzz::hosts(), ns in fuzz::namespace(), opts in fuzz::options(OPTIONS)) {
            let url = format!("zk://{}{ns}{}", hosts.join(","), fuzz::query(&opts));
            let mut r = ConnectUrl::parse(&url).unwrap();
            let parsed = ZkConfig::from_url(&url);
            let timeout = r.take_duration("timeout");
            let session = r.take_duration("session_timeout");
            let digest = r.take("digest");
            let (ca, cert, key) = (r.take("ca"), r.take("cert"), r.take("key"));
            let tls_flag = r.take_bool("tls");
            let endpoints: Result<Vec<String>> =
                r.hosts.iter().map(|h| kv_core::url::host_port(h, DEFAULT_PORT)).collect();
            let any_file = ca.is_some() || cert.is_some() || key.is_some();
            let valid = !opts.iter().any(|(k, _)| k == "bogus")
                && endpoints.as_ref().is_ok_and(|e| !e.is_empty())
                && timeout.as_ref().is_ok_and(|t| t.map_or(true, |t| !t.is_zero()))
                && session.as_ref().is_ok_and(|t| t.map_or(true, |t| t >= Duration::from_millis(100)))
                && digest.as_ref().map_or(true, |d| d.split_once(':').is_some_and(|(u, _)| !u.is_empty()))
                && kv_core::normalize_prefix(&r.path).is_ok()
                && tls_flag.as_ref().is_ok_and(|f| !(any_file && *f == Some(false)))
                && (!(any_file || matches!(tls_flag, Ok(Some(true)))) || (cfg!(feature = "tls") && cert.is_some() == key.is_some()));
            match (&parsed, valid) {
                (Ok(c), true) => {
                    prop_assert_eq!(&c.endpoints, endpoints.as_ref().unwrap());
                    prop_assert_eq!(&c.namespace, &r.path);
                    prop_assert_eq!(c.timeout, timeout.unwrap().unwrap_or(retry::DEFAULT_TIMEOUT));
                    prop_assert_eq!(c.session_timeout, session.unwrap().unwrap_or(DEFAULT_SESSION_TIMEOUT));
                    let expect_digest = digest.and_then(|d| d.split_once(':').map(|(u, p)| (u.to_string(), Secret::new(p))));
                    prop_assert_eq!(&c.digest, &expect_digest);
                    prop_assert_eq!(c.tls.is_some(), any_file || matches!(tls_flag, Ok(Some(true))));
                }
                (Err(_), false) => prop_assert!(config_error(&parsed), "{:?}", parsed),
                _ => prop_assert!(false, "{:?}: got {:?}, expected valid = {}", url, parsed, valid),
            }
        }
    }

    /// Regressions found by the properties: a bracketed IPv6 host without a port was kept
    /// without one (`[::1]` contains ':'), and bad ports passed until the client dialled.
    #[test]
    fn endpoints_are_checked_and_get_the_default_port() {
        let c = ZkConfig::from_url("zk://[::1],h/").unwrap();
        assert_eq!(c.endpoints, vec!["[::1]:2181", "h:2181"]);
        for bad in ["zk://h:x/", "zk://h:0/", "zk://:2181/", "zk://h:99999/"] {
            let r = ZkConfig::from_url(bad);
            assert!(config_error(&r), "{bad}: {r:?}");
        }
    }
}
