//! Connection URLs: `scheme://[user:password@]host1:port,host2:port/path?option=value`.
//!
//! Drivers read their options with the `take_*` methods and call [`ConnectUrl::finish`], which
//! rejects any option nobody took: a misspelt option is an error, never silently ignored.

use std::time::Duration;

use crate::error::{Error, Result};

/// A parsed connection URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectUrl {
    /// The scheme, lower-cased (`"etcd"`, `"sled"`, ...).
    pub scheme: String,
    /// Percent-decoded user name, if given.
    pub user: Option<String>,
    /// Percent-decoded password, if given.
    pub password: Option<String>,
    /// Hosts (`host:port`) split on `,`; empty when the authority is empty.
    pub hosts: Vec<String>,
    /// Percent-decoded path, starting with `/` (or empty).
    pub path: String,
    query: Vec<(String, String)>,
    taken: Vec<String>,
}

/// The scheme of `url` (text before `://`), lower-cased, if it has one.
pub fn scheme_of(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once("://")?;
    let ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then(|| scheme.to_ascii_lowercase())
}

/// Decodes `%XX` escapes.
fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => return Err(Error::config(format!("bad percent escape in {s:?}"))),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Error::config(format!("{s:?} does not decode to UTF-8")))
}

/// Parses `"250ms"`, `"10s"`, `"2m"`, `"1h"` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        Error::config(format!(
            "{s:?} is not a duration (try \"500ms\" or \"10s\")"
        ))
    })?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(Error::config(format!(
                "{s:?} has unknown unit {unit:?} (ms, s, m, h)"
            )))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(Error::config(format!("{s:?} is not a valid duration")));
    }
    // `from_secs_f64` panics on values beyond `Duration::MAX`.
    Duration::try_from_secs_f64(secs)
        .map_err(|_| Error::config(format!("{s:?} is too long a duration")))
}

/// Checks one entry of a URL's host list, `host[:port]`, and returns it as `host:port`
/// (with `default_port` when it has none): the one rule every network driver applies.
///
/// A host is a name or IPv4 address (letters, digits, `-`, `.`, `_`) or an IPv6 address in
/// brackets (`[::1]:2379`); a port is 1–65535. Anything else is [`Error::Config`] naming the
/// entry and what is wrong with it.
///
/// ```
/// use kv_core::url::host_port;
/// assert_eq!(host_port("h1", 2379).unwrap(), "h1:2379");
/// assert_eq!(host_port("[::1]:2181", 2181).unwrap(), "[::1]:2181");
/// assert!(host_port(":2379", 2379).is_err());
/// assert!(host_port("h:0", 2379).is_err());
/// ```
pub fn host_port(entry: &str, default_port: u16) -> Result<String> {
    let e = entry.trim();
    let bad = |why: &str| {
        Error::config(format!(
            "bad host {e:?}: {why} (expected host, host:port or [ipv6]:port)"
        ))
    };
    let (host, port) = match e.strip_prefix('[') {
        Some(rest) => {
            let (addr, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ']'"))?;
            let ipv6 = addr.contains(':')
                && addr
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '%'));
            if !ipv6 {
                return Err(bad("the brackets hold no IPv6 address"));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("only :port may follow ']'"))?,
                ),
            };
            (&e[..addr.len() + 2], port)
        }
        None => match e.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (e, None),
        },
    };
    if host.is_empty() {
        return Err(bad("the host name is empty"));
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(bad(
            "a host name has only letters, digits, '-', '.' and '_' (IPv6 addresses go in brackets)",
        ));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(bad("the port is not a number from 1 to 65535")),
        },
    };
    Ok(format!("{host}:{port}"))
}

/// Checks every host of a list with [`host_port`] (default port added where missing); an
/// empty list is [`Error::Config`]. Accepts the URL's hosts or a comma-separated string's
/// pieces, so every driver parses host lists the same way (IPv6 in brackets included).
///
/// ```
/// use kv_core::url::host_list;
/// assert_eq!(host_list(["a", "[::1]:9"], 7).unwrap(), vec!["a:7", "[::1]:9"]);
/// assert!(host_list(Vec::<String>::new(), 7).is_err());
/// ```
pub fn host_list<I, S>(hosts: I, default_port: u16) -> Result<Vec<String>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let list: Vec<String> = hosts
        .into_iter()
        .map(|h| host_port(h.as_ref(), default_port))
        .collect::<Result<_>>()?;
    if list.is_empty() {
        return Err(Error::config(
            "no host given (expected host[:port][,host[:port]...])",
        ));
    }
    Ok(list)
}

