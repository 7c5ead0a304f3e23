use super::*;

fn password(c: &EtcdConfig) -> Option<&str> {
    c.password.as_ref().map(Secret::expose)
}

#[test]
fn parses_url() {
    let c = EtcdConfig::from_url("etcd://me:p%40ss@h1:2379,h2/app/x?timeout=3s&connect_timeout=1s")
        .unwrap();
    assert_eq!(c.endpoints, vec!["h1:2379", "h2"]);
    assert_eq!(c.namespace, "/app/x");
    assert_eq!(c.timeout, Duration::from_secs(3));
    assert_eq!(c.connect_timeout, Some(Duration::from_secs(1)));
    assert_eq!(c.user.as_deref(), Some("me"));
    assert_eq!(password(&c), Some("p@ss"));
    let (ns, urls) = c.validate().unwrap();
    assert_eq!(ns, "app/x");
    assert_eq!(urls, vec!["http://h1:2379", "http://h2:2379"]);
}

#[test]
fn builders_match_the_url() {
    let built = EtcdConfig::new(["h1:2379", "h2"])
        .with_namespace("/app/x")
        .with_timeout(Duration::from_secs(3))
        .with_connect_timeout(Duration::from_secs(1))
        .with_credentials("me", "p@ss")
        .with_consistency(Consistency::Stale);
    let parsed = EtcdConfig::from_url(
        "etcd://me:p%40ss@h1:2379,h2/app/x?timeout=3s&connect_timeout=1s&consistency=stale",
    )
    .unwrap();
    assert_eq!(built, parsed);
    let c = EtcdConfig::new(["[::1]:2379", "[::1]"]);
    assert_eq!(
        c.validate().unwrap().1,
        vec!["http://[::1]:2379", "http://[::1]:2379"]
    );
}

#[test]
fn debug_and_errors_never_show_the_password() {
    let c = EtcdConfig::new(["h:1"]).with_credentials("me", "hunter2-secret");
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("hunter2-secret"), "{dbg}");
    assert!(dbg.contains("<redacted>"), "{dbg}");
    let c = EtcdConfig::from_url("etcd://me:hunter2-secret@h:1/?password=other-secret").unwrap();
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("hunter2-secret") && !dbg.contains("other-secret"),
        "{dbg}"
    );
    for bad in [
        "zk://me:hunter2-secret@h:1/",
        "etcd://me:hunter2-secret@h:1/?bogus=1",
        "etcd://me:hunter2-secret@h:1/?timeout=soon",
        "etcd://me:hunter2-secret@h:1/a//b",
        "etcd:/me:hunter2-secret@h:1/",
    ] {
        let e = EtcdConfig::from_url(bad)
            .and_then(|c| c.validate().map(|_| ()))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2-secret"), "{bad}: {e}");
    }
}

#[test]
fn consistency_option() {
    let c = EtcdConfig::from_url("etcd://h:1/app").unwrap();
    assert_eq!(c.consistency, Consistency::Linearizable);
    let c = EtcdConfig::from_url("etcd://h:1/app?consistency=stale").unwrap();
    assert_eq!(c.consistency, Consistency::Stale);
    let c = EtcdConfig::from_url("etcd://h:1/app?consistency=linearizable").unwrap();
    assert_eq!(c.consistency, Consistency::Linearizable);
    let c = EtcdConfig::new(["h:1"]).with_consistency(Consistency::Stale);
    assert_eq!(c.consistency, Consistency::Stale);
    let e = EtcdConfig::from_url("etcd://h:1/?consistency=serializable").unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("linearizable, stale"), "{e}");
}

#[test]
fn user_option_and_errors() {
    let c = EtcdConfig::from_url("etcd://h:1/?user=a&password=b").unwrap();
    assert_eq!(c.user.as_deref(), Some("a"));
    assert_eq!(password(&c), Some("b"));
    for bad in [
        "etcd://h:1/?bogus=1",
        "etcd://h:1/?timeout=soon",
        "etcd://h:1/?tls=maybe",
        "etcd://h:1/?tls=false&ca=/x",
        "zk://h:1/",
    ] {
        assert!(
            matches!(EtcdConfig::from_url(bad), Err(Error::Config { .. })),
            "{bad}"
        );
    }
    for bad in [
        "etcd:///x",
        "etcd://h:99999/",
        "etcd://h:1/a//b",
        "etcd://h:1/?user=a",
        "etcd://h:1/?cert=/x",
        "etcd://h:1/?tls=true",
    ] {
        let c = EtcdConfig::from_url(bad).unwrap();
        assert!(matches!(c.validate(), Err(Error::Config { .. })), "{bad}");
    }
}

#[test]
fn tls_options() {
    let c = EtcdConfig::from_url("etcd://h:1/?ca=/tmp/ca.pem&domain=etcd").unwrap();
    assert_eq!(
        c.tls,
        Some(
            TlsFiles::default()
                .with_ca("/tmp/ca.pem")
                .with_domain("etcd")
        )
    );
    let r = c.validate();
    if cfg!(feature = "tls") {
        assert_eq!(r.unwrap().1, vec!["https://h:1"]);
    } else {
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("`tls` feature"), "{msg}");
    }
    let c = EtcdConfig::from_url("etcd://h:1?tls=true&ca=/c&cert=/a&key=/b").unwrap();
    let built = EtcdConfig::new(["h:1"]).with_tls(
        TlsFiles::default()
            .with_ca("/c")
            .with_client_cert("/a", "/b"),
    );
    assert_eq!(c, built);
    assert_eq!(
        EtcdConfig::from_url("etcd://h:1/?tls=false").unwrap().tls,
        None
    );
    if cfg!(feature = "tls") {
        let e = EtcdConfig::from_url("etcd://h:1/?tls=true")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("ca="), "{e}");
        let e = EtcdConfig::new(["https://h:1"]).validate().unwrap_err();
        assert!(e.to_string().contains("https://"), "{e}");
        let e = EtcdConfig::new(["http://h:1"])
            .with_tls(TlsFiles::default().with_ca("/c"))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
    }
}

