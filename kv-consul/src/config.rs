//! The options of a Consul store and their URL form.

use std::time::Duration;

use kv_core::raw::{Secret, TlsFiles};
use kv_core::retry::DEFAULT_TIMEOUT;
use kv_core::{ConnectUrl, Consistency, Error, Result};

use crate::{DEFAULT_WATCH_POOL, MAX_WATCH_POOL, URL_SCHEME};

/// Configuration of a [`ConsulStore`](crate::ConsulStore). Its `Debug` never shows the token.
#[derive(Clone, Debug)]
pub struct ConsulConfig {
    /// Agent addresses, `host:port` (port defaults to 8500); tried in order on connection errors.
    pub endpoints: Vec<String>,
    /// Key namespace (normalized like a prefix); every key lives under it.
    pub namespace: String,
    /// ACL token sent as `X-Consul-Token`.
    pub token: Option<Secret>,
    /// Bound on every call (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Bound on opening one connection (default: the timeout shared among the agents, at
    /// least 200 ms, so that a dead agent leaves time to try the others).
    pub connect_timeout: Option<Duration>,
    /// Read consistency (default [`Consistency::Linearizable`]: `?consistent` reads;
    /// [`Consistency::Stale`]: `?stale`). See the [crate docs](crate).
    pub consistency: Consistency,
    /// HTTPS settings (`None`: plain HTTP). Needs the `tls` feature and a CA file.
    pub tls: Option<TlsFiles>,
    /// Most connections (and blocking queries) the handle's watches use, however many there
    /// are: 1 to [`MAX_WATCH_POOL`], default [`DEFAULT_WATCH_POOL`] (URL option `watch_pool=`).
    pub watch_pool: usize,
}

impl ConsulConfig {
    /// A configuration for these agents with defaults (no namespace, no token, plain HTTP).
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ConsulConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            namespace: String::new(),
            token: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: None,
            consistency: Consistency::Linearizable,
            tls: None,
            watch_pool: DEFAULT_WATCH_POOL,
        }
    }

    /// Sets the namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the call timeout (URL option `timeout=`).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the connect timeout (URL option `connect_timeout=`).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Sets the read consistency (URL option `consistency=`).
    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// Uses HTTPS with these files (URL options `ca=`, `cert=`, `key=`, `domain=`, `tls=`).
    pub fn with_tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the size of the watch pool (URL option `watch_pool=`; checked when connecting).
    pub fn with_watch_pool(mut self, size: usize) -> Self {
        self.watch_pool = size;
        self
    }

    /// Checks the options that have a range.
    pub(crate) fn validate(&self) -> Result<()> {
        if !(1..=MAX_WATCH_POOL).contains(&self.watch_pool) {
            return Err(Error::config(format!(
                "watch_pool={} is out of range: 1 to {MAX_WATCH_POOL} connections",
                self.watch_pool
            )));
        }
        Ok(())
    }

    /// Sets the ACL token (URL option `token=`).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret::new(token));
        self
    }

    /// Parses a `consul://` URL (see the crate docs for the options).
    pub fn from_url(url: &str) -> Result<Self> {
        let mut u = ConnectUrl::parse(url)?;
        if u.scheme != URL_SCHEME {
            return Err(Error::config(format!(
                "{:?} is not a {URL_SCHEME}:// URL",
                shown(&u)
            )));
        }
        if u.user.is_some() || u.password.is_some() {
            return Err(Error::config(
                "Consul URLs take no user or password; pass an ACL token with ?token=",
            ));
        }
        if u.hosts.is_empty() {
            return Err(Error::config(format!(
                "{URL_SCHEME}:// URL without an agent address (expected consul://host:8500/...)"
            )));
        }
        let mut c = ConsulConfig::new(u.hosts.clone()).with_namespace(u.path.clone());
        c.token = u.take("token").filter(|t| !t.is_empty()).map(Secret::new);
        if let Some(t) = u.take_duration("timeout")? {
            c.timeout = t;
        }
        c.connect_timeout = u.take_duration("connect_timeout")?;
        c.tls = TlsFiles::take(&mut u)?;
        if let Some(m) = u.take_consistency()? {
            c.consistency = m;
        }
        if let Some(n) = u.take("watch_pool") {
            c.watch_pool = n.trim().parse().map_err(|_| {
                Error::config(format!(
                    "watch_pool={n:?} is not a number of connections (1 to {MAX_WATCH_POOL})"
                ))
            })?;
        }
        u.finish()?;
        c.validate()?;
        Ok(c)
    }
}

/// A URL as errors may quote it: scheme, hosts and path, without user, password or options
/// (which may hold the token).
fn shown(u: &ConnectUrl) -> String {
    format!("{}://{}{}", u.scheme, u.hosts.join(","), u.path)
}

#[cfg(test)]
mod tests;