impl ConnectUrl {
    /// Parses a URL. Errors are [`Error::Config`] and quote the URL (without its password).
    pub fn parse(url: &str) -> Result<Self> {
        let (scheme_raw, rest) = url.split_once("://").ok_or_else(|| {
            Error::config(format!(
                "{:?} is not a URL: expected scheme://...",
                redact(url)
            ))
        })?;
        let scheme = scheme_of(url)
            .ok_or_else(|| Error::config(format!("{scheme_raw:?} is not a valid URL scheme")))?;
        let (before_query, query_str) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        };
        let (userinfo, hostlist) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        // Decoding errors of the user info must not quote it: it holds the password.
        let userinfo_error = |what: &str| {
            Error::config(format!(
                "the {what} in {:?} is not validly percent-encoded UTF-8",
                redact(url)
            ))
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((a, b)) => (
                    Some(percent_decode(a).map_err(|_| userinfo_error("user name"))?),
                    Some(percent_decode(b).map_err(|_| userinfo_error("password"))?),
                ),
                None => (
                    Some(percent_decode(u).map_err(|_| userinfo_error("user name"))?),
                    None,
                ),
            },
        };
        let hosts: Vec<String> = if hostlist.is_empty() {
            Vec::new()
        } else {
            hostlist.split(',').map(|h| h.trim().to_string()).collect()
        };
        if hosts.iter().any(|h| h.is_empty()) {
            return Err(Error::config(format!(
                "{:?} has an empty host in its host list",
                redact(url)
            )));
        }
        let mut query = Vec::new();
        for part in query_str.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            query.push((percent_decode(k)?, percent_decode(v)?));
        }
        Ok(ConnectUrl {
            scheme,
            user,
            password,
            hosts,
            path: percent_decode(path)?,
            query,
            taken: Vec::new(),
        })
    }

    /// Takes a query option's value (the last one if repeated).
    pub fn take(&mut self, name: &str) -> Option<String> {
        self.taken.push(name.to_string());
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// Takes a duration option (see [`parse_duration`]).
    pub fn take_duration(&mut self, name: &str) -> Result<Option<Duration>> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => parse_duration(&v)
                .map(Some)
                .map_err(|e| Error::config(format!("option {name}: {e}"))),
        }
    }

    /// Takes a boolean option (`true`/`false`/`1`/`0`).
    pub fn take_bool(&mut self, name: &str) -> Result<Option<bool>> {
        match self.take(name).as_deref() {
            None => Ok(None),
            Some("true" | "1" | "yes") => Ok(Some(true)),
            Some("false" | "0" | "no") => Ok(Some(false)),
            Some(v) => Err(Error::config(format!(
                "option {name}: {v:?} is not true or false"
            ))),
        }
    }

    /// Takes the store-level `consistency=` option ([`Consistency`](crate::Consistency));
    /// `None` when absent, [`Error::Config`] naming the allowed values when unknown.
    pub fn take_consistency(&mut self) -> Result<Option<crate::Consistency>> {
        self.take(crate::consistency::OPTION)
            .map(|v| crate::Consistency::parse(&v))
            .transpose()
    }

    /// Fails if the URL has options nobody took, listing the ones this driver knows.
    pub fn finish(&self) -> Result<()> {
        let unknown: Vec<&str> = self
            .query
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !self.taken.iter().any(|t| t == k))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut known: Vec<&str> = self.taken.iter().map(String::as_str).collect();
        known.sort_unstable();
        known.dedup();
        Err(Error::config(format!(
            "unknown option(s) {} for a {} URL; known options: {}",
            unknown.join(", "),
            self.scheme,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )))
    }
}

