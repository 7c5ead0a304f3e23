//! Connection settings and URL parsing.

use std::time::Duration;

use kv_core::raw::{Secret, TlsFiles};
use kv_core::retry::DEFAULT_TIMEOUT;
use kv_core::{ConnectUrl, Consistency, Error, Result};

use crate::URL_SCHEME;

/// Default client port when a host has none.
pub const DEFAULT_PORT: u16 = 2379;

/// How to reach an etcd cluster. Build it with [`EtcdConfig::new`] and the `with_*` methods,
/// or parse a URL with [`EtcdConfig::from_url`]. Its `Debug` never shows the password.
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
    /// Password for etcd authentication (prints as `<redacted>`).
    pub password: Option<Secret>,
    /// TLS settings (`ca=` is required: etcd is reached with a CA of the caller's choosing).
    pub tls: Option<TlsFiles>,
    /// Read consistency (default [`Consistency::Linearizable`], etcd's own default;
    /// [`Consistency::Stale`]: serializable reads). See the [crate docs](crate).
    pub consistency: Consistency,
}

impl EtcdConfig {
    /// Settings for `endpoints` (`host:port`) with defaults: no namespace, default timeout,
    /// no authentication, plain TCP.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            namespace: String::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: None,
            user: None,
            password: None,
            tls: None,
            consistency: Consistency::Linearizable,
        }
    }

    /// Sets the namespace (a key prefix such as `app/config`).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the per-call timeout (URL option `timeout=`).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the bound on one connection attempt (URL option `connect_timeout=`).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Sets the read consistency (URL option `consistency=`).
    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// Enables TLS with these files (URL options `ca=`, `cert=`, `key=`, `domain=`); connecting
    /// with TLS needs this crate's `tls` feature.
    pub fn with_tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets user name and password for etcd authentication.
    pub fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<Secret>,
    ) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Parses `etcd://[user:password@]host:port[,host:port...][/namespace][?options]`.
    /// See the [crate docs](crate) for the options.
    pub fn from_url(url: &str) -> Result<Self> {
        if !url.contains("://") {
            // Not quoted: without `://` the URL parser cannot tell a password apart.
            return Err(Error::config(format!(
                "not an {URL_SCHEME}:// URL (expected {URL_SCHEME}://[user:password@]host:port[,host:port...][/namespace][?options])"
            )));
        }
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
        c.user = u.take("user").or_else(|| u.user.clone());
        c.password = u
            .take("password")
            .or_else(|| u.password.clone())
            .map(Secret::new);
        c.tls = TlsFiles::take(&mut u)?;
        if let Some(m) = u.take_consistency()? {
            c.consistency = m;
        }
        u.finish()?;
        Ok(c)
    }

    /// True when TLS is configured.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
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
        if let Some(tls) = &self.tls {
            tls.validate(cfg!(feature = "tls"), "kv-etcd")?;
            // etcd-client is built without a system root store: the CA must be named.
            if tls.ca.is_none() {
                return Err(Error::config(
                    "TLS needs ca= (the PEM file of the CA that signed the server certificate)",
                ));
            }
        }
        let scheme = if self.uses_tls() { "https" } else { "http" };
        let mut hosts = Vec::with_capacity(self.endpoints.len());
        for e in &self.endpoints {
            let e = e.trim();
            let hostport = match (e.strip_prefix("http://"), e.strip_prefix("https://")) {
                (Some(_), _) if self.uses_tls() => {
                    return Err(Error::config(format!(
                        "endpoint {e:?} is http:// but TLS options are set"
                    )))
                }
                (_, Some(_)) if !self.uses_tls() => {
                    return Err(Error::config(format!(
                        "endpoint {e:?} is https:// but no TLS option (ca=) is set"
                    )))
                }
                (Some(rest), _) | (_, Some(rest)) => rest,
                (None, None) => e,
            };
            hosts.push(hostport.trim_end_matches('/'));
        }
        let urls = kv_core::url::host_list(&hosts, DEFAULT_PORT)?
            .into_iter()
            .map(|hp| format!("{scheme}://{hp}"))
            .collect();
        Ok((namespace, urls))
    }
}

#[cfg(test)]
mod tests;
