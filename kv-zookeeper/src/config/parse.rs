//! The `zk://` URL: `zk://[user:password@]h1:2181,h2:2181/chroot?option=value&...`.

use kv_core::raw::TlsFiles;
use kv_core::{ConnectUrl, Error, Result};

use super::{ReadBarrier, ZkConfig, DEFAULT_PORT};

/// Parses a `zk://` or `zookeeper://` URL into a checked configuration.
pub(super) fn from_url(url: &str) -> Result<ZkConfig> {
    let mut u = ConnectUrl::parse(url)?;
    if !crate::DRIVER.handles(&u.scheme) {
        return Err(Error::config(format!(
            "a ZooKeeper URL starts with zk:// or zookeeper://, not {}://",
            u.scheme
        )));
    }
    if u.hosts.is_empty() {
        return Err(Error::config(
            "a zk:// URL needs at least one host:port (zk://127.0.0.1:2181/namespace)",
        ));
    }
    let mut cfg = ZkConfig::new(kv_core::url::host_list(&u.hosts, DEFAULT_PORT)?);
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
    if let Some(b) = u.take("read_barrier") {
        cfg.read_barrier = ReadBarrier::parse(&b)?;
    }
    let digest = u.take("digest");
    match (u.user.clone(), u.password.clone(), digest) {
        (Some(_), _, Some(_)) => return Err(Error::config(
            "give digest credentials either as user:password@ in the URL or as digest=, not both",
        )),
        (Some(user), Some(pw), None) => cfg = cfg.with_credentials(user, pw),
        (Some(user), None, None) => {
            return Err(Error::config(format!(
                "user {user:?} has no password: use zk://user:password@host/..."
            )))
        }
        (None, _, Some(d)) => match d.split_once(':') {
            Some((user, pw)) if !user.is_empty() => cfg = cfg.with_credentials(user, pw),
            _ => return Err(Error::config("option digest: expected user:password")),
        },
        (None, _, None) => {}
    }
    if let Some(tls) = TlsFiles::take(&mut u)? {
        cfg = cfg.with_tls(tls);
    }
    u.finish()?;
    cfg.validate()?;
    Ok(cfg)
}
