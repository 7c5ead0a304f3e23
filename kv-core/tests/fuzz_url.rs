//! Property tests (proptest) of URL parsing: `ConnectUrl::parse`, its option readers and
//! `parse_duration`.
//!
//! - arbitrary and URL-shaped garbage never panics, and every rejection is `Error::Config`;
//! - a URL built from percent-encoded parts parses back into exactly those parts;
//! - a rejected URL's error never shows its password;
//! - durations: never panic, accept exactly `<number>[ms|s|m|h]` that fits a `Duration`.

use std::time::Duration;

use kv_core::url::{host_port, parse_duration, scheme_of};
use kv_core::{ConnectUrl, Error};
use proptest::prelude::*;

const CASES: u32 = 1000;

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// URL-shaped garbage: pieces of URL syntax in random order.
fn urlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-z0-9]{1,6}",
        1 => Just("://".to_string()),
        1 => Just(":".to_string()),
        1 => Just("/".to_string()),
        1 => Just("@".to_string()),
        1 => Just(",".to_string()),
        1 => Just("?".to_string()),
        1 => Just("&".to_string()),
        1 => Just("=".to_string()),
        1 => Just("%".to_string()),
        1 => Just("%4".to_string()),
        1 => Just("%zz".to_string()),
        1 => Just("%ff".to_string()),
        1 => Just("%C3%A9".to_string()),
        1 => Just(" ".to_string()),
        1 => Just("etcd".to_string()),
        1 => Just("timeout=".to_string()),
        1 => any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        3 => prop::collection::vec(piece, 0..16).prop_map(|v| v.concat()),
        1 => any::<String>(),
    ]
}

#[derive(Debug, Clone)]
struct Parts {
    scheme: String,
    user: Option<String>,
    password: Option<String>,
    hosts: Vec<String>,
    path: String,
    query: Vec<(String, String)>,
}

fn parts() -> impl Strategy<Value = Parts> {
    (
        "[a-zA-Z][a-zA-Z0-9+.-]{0,7}",
        prop::option::of(any::<String>()),
        prop::option::of(any::<String>()),
        prop::collection::vec("[a-z0-9.-]{1,10}(:[0-9]{1,5})?", 0..4),
        prop::collection::vec(any::<String>(), 0..4),
        prop::collection::vec(("[a-z_]{1,8}", any::<String>()), 0..4),
    )
        .prop_map(|(scheme, user, password, hosts, segs, query)| Parts {
            scheme,
            // A password needs a user in the URL syntax.
            password: user.as_ref().and(password),
            user,
            hosts,
            path: segs.iter().map(|s| format!("/{s}")).collect(),
            query,
        })
}

fn build(p: &Parts) -> String {
    let mut url = format!("{}://", p.scheme);
    if let Some(u) = &p.user {
        url.push_str(&encode(u));
        if let Some(pw) = &p.password {
            url.push(':');
            url.push_str(&encode(pw));
        }
        url.push('@');
    }
    url.push_str(&p.hosts.join(","));
    for seg in p.path.split('/').skip(1) {
        url.push('/');
        url.push_str(&encode(seg));
    }
    let q: Vec<String> = p
        .query
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    if !q.is_empty() {
        url.push('?');
        url.push_str(&q.join("&"));
    }
    url
}

