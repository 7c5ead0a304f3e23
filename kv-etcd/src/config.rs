//! Connection settings and URL parsing.

use std::path::PathBuf;
use std::time::Duration;

use kv_core::retry::DEFAULT_TIMEOUT;
use kv_core::{ConnectUrl, Consistency, Error, Result};

use crate::URL_SCHEME;

/// Default client port when a host has none.
pub const DEFAULT_PORT: u16 = 2379;

/// How to reach an etcd cluster. Build it with [`EtcdConfig::new`] and the `with_*` methods,
/// or parse a URL with [`EtcdConfig::from_url`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client endpoints as `host:port` (a missing port is 2379). Requests are balanced over
    /// them and fail over when one goes away.
    pub endpoints: Vec<String>,
    /// Every key lives under `<namespace>/`; empty for the whole keyspace.
    pub namespace: String,
    /// Bound on every call that talks to the server (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Bound on establishing one TCP/TLS connection (default: the smaller of `timeout` and 5 s).
    pub connect_timeout: Option<Duration>,
    /// User name for etcd authentication.
    pub user: Option<String>,
    /// Password for etcd authentication.
    pub password: Option<String>,
    /// PEM file of the CA that signed the server certificate; enables TLS.
    pub ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (needs `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key: Option<PathBuf>,
    /// Server name to verify instead of the endpoint host (TLS only).
    pub domain: Option<String>,
    /// Read consistency (default [`Consistency::Linearizable`], etcd's own default;
    /// [`Consistency::Stale`]: serializable reads). See the [crate docs](crate).
    pub consistency: Consistency,
}

impl EtcdConfig {
    /// Settings for `endpoints` (`host:port`) with defaults: no namespace, default timeout,
    /// no authentication, plain TCP.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            namespace: String::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: None,
            user: None,
            password: None,
            ca: None,
            cert: None,
            key: None,
            domain: None,
            consistency: Consistency::Linearizable,
        }
    }

    /// Sets the read consistency (URL option `consistency=`).
    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// Sets the namespace (a key prefix such as `app/config`).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets user name and password.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Enables TLS, trusting `ca` (PEM).
    pub fn with_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.ca = Some(ca.into());
        self
    }

    /// Presents a client certificate (mutual TLS).
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Parses `etcd://[user:password@]host:port[,host:port...][/namespace][?options]`.
    /// See the [crate docs](crate) for the options.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut u = ConnectUrl::parse(url)?;
        if u.scheme != URL_SCHEME {
            return Err(Error::config(format!(
                "the etcd driver handles {URL_SCHEME}:// URLs, not {}://",
                u.scheme
            )));
        }
        let mut c = EtcdConfig::new(u.hosts.clone());
        c.namespace = u.path.clone();
        if let Some(t) = u.take_duration("timeout")? {
            c.timeout = t;
        }
        c.connect_timeout = u.take_duration("connect_timeout")?;
        c.user = u.user.clone();
        c.password = u.password.clone();
        if let Some(user) = u.take("user") {
            c.user = Some(user);
        }
        if let Some(pw) = u.take("password") {
            c.password = Some(pw);
        }
        c.ca = u.take("ca").map(PathBuf::from);
        c.cert = u.take("cert").map(PathBuf::from);
        c.key = u.take("key").map(PathBuf::from);
        c.domain = u.take("domain");
        if let Some(m) = u.take_consistency()? {
            c.consistency = m;
        }
        u.finish()?;
        Ok(c)
    }

    /// True when any TLS setting is present.
    pub fn uses_tls(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.domain.is_some()
    }

    /// Checks the settings and returns the normalized namespace and full endpoint URLs.
    pub(crate) fn validate(&self) -> Result<(String, Vec<String>)> {
        if self.endpoints.is_empty() {
            return Err(Error::config(
                "no etcd endpoint given (expected etcd://host:port[,host:port]/namespace)",
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::config("timeout must be greater than zero"));
        }
        let namespace = kv_core::normalize_prefix(&self.namespace)
            .map_err(|e| Error::config(format!("bad namespace {:?}: {e}", self.namespace)))?;
        if self.password.is_some() && self.user.is_none() {
            return Err(Error::config("a password was given without a user name"));
        }
        if self.user.is_some() && self.password.is_none() {
            return Err(Error::config(format!(
                "user {:?} was given without a password (etcd://user:password@host/ or ?password=)",
                self.user.as_deref().unwrap_or_default()
            )));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(Error::config(
                "TLS options cert= and key= must be given together",
            ));
        }
        if self.uses_tls() {
            if !cfg!(feature = "tls") {
                return Err(Error::config(
                    "TLS options (ca=, cert=, key=, domain=) need the `tls` feature of kv-etcd (or kv)",
                ));
            }
            if self.ca.is_none() {
                return Err(Error::config(
                    "TLS needs ca= (the PEM file of the CA that signed the server certificate)",
                ));
            }
        }
        let scheme = if self.uses_tls() { "https" } else { "http" };
        let mut urls = Vec::with_capacity(self.endpoints.len());
        for e in &self.endpoints {
            let e = e.trim();
            let hostport = if let Some(rest) = e.strip_prefix("http://") {
                if self.uses_tls() {
                    return Err(Error::config(format!(
                        "endpoint {e:?} is http:// but TLS options are set"
                    )));
                }
                rest
            } else if let Some(rest) = e.strip_prefix("https://") {
                if !self.uses_tls() {
                    return Err(Error::config(format!(
                        "endpoint {e:?} is https:// but no TLS option (ca=) is set"
                    )));
                }
                rest
            } else {
                e
            };
            let hostport = hostport.trim_end_matches('/');
            if hostport.contains('/') || hostport.contains('@') {
                return Err(Error::config(format!("bad etcd endpoint {e:?}")));
            }
            let hostport = kv_core::url::host_port(hostport, DEFAULT_PORT)
                .map_err(|err| Error::config(format!("etcd endpoint {e:?}: {err}")))?;
            urls.push(format!("{scheme}://{hostport}"));
        }
        Ok((namespace, urls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_url() {
        let c =
            EtcdConfig::from_url("etcd://me:p%40ss@h1:2379,h2/app/x?timeout=3s&connect_timeout=1s")
                .unwrap();
        assert_eq!(c.endpoints, vec!["h1:2379", "h2"]);
        assert_eq!(c.namespace, "/app/x");
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(1)));
        assert_eq!(c.user.as_deref(), Some("me"));
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        let (ns, urls) = c.validate().unwrap();
        assert_eq!(ns, "app/x");
        assert_eq!(urls, vec!["http://h1:2379", "http://h2:2379"]);
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
        assert_eq!(c.password.as_deref(), Some("b"));
        for bad in [
            "etcd://h:1/?bogus=1",
            "etcd://h:1/?timeout=soon",
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
        ] {
            let c = EtcdConfig::from_url(bad).unwrap();
            assert!(matches!(c.validate(), Err(Error::Config { .. })), "{bad}");
        }
    }

    #[test]
    fn tls_option_needs_feature() {
        let c = EtcdConfig::from_url("etcd://h:1/?ca=/tmp/ca.pem").unwrap();
        let r = c.validate();
        if cfg!(feature = "tls") {
            assert_eq!(r.unwrap().1, vec!["https://h:1"]);
        } else {
            let msg = r.unwrap_err().to_string();
            assert!(msg.contains("`tls` feature"), "{msg}");
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
                prop_assert_eq!(&c.user, &reference.take("user"));
                prop_assert_eq!(&c.password, &reference.take("password"));
                prop_assert_eq!(&c.domain, &reference.take("domain"));
                prop_assert_eq!(c.ca.clone(), reference.take("ca").map(PathBuf::from));

                let valid = !c.endpoints.is_empty()
                    && c.endpoints.iter().all(|h| kv_core::url::host_port(h, 1).is_ok())
                    && !c.timeout.is_zero()
                    && kv_core::normalize_prefix(&c.namespace).is_ok()
                    && c.user.is_some() == c.password.is_some()
                    && c.cert.is_some() == c.key.is_some()
                    && (!c.uses_tls() || (cfg!(feature = "tls") && c.ca.is_some()));
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
}
