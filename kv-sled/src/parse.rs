//! `sled://` URLs: `sled:///absolute/path` or `sled://./relative/path`, options `timeout`,
//! `flush`, `namespace` and `consistency`.

use kv_core::{ConnectUrl, Error, Result};

use crate::config::SledConfig;
use crate::URL_SCHEME;

/// True when `path`'s last component is a name (not `/`, `.` or `..`).
pub(crate) fn ends_in_a_name(path: &str) -> bool {
    matches!(
        std::path::Path::new(path).components().next_back(),
        Some(std::path::Component::Normal(_))
    )
}

/// `url` without the user info (`user:pass@`) of its authority, for error messages.
pub(crate) fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}{}", &url[..start], &url[start + at + 1..]),
        None => url.to_string(),
    }
}

/// Parses a `sled://` URL into its configuration.
pub(crate) fn parse_url(url: &str) -> Result<SledConfig> {
    let mut u = ConnectUrl::parse(url)?;
    let shown = redact(url);
    if u.scheme != URL_SCHEME {
        return Err(Error::config(format!(
            "{shown:?} is not a sled URL (expected sled:///path or sled://./relative/path)"
        )));
    }
    let path = match u.hosts.as_slice() {
        [] => u.path.clone(),
        [h] if h == "." => u.path.trim_start_matches('/').to_string(),
        _ => {
            return Err(Error::config(format!(
                "{shown:?}: a sled URL has no host; use sled:///absolute/path or sled://./relative/path"
            )))
        }
    };
    if u.user.is_some() || u.password.is_some() {
        return Err(Error::config(format!(
            "{shown:?}: a sled URL has no user or password; use sled:///absolute/path or sled://./relative/path"
        )));
    }
    // The path must name the database directory: "/", "//", "." or "a/.." do not.
    if !ends_in_a_name(&path) {
        return Err(Error::config(format!(
            "{shown:?} has no database path (it must end in a directory name); use sled:///absolute/path or sled://./relative/path"
        )));
    }
    let mut config = SledConfig::new(path);
    if let Some(t) = u.take_duration("timeout")? {
        config.timeout = t;
    }
    if let Some(f) = u.take_bool("flush")? {
        config.flush = f;
    }
    if let Some(ns) = u.take("namespace") {
        config.namespace = ns;
    }
    // Validated and kept; every read of a single-process store is linearizable anyway.
    if let Some(c) = u.take_consistency()? {
        config.consistency = c;
    }
    u.finish()?;
    Ok(config)
}

#[cfg(test)]
mod tests;