proptest! {
    // Failures are kept as explicit regression tests, not in files next to the sources.
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// Garbage never panics; rejections are `Config`; an accepted URL's scheme is the one
    /// `scheme_of` sees, lower-cased, and `finish` rejects every option nobody took.
    #[test]
    fn garbage_is_a_config_error_or_a_consistent_parse(url in urlish()) {
        match ConnectUrl::parse(&url) {
            Ok(mut u) => {
                prop_assert_eq!(Some(u.scheme.clone()), scheme_of(&url));
                prop_assert_eq!(u.scheme.clone(), u.scheme.to_ascii_lowercase());
                prop_assert!(u.hosts.iter().all(|h| !h.is_empty()));
                prop_assert!(u.path.is_empty() || url.contains('/'));
                // Option readers never panic either.
                let _ = u.take_duration("timeout");
                let _ = u.take_bool("tls");
                match u.finish() {
                    Ok(()) => {}
                    Err(Error::Config { message }) => prop_assert!(message.contains("unknown option"), "{}", message),
                    Err(e) => prop_assert!(false, "finish: not Config: {:?}", e),
                }
            }
            Err(Error::Config { message }) => prop_assert!(!message.is_empty()),
            Err(e) => prop_assert!(false, "{:?}: not a Config error: {:?}", url, e),
        }
    }

    /// A URL assembled from percent-encoded parts parses back into exactly those parts.
    #[test]
    fn encoded_parts_round_trip(p in parts()) {
        let url = build(&p);
        let mut u = ConnectUrl::parse(&url).map_err(|e| TestCaseError::fail(format!("{url:?}: {e}")))?;
        prop_assert_eq!(&u.scheme, &p.scheme.to_ascii_lowercase());
        prop_assert_eq!(&u.user, &p.user);
        prop_assert_eq!(&u.password, &p.password);
        prop_assert_eq!(&u.hosts, &p.hosts);
        prop_assert_eq!(&u.path, &p.path);
        for (k, _) in &p.query {
            let last = p.query.iter().rev().find(|(k2, _)| k2 == k).map(|(_, v)| v.clone());
            prop_assert_eq!(u.take(k), last);
        }
        prop_assert!(u.finish().is_ok());
    }

    /// Whatever goes wrong, the error message does not show the password.
    #[test]
    fn errors_never_show_the_password(
        p in parts(),
        secret in "[A-Z]{2}(%|%[0-9A-F]|%zz|[A-Z]){3,10}",
        breakage in 0usize..6,
    ) {
        let mut p = p;
        p.user = Some(p.user.unwrap_or_else(|| "me".into()));
        p.password = Some("PLACEHOLDER".into());
        let mut url = build(&p).replace("PLACEHOLDER", &format!("SECRET{secret}"));
        // Break the URL in one of several ways (or not at all).
        match breakage {
            0 => url.push_str("/bad%zz"),
            1 => url.push_str("?x=%"),
            2 => url = url.replacen("@", "@,", 1),
            3 => url = format!("e {url}"),
            4 => url.push_str("?timeout=forever"),
            _ => {}
        }
        let errors: Vec<Error> = match ConnectUrl::parse(&url) {
            Err(e) => vec![e],
            Ok(mut u) => {
                let mut errors = Vec::new();
                errors.extend(u.take_duration("timeout").err());
                errors.extend(u.finish().err());
                errors
            }
        };
        for e in errors {
            let shown = format!("{e} {e:?}");
            prop_assert!(!shown.contains("SECRET"), "{:?} -> {}", url, shown);
        }
    }

    /// `parse_duration` never panics and accepts exactly a number with a known unit whose
    /// value fits a `Duration`; rejections are `Config` errors quoting the input.
    #[test]
    fn durations(num in "[0-9]{0,30}(\\.[0-9]{0,6})?", unit in "(|ms|s|m|h|d|us| s|x)", junk in "( |)") {
        let input = format!("{junk}{num}{unit}{junk}");
        let got = parse_duration(&input);
        let value: Option<f64> = num.parse().ok();
        let secs = value.and_then(|v| match unit.as_str() {
            "ms" => Some(v / 1000.0),
            "" | "s" => Some(v),
            "m" => Some(v * 60.0),
            "h" => Some(v * 3600.0),
            _ => None,
        });
        let expected = secs.and_then(|s| Duration::try_from_secs_f64(s).ok());
        match (got, expected) {
            (Ok(d), Some(e)) => prop_assert_eq!(d, e),
            (Err(Error::Config { message }), None) => prop_assert!(message.contains(input.trim()), "{}", message),
            (got, expected) => prop_assert!(false, "{:?}: got {:?}, expected {:?}", input, got, expected),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// `host_port`: never panics; accepts a name, IPv4 or bracketed IPv6 address with a port
    /// of 1-65535 or none (then the default), returns `host:port` and is idempotent;
    /// everything else is a `Config` error quoting the entry.
    #[test]
    fn host_port_entries(
        host in prop_oneof![
            3 => "[a-z0-9][a-z0-9._-]{0,10}",
            1 => Just("[::1]".to_string()),
            1 => Just("[fe80::1%eth0]".to_string()),
            1 => Just("".to_string()),
            1 => "[ -~]{0,6}",
            1 => any::<String>(),
        ],
        port in prop_oneof![
            2 => Just(None),
            3 => (0u32..70_000).prop_map(|p| Some(p.to_string())),
            1 => "[ -~]{0,4}".prop_map(Some),
        ],
        default in 1u16..,
    ) {
        let entry = match &port {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let host_ok = !host.is_empty()
            && (host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                || host == "[::1]" || host == "[fe80::1%eth0]");
        let port_ok = match &port {
            None => Some(default),
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u16>().ok().filter(|n| *n > 0),
            Some(_) => None,
        };
        match (host_port(&entry, default), host_ok, port_ok) {
            (Ok(hp), true, Some(n)) => {
                prop_assert_eq!(&hp, &format!("{host}:{n}"));
                prop_assert_eq!(host_port(&hp, 1).ok(), Some(hp.clone()));
            }
            (Err(Error::Config { message }), _, _) if !host_ok || port_ok.is_none() => {
                prop_assert!(message.contains(&format!("{:?}", entry.trim())), "{}", message);
            }
            // Surrounding white space is trimmed, and random ASCII can itself spell host:port.
            (got, _, _) => {
                let trimmed = entry.trim();
                let reparsed = trimmed.rsplit_once(':').map(|(h, p)| (h.to_string(), Some(p.to_string())));
                prop_assert!(trimmed != entry || reparsed.is_some_and(|(h, _)| h != host),
                    "{:?}: got {:?} (host ok {}, port {:?})", entry, got, host_ok, port_ok);
            }
        }
    }
}

/// Regression: a duration too large for `Duration` (here `?timeout=` with 30 digits) used to
/// panic in `Duration::from_secs_f64` instead of being a `Config` error.
#[test]
fn huge_durations_are_config_errors() {
    for s in [
        "999999999999999999999999999999s",
        "99999999999999999999h",
        "1e400",
    ] {
        assert!(
            matches!(parse_duration(s), Err(Error::Config { .. })),
            "{s}"
        );
    }
    let mut u = ConnectUrl::parse("etcd://h/?timeout=99999999999999999999999h").unwrap();
    assert!(matches!(
        u.take_duration("timeout"),
        Err(Error::Config { .. })
    ));
}

/// Regression: a password that is not validly percent-encoded used to be quoted in the error
/// (`bad percent escape in "s3cr%t"`).
#[test]
fn bad_password_escapes_are_not_shown() {
    for url in [
        "etcd://me:s3cr%t@h/x",
        "etcd://me:s3cr%zzt@h/x",
        "etcd://me:s3cr%C3t@h/x",
    ] {
        let e = ConnectUrl::parse(url).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(matches!(e, Error::Config { .. }), "{url}");
        assert!(!shown.contains("s3cr"), "{url}: {shown}");
        assert!(
            shown.contains("password") && shown.contains("me:***@h/x"),
            "{shown}"
        );
    }
    let e = ConnectUrl::parse("etcd://m%zz@h/x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("user name"), "{e}");
}