mod fuzz {
    //! Property tests: `from_url` and `validate` (everything `connect` checks before it
    //! dials) on garbage and on structured URLs with random options.

    use super::*;
    use kv_testkit::fuzz;
    use proptest::prelude::*;

    const OPTIONS: &[&str] = &[
        "timeout",
        "connect_timeout",
        "user",
        "password",
        "ca",
        "cert",
        "key",
        "domain",
    ];

    fn config_error<T: std::fmt::Debug>(r: &Result<T>) -> bool {
        matches!(r, Err(Error::Config { message }) if !message.is_empty())
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        /// Garbage never panics; every rejection, by parsing or validation, is `Config`.
        #[test]
        fn garbage_is_a_config_error(url in prop_oneof![fuzz::url_garbage("etcd://"), fuzz::url_garbage("")]) {
            let parsed = EtcdConfig::from_url(&url);
            match &parsed {
                Ok(c) => {
                    let v = c.validate();
                    prop_assert!(v.is_ok() || config_error(&v), "{:?}: {:?}", url, v);
                }
                Err(_) => prop_assert!(config_error(&parsed), "{:?}: {:?}", url, parsed),
            }
        }

        /// Structured URLs: the config holds what the URL says, and validation accepts
        /// exactly valid endpoints (port 1-65535), namespaces and option combinations.
        #[test]
        fn structured_urls(hosts in fuzz::hosts(), ns in fuzz::namespace(), opts in fuzz::options(OPTIONS)) {
            let url = format!("etcd://{}{ns}{}", hosts.join(","), fuzz::query(&opts));
            let mut reference = ConnectUrl::parse(&url).unwrap();
            let parsed = EtcdConfig::from_url(&url);
            let bogus = opts.iter().any(|(k, _)| k == "bogus");
            let timeout = reference.take_duration("timeout");
            let connect_timeout = reference.take_duration("connect_timeout");
            if bogus || timeout.is_err() || connect_timeout.is_err() {
                prop_assert!(config_error(&parsed), "{:?}: {:?}", url, parsed);
                return Ok(());
            }
            let c = parsed.map_err(|e| TestCaseError::fail(format!("{url:?}: {e}")))?;
            prop_assert_eq!(&c.endpoints, &reference.hosts);
            prop_assert_eq!(&c.namespace, &reference.path);
            prop_assert_eq!(c.timeout, timeout.unwrap().unwrap_or(DEFAULT_TIMEOUT));
            prop_assert_eq!(c.connect_timeout, connect_timeout.unwrap());
            let user = reference.take("user").or_else(|| reference.user.clone());
            let pw = reference.take("password").or_else(|| reference.password.clone());
            prop_assert_eq!(&c.user, &user);
            prop_assert_eq!(password(&c), pw.as_deref());
            let tls = c.tls.clone().unwrap_or_default();
            prop_assert_eq!(&tls.domain, &reference.take("domain"));
            prop_assert_eq!(tls.ca.clone(), reference.take("ca").map(std::path::PathBuf::from));
            prop_assert_eq!(tls.cert.clone(), reference.take("cert").map(std::path::PathBuf::from));
            prop_assert_eq!(tls.key.clone(), reference.take("key").map(std::path::PathBuf::from));
            prop_assert_eq!(c.uses_tls(), tls != TlsFiles::default());

            let valid = !c.endpoints.is_empty()
                && c.endpoints.iter().all(|h| kv_core::url::host_port(h, 1).is_ok())
                && !c.timeout.is_zero()
                && kv_core::normalize_prefix(&c.namespace).is_ok()
                && c.user.is_some() == c.password.is_some()
                && tls.cert.is_some() == tls.key.is_some()
                && (!c.uses_tls() || (cfg!(feature = "tls") && tls.ca.is_some()));
            let v = c.validate();
            match (&v, valid) {
                (Ok((namespace, urls)), true) => {
                    prop_assert_eq!(namespace, &kv_core::normalize_prefix(&c.namespace).unwrap());
                    let scheme = if c.uses_tls() { "https" } else { "http" };
                    for (u, h) in urls.iter().zip(&c.endpoints) {
                        let hp = kv_core::url::host_port(h, DEFAULT_PORT).unwrap();
                        prop_assert_eq!(u, &format!("{scheme}://{hp}"));
                    }
                }
                (Err(_), false) => prop_assert!(config_error(&v), "{:?}", v),
                _ => prop_assert!(false, "{:?}: validate gave {:?}, expected valid = {}", url, v, valid),
            }
        }
    }

    /// Regressions found by the properties: an endpoint without a host, or with port 0,
    /// passed validation and failed only when dialled.
    #[test]
    fn endpoints_need_a_host_and_a_real_port() {
        for bad in ["etcd://:2379/", "etcd://h:0/", "etcd://h:1:2/"] {
            let v = EtcdConfig::from_url(bad).unwrap().validate();
            assert!(config_error(&v), "{bad}: {v:?}");
        }
    }
}