/// `url` with the password of its user info replaced by `***`, for error messages and logs.
///
/// ```
/// assert_eq!(kv_core::url::redact("etcd://me:pw@h/app"), "etcd://me:***@h/app");
/// assert_eq!(kv_core::url::redact("zk://h/app"), "zk://h/app");
/// assert_eq!(kv_core::url::redact("etcd:/me:pw@h"), "etcd:/me:***@h");
/// assert_eq!(kv_core::url::redact("me:pw@h"), "me:***@h");
/// ```
pub fn redact(url: &str) -> String {
    // The user info ends at the last '@' and starts after the last '/' before it (or at the
    // start); everything after its first ':' is hidden. Malformed strings ("etcd:/me:pw@h",
    // "etcd:me:pw@h", which hides the user too) are redacted as well.
    let Some(at) = url.rfind('@') else {
        return url.to_string();
    };
    let head = &url[..at];
    let start = head.rfind('/').map(|i| i + 1).unwrap_or(0);
    match head[start..].find(':') {
        Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_path_query() {
        let mut u =
            ConnectUrl::parse("etcd://me:p%40ss@h1:2379,h2:2379/app/x?timeout=5s&tls=1").unwrap();
        assert_eq!(u.scheme, "etcd");
        assert_eq!(u.user.as_deref(), Some("me"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.hosts, vec!["h1:2379", "h2:2379"]);
        assert_eq!(u.path, "/app/x");
        assert_eq!(
            u.take_duration("timeout").unwrap(),
            Some(Duration::from_secs(5))
        );
        assert!(u.finish().is_err());
        assert_eq!(u.take_bool("tls").unwrap(), Some(true));
        u.finish().unwrap();
    }

    #[test]
    fn sled_forms() {
        let u = ConnectUrl::parse("sled:///var/lib/x").unwrap();
        assert!(u.hosts.is_empty());
        assert_eq!(u.path, "/var/lib/x");
        let u = ConnectUrl::parse("sled://./data").unwrap();
        assert_eq!(u.hosts, vec!["."]);
        assert_eq!(u.path, "/data");
    }

    #[test]
    fn errors_are_config() {
        for bad in ["nourl", "://x", "e tcd://x", "etcd://a,,b/", "etcd://h/%zz"] {
            assert!(
                matches!(ConnectUrl::parse(bad), Err(Error::Config { .. })),
                "{bad}"
            );
        }
        let mut u = ConnectUrl::parse("etcd://h/?timeout=soon").unwrap();
        assert!(u.take_duration("timeout").is_err());
        let e = ConnectUrl::parse("x://h/?bogus=1").unwrap();
        let msg = e.finish().unwrap_err().to_string();
        assert!(msg.contains("bogus"), "{msg}");
        assert!(ConnectUrl::parse("x://me:secret@h").is_ok());
    }

    #[test]
    fn consistency_option() {
        let mut u = ConnectUrl::parse("zk://h/?consistency=stale").unwrap();
        assert_eq!(
            u.take_consistency().unwrap(),
            Some(crate::Consistency::Stale)
        );
        u.finish().unwrap();
        let mut u = ConnectUrl::parse("zk://h/").unwrap();
        assert_eq!(u.take_consistency().unwrap(), None);
        let mut u = ConnectUrl::parse("zk://h/?consistency=eventual").unwrap();
        let msg = u.take_consistency().unwrap_err().to_string();
        assert!(msg.contains("linearizable, stale"), "{msg}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_port(" h.example-1_x ", 1).unwrap(), "h.example-1_x:1");
        assert_eq!(host_port("127.0.0.1:65535", 1).unwrap(), "127.0.0.1:65535");
        assert_eq!(host_port("[::1]", 2181).unwrap(), "[::1]:2181");
        assert_eq!(
            host_port("[fe80::1%eth0]:9", 1).unwrap(),
            "[fe80::1%eth0]:9"
        );
        for bad in [
            "", ":1", "h:", "h:0", "h:65536", "h:+1", "h:x", "h:1:2", "::1", "[::1", "[]:1",
            "[h]:1", "[::1]x", "h/x", "h@x", "h x", "hé",
        ] {
            match host_port(bad, 1) {
                Err(Error::Config { message }) => {
                    assert!(message.contains(&format!("{:?}", bad.trim())), "{message}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("etcd://u:secret@h/x"), "etcd://u:***@h/x");
        assert_eq!(scheme_of("SLED:///x").as_deref(), Some("sled"));
        assert_eq!(scheme_of("no-scheme"), None);
    }
}
