//! [`ZkConfig`]: the options of a ZooKeeper store (the `zk://` URL is parsed in `parse.rs`).

use std::time::Duration;

use kv_core::raw::{Secret, TlsFiles};
use kv_core::{retry, Consistency, Error, Result};

mod parse;
#[cfg(test)]
mod tests;

/// Client port of a host given without one.
pub const DEFAULT_PORT: u16 = 2181;

/// Default ZooKeeper session timeout asked for (the server clamps it to 2..20 ticks).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// What a linearizable read waits for before it is served (URL option `read_barrier=`); see
/// the [crate docs](crate#read-consistency).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReadBarrier {
    /// A quorum-committed no-op (`multi` of one `check` of `/`), pipelined with the read: the
    /// read reflects every write acknowledged before it, also while a deposed leader still
    /// answers (the default; costs a replicated log entry per read).
    #[default]
    Quorum,
    /// ZooKeeper's `sync`, pipelined with the read: cheaper (no log entry), but not a quorum
    /// operation (ZOOKEEPER-1675): a leader that lost its quorum without knowing yet (paused,
    /// cut off) answers it and serves its old state for up to a tick.
    Sync,
}

impl ReadBarrier {
    /// The option values, in the order the docs list them.
    pub const VALUES: [&'static str; 2] = ["quorum", "sync"];

    /// Parses `quorum` or `sync` (ASCII case-insensitive).
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "quorum" => Ok(ReadBarrier::Quorum),
            "sync" => Ok(ReadBarrier::Sync),
            _ => Err(Error::config(format!(
                "option read_barrier: {value:?} is not one of {}",
                Self::VALUES.join(", ")
            ))),
        }
    }
}

/// Configuration of a [`ZkStore`](crate::ZkStore). `Debug` never shows the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZkConfig {
    /// Servers, `host[:port]` or `[ipv6][:port]` each (port [`DEFAULT_PORT`] when omitted).
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
    pub digest: Option<(String, Secret)>,
    /// TLS (rustls); requires the `tls` feature. `domain` is not supported (the client
    /// verifies the host of each endpoint).
    pub tls: Option<TlsFiles>,
    /// Read consistency (default [`Consistency::Linearizable`]: a [`ReadBarrier`] before
    /// every read; [`Consistency::Stale`]: the connected server's view). See the
    /// [crate docs](crate).
    pub consistency: Consistency,
    /// The barrier of linearizable reads and of the reads behind compare-and-swap and
    /// transactions (default [`ReadBarrier::Quorum`]).
    pub read_barrier: ReadBarrier,
}

impl ZkConfig {
    /// A configuration for these servers (`["h1:2181", "[::1]:2181", "h3"]`), no namespace.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ZkConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            namespace: String::new(),
            timeout: retry::DEFAULT_TIMEOUT,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            digest: None,
            tls: None,
            consistency: Consistency::Linearizable,
            read_barrier: ReadBarrier::Quorum,
        }
    }

    /// Sets the namespace (chroot path such as `/app`).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the per-call timeout (URL option `timeout=`).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the session timeout asked for (URL option `session_timeout=`).
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Sets digest credentials (URL `user:password@` or `digest=user:password`).
    pub fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<Secret>,
    ) -> Self {
        self.digest = Some((user.into(), password.into()));
        self
    }

    /// Enables TLS with these files (URL options `ca=`, `cert=`, `key=`, `tls=`).
    pub fn with_tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the barrier of linearizable reads (URL option `read_barrier=quorum|sync`).
    pub fn with_read_barrier(mut self, barrier: ReadBarrier) -> Self {
        self.read_barrier = barrier;
        self
    }

    /// Sets the read consistency (URL option `consistency=`).
    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// Parses a `zk://` (or `zookeeper://`) URL; see the [crate docs](crate) for the options.
    pub fn from_url(url: &str) -> Result<Self> {
        parse::from_url(url)
    }

    /// The endpoints as `host:port` (default port added), checked.
    pub fn hosts(&self) -> Result<Vec<String>> {
        kv_core::url::host_list(&self.endpoints, DEFAULT_PORT)
    }

    /// Checks the configuration (also done by `connect`).
    pub fn validate(&self) -> Result<()> {
        self.hosts()?;
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
            tls.validate(cfg!(feature = "tls"), "kv-zookeeper")?;
            if tls.domain.is_some() {
                return Err(Error::config(
                    "option domain= is not supported by the ZooKeeper driver: zookeeper-client verifies the server certificate against each endpoint's host",
                ));
            }
        }
        Ok(())
    }
}
