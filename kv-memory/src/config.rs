//! The memory driver's configuration and its URL form.

use std::time::Duration;

use kv_core::{url, ConnectUrl, Consistency, Error, Result};

use crate::URL_SCHEME;

/// How to open a memory store: which shared store (by name), the namespace, the timeout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryConfig {
    pub(crate) name: String,
    pub(crate) namespace: String,
    /// `None`: [`DEFAULT_TIMEOUT`](kv_core::retry::DEFAULT_TIMEOUT).
    pub(crate) timeout: Option<Duration>,
}

impl MemoryConfig {
    /// The store named `name`, shared by every handle opened with that name in this process
    /// while one of them is alive; `""` is a fresh private store.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        MemoryConfig {
            name,
            ..Default::default()
        }
    }

    /// Keys live under `namespace` (a prefix; other handles of the store see them there).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Bound on every call (default [`DEFAULT_TIMEOUT`](kv_core::retry::DEFAULT_TIMEOUT)).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Accepted for symmetry with the network drivers: every read is linearizable anyway.
    pub fn with_consistency(self, _consistency: Consistency) -> Self {
        self
    }

    /// The store's name (`""`: private).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parses `memory://[NAME][?timeout=..&namespace=..&consistency=..]`.
    pub fn from_url(text: &str) -> Result<Self> {
        let scheme = url::scheme_of(text);
        if scheme.as_deref() != Some(URL_SCHEME) {
            // Never quote the URL: another scheme's URL may hold a password.
            return Err(Error::config(format!(
                "not a memory:// URL (scheme {:?})",
                scheme.unwrap_or_default()
            )));
        }
        let mut u = ConnectUrl::parse(text)?;
        if u.user.is_some() || !(u.path.is_empty() || u.path == "/") {
            return Err(Error::config(
                "memory://NAME takes no user, password or path (a namespace goes in ?namespace=)",
            ));
        }
        let mut config = MemoryConfig::new(u.hosts.join(","));
        if let Some(t) = u.take_duration("timeout")? {
            if t.is_zero() {
                return Err(Error::config("option timeout: must be above zero"));
            }
            config.timeout = Some(t);
        }
        if let Some(ns) = u.take("namespace") {
            config.namespace = ns;
        }
        u.take_consistency()?;
        u.finish()?;
        Ok(config)
    }
}
