//! [`ZkConfig`] and the `zk://` URL.

use std::path::PathBuf;
use std::time::Duration;

use kv_core::{retry, ConnectUrl, Consistency, Error, Result};

/// Client port of a host given without one.
pub const DEFAULT_PORT: u16 = 2181;

/// Default ZooKeeper session timeout asked for (the server clamps it to 2..20 ticks).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS files (PEM) for a `zk` connection; needs the crate's `tls` feature.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZkTls {
    /// CA certificate(s) that sign the server certificate.
    pub ca: Option<PathBuf>,
    /// Client certificate chain, for servers that require client authentication.
    pub cert: Option<PathBuf>,
    /// Private key of `cert`.
    pub key: Option<PathBuf>,
}

/// Configuration of a [`ZkStore`](crate::ZkStore).
#[derive(Clone, PartialEq, Eq)]
pub struct ZkConfig {
    /// Servers, `host:port` each.
    pub endpoints: Vec<String>,
    /// Namespace (chroot): every key lives under this znode path (`""` = the server root).
    pub namespace: String,
    /// Bound on every call that talks to the server (default [`retry::DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Session timeout asked for (default 10 s; the server clamps it to `2..20 × tickTime`).
    /// Ephemeral nodes (lock contenders, lock values) of a crashed client vanish that long
    /// after it went silent.
    pub session_timeout: Duration,
    /// Digest credentials (`user`, `password`): sent with `addAuth digest`, and nodes the
    /// store creates get the `auth` ACL (only this user may access them).
    pub digest: Option<(String, String)>,
    /// TLS (rustls); requires the `tls` feature.
    pub tls: Option<ZkTls>,
    /// Read consistency (default [`Consistency::Linearizable`]: a `sync` before every read;
    /// [`Consistency::Stale`]: the connected server's view). See the [crate docs](crate).
    pub consistency: Consistency,
}

impl std::fmt::Debug for ZkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkConfig")
            .field("endpoints", &self.endpoints)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .field("session_timeout", &self.session_timeout)
            .field("digest_user", &self.digest.as_ref().map(|d| &d.0))
            .field("tls", &self.tls)
            .field("consistency", &self.consistency)
            .finish()
    }
}

impl ZkConfig {
    /// A configuration for `endpoints` (`"h1:2181,h2:2181"` or one host), no namespace.
    pub fn new(endpoints: impl AsRef<str>) -> Self {
        ZkConfig {
            endpoints: endpoints
                .as_ref()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            namespace: String::new(),
            timeout: retry::DEFAULT_TIMEOUT,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            digest: None,
            tls: None,
            consistency: Consistency::Linearizable,
        }
    }

    /// Sets the read consistency (URL option `consistency=`).
    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// Sets the namespace (chroot path such as `/app`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the per-call timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the session timeout asked for.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Sets digest credentials.
    pub fn digest(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.digest = Some((user.into(), password.into()));
        self
    }

    /// Enables TLS with these files.
    pub fn tls(mut self, tls: ZkTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Parses a `zk://` URL; see the [crate docs](crate) for the options.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut u = ConnectUrl::parse(url)?;
        if u.scheme != crate::URL_SCHEME {
            return Err(Error::config(format!(
                "a ZooKeeper URL starts with {}://, not {}://",
                crate::URL_SCHEME,
                u.scheme
            )));
        }
        if u.hosts.is_empty() {
            return Err(Error::config(
                "a zk:// URL needs at least one host:port (zk://127.0.0.1:2181/namespace)",
            ));
        }
        let mut cfg = ZkConfig::new(u.hosts.join(","));
        cfg.endpoints = u
            .hosts
            .iter()
            .map(|h| kv_core::url::host_port(h, DEFAULT_PORT))
            .collect::<Result<_>>()?;
        cfg.namespace = u.path.clone();
        if let Some(t) = u.take_duration("timeout")? {
            cfg.timeout = t;
        }
        if let Some(t) = u.take_duration("session_timeout")? {
            cfg.session_timeout = t;
        }
        if let Some(c) = u.take_consistency()? {
            cfg.consistency = c;
        }
        let digest_opt = u.take("digest");
        match (u.user.clone(), u.password.clone(), digest_opt) {
            (Some(_), _, Some(_)) => {
                return Err(Error::config(
                    "give digest credentials either as user:password@ in the URL or as digest=, not both",
                ))
            }
            (Some(user), Some(pw), None) => cfg.digest = Some((user, pw)),
            (Some(user), None, None) => {
                return Err(Error::config(format!(
                    "user {user:?} has no password: use zk://user:password@host/..."
                )))
            }
            (None, _, Some(d)) => match d.split_once(':') {
                Some((user, pw)) if !user.is_empty() => {
                    cfg.digest = Some((user.to_string(), pw.to_string()))
                }
                _ => {
                    return Err(Error::config(
                        "option digest: expected user:password",
                    ))
                }
            },
            (None, _, None) => {}
        }
        let ca = u.take("ca").map(PathBuf::from);
        let cert = u.take("cert").map(PathBuf::from);
        let key = u.take("key").map(PathBuf::from);
        let tls_flag = u.take_bool("tls")?;
        if ca.is_some() || cert.is_some() || key.is_some() || tls_flag == Some(true) {
            if tls_flag == Some(false) {
                return Err(Error::config(
                    "tls=false contradicts the ca=/cert=/key= options",
                ));
            }
            cfg.tls = Some(ZkTls { ca, cert, key });
        }
        u.finish()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the configuration (also done by `connect`).
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(Error::config("no ZooKeeper endpoint given"));
        }
        for e in &self.endpoints {
            kv_core::url::host_port(e, DEFAULT_PORT)?;
        }
        if self.timeout.is_zero() {
            return Err(Error::config("option timeout: must be more than 0"));
        }
        if self.session_timeout < Duration::from_millis(100) {
            return Err(Error::config(
                "option session_timeout: must be at least 100ms (servers allow 2..20 ticks)",
            ));
        }
        kv_core::normalize_prefix(&self.namespace).map_err(|e| {
            Error::config(format!(
                "namespace {:?} is not a valid path: {e}",
                self.namespace
            ))
        })?;
        if let Some(tls) = &self.tls {
            if !cfg!(feature = "tls") {
                return Err(Error::config(
                    "TLS options (ca=, cert=, key=, tls=) need kv-zookeeper's `tls` feature (kv's `tls` feature); rebuild with it enabled",
                ));
            }
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(Error::config(
                    "options cert= and key= go together (client certificate and its key)",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_url() {
        let c = ZkConfig::from_url("zk://h1:2181,h2/app/x?timeout=3s&session_timeout=4s").unwrap();
        assert_eq!(c.endpoints, vec!["h1:2181", "h2:2181"]);
        assert_eq!(c.namespace, "/app/x");
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.session_timeout, Duration::from_secs(4));
        assert!(c.digest.is_none());
        let c = ZkConfig::from_url("zk://me:p%40ss@h1:2181").unwrap();
        assert_eq!(c.digest, Some(("me".into(), "p@ss".into())));
        let c = ZkConfig::from_url("zk://h1:2181/?digest=u:p").unwrap();
        assert_eq!(c.digest, Some(("u".into(), "p".into())));
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
            ZkConfig::new("h:1")
                .consistency(Consistency::Stale)
                .consistency,
            Consistency::Stale
        );
        let e = ZkConfig::from_url("zk://h:1/app?consistency=sequential").unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e}");
        assert!(e.to_string().contains("linearizable, stale"), "{e}");
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
                        let expect_digest = digest.and_then(|d| d.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
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
}
