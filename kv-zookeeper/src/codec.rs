//! The header kv puts in front of every value stored in a znode.
//!
//! - empty data or first byte `0x00`: no value (an implicit parent, or a deleted key that
//!   keeps its children) — not a key;
//! - `0x01` + value: a key without TTL;
//! - `0x02` + TTL in ms (8 bytes, big endian) + value: a key that expires TTL after the
//!   znode's `mtime`;
//! - `0x03`: a lock contender (bookkeeping, never a key);
//! - anything else: a znode written by another program, not a key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zookeeper_client::Stat;

const NO_VALUE: u8 = 0x00;
const VALUE: u8 = 0x01;
const VALUE_TTL: u8 = 0x02;
/// First byte of a lock contender node.
pub const CONTENDER: u8 = 0x03;

/// Header size of a value with TTL (the largest header).
pub const MAX_HEADER: usize = 9;

/// Data of a node that holds no value.
pub const TOMBSTONE: &[u8] = &[NO_VALUE];

/// Encodes a value with an optional TTL.
pub fn encode(value: &[u8], ttl: Option<Duration>) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + MAX_HEADER);
    match ttl {
        None => out.push(VALUE),
        Some(t) => {
            out.push(VALUE_TTL);
            out.extend_from_slice(&(t.as_millis() as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(value);
    out
}

/// What a znode holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Not a key (implicit parent, tombstone, contender, foreign data).
    NoValue,
    /// A live value.
    Value(Vec<u8>),
    /// A value whose TTL has passed (treat as absent, delete it).
    Expired,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The expiry time (ms since epoch) of a TTL value, if the data has a TTL header.
pub fn expiry_ms(data: &[u8], stat: &Stat) -> Option<i64> {
    if data.len() >= MAX_HEADER && data[0] == VALUE_TTL {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[1..9]);
        Some(stat.mtime.saturating_add(u64::from_be_bytes(b) as i64))
    } else {
        None
    }
}

/// Decodes node data (`stat` gives the modification time for TTL values).
pub fn decode(mut data: Vec<u8>, stat: &Stat, now: i64) -> Decoded {
    match data.first() {
        Some(&VALUE) => {
            data.remove(0);
            Decoded::Value(data)
        }
        Some(&VALUE_TTL) if data.len() >= MAX_HEADER => {
            let exp = expiry_ms(&data, stat).unwrap_or(i64::MAX);
            if now >= exp {
                Decoded::Expired
            } else {
                data.drain(..MAX_HEADER);
                Decoded::Value(data)
            }
        }
        _ => Decoded::NoValue,
    }
}

/// The TTL (ms) in a value header, if any.
pub fn header_ttl(data: &[u8]) -> Option<u64> {
    if data.len() >= MAX_HEADER && data[0] == VALUE_TTL {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[1..9]);
        Some(u64::from_be_bytes(b))
    } else {
        None
    }
}

/// True when a znode (old header TTL `old_ttl`, stat `stat`) must be deleted and re-created
/// to hold a value with `ttl`: TTL znodes keep the TTL they were created with, and a lock
/// value is ephemeral. ZooKeeper reports `ephemeralOwner = 0` for TTL znodes, so the header
/// written with them tells their type.
pub fn needs_replace(old_ttl: Option<u64>, stat: &Stat, ttl: Option<Duration>) -> bool {
    stat.num_children == 0
        && (stat.ephemeral_owner != 0 || old_ttl != ttl.map(|t| t.as_millis() as u64))
}

/// Escapes a key or namespace for use as a znode path: ZooKeeper (Java, UTF-16) refuses
/// characters outside the Basic Multilingual Plane and some ranges inside it, so those (and
/// `%` itself) are written as `%XX` UTF-8 escapes. `/` is kept unless `slash` is set.
pub fn escape_path(key: &str, slash: bool) -> String {
    let mut out = String::with_capacity(key.len());
    escape_path_into(&mut out, key, slash);
    out
}

/// [`escape_path`] appended to `out` (one allocation for a whole znode path).
pub fn escape_path_into(out: &mut String, key: &str, slash: bool) {
    // Most keys are ASCII without `%` (and without `/` when it must be escaped): as they are.
    if key
        .bytes()
        .all(|b| b.is_ascii() && b != b'%' && !(slash && b == b'/'))
    {
        out.push_str(key);
        return;
    }
    for c in key.chars() {
        let u = c as u32;
        let bad = c == '%'
            || (slash && c == '/')
            || (0xe000..=0xf8ff).contains(&u)
            || (0xfff0..=0xffff).contains(&u)
            || u >= 0x10000;
        if bad {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
}

/// Reverses [`escape_path`].
pub fn unescape_path(path: &str) -> String {
    if !path.contains('%') {
        return path.to_string();
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() && path.is_char_boundary(i + 3) {
            if let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| path.to_string())
}

/// A `Stat` of a permanent znode with these zxids, created and modified at `mtime`, the rest 0.
#[cfg(test)]
pub(crate) fn test_stat(czxid: i64, mzxid: i64, mtime: i64) -> Stat {
    Stat {
        czxid,
        mzxid,
        pzxid: mzxid,
        ctime: mtime,
        mtime,
        version: 0,
        cversion: 0,
        aversion: 0,
        ephemeral_owner: 0,
        data_length: 0,
        num_children: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(mtime: i64) -> Stat {
        test_stat(1, 1, mtime)
    }

    #[test]
    fn round_trip() {
        let s = stat(1000);
        assert_eq!(
            decode(encode(b"abc", None), &s, 0),
            Decoded::Value(b"abc".to_vec())
        );
        let ttl = encode(b"x", Some(Duration::from_millis(500)));
        assert_eq!(decode(ttl.clone(), &s, 1499), Decoded::Value(b"x".to_vec()));
        assert_eq!(decode(ttl, &s, 1500), Decoded::Expired);
        assert_eq!(decode(vec![], &s, 0), Decoded::NoValue);
        assert_eq!(decode(TOMBSTONE.to_vec(), &s, 0), Decoded::NoValue);
        assert_eq!(decode(vec![CONTENDER], &s, 0), Decoded::NoValue);
        assert_eq!(decode(b"foreign".to_vec(), &s, 0), Decoded::NoValue);
        assert_eq!(decode(encode(b"", None), &s, 0), Decoded::Value(vec![]));
        assert_eq!(
            header_ttl(&encode(b"x", Some(Duration::from_millis(7)))),
            Some(7)
        );
        assert_eq!(header_ttl(&encode(b"x", None)), None);
    }

    #[test]
    fn escapes() {
        for k in [
            "a/b",
            "emoji/🦀",
            "p%c/x",
            "\u{e000}",
            "ünï/çødé",
            "%",
            "a%2",
        ] {
            let e = escape_path(k, false);
            assert!(e.chars().all(|c| (c as u32) < 0xe000), "{e}");
            assert_eq!(unescape_path(&e), k);
        }
        assert_eq!(escape_path("a/b", true), "a%2Fb");
        // The ASCII fast path keeps what needs no escaping, and appends.
        assert_eq!(escape_path("app/db-1_x.y", false), "app/db-1_x.y");
        assert_eq!(escape_path("db-1", true), "db-1");
        let mut out = String::from("/ns/");
        escape_path_into(&mut out, "a%b", false);
        escape_path_into(&mut out, "/c", true);
        assert_eq!(out, "/ns/a%25b%2Fc");
    }
}
