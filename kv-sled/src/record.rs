//! The on-disk record: `[version u64 BE][expires_at unix-ms u64 BE][flags u8][value]`.
//!
//! `expires_at == 0` means "no expiry". A tombstone (flag bit 0) marks a deleted key: it keeps
//! the key's latest version so watchers can order events, and its `expires_at` is the time
//! after which the reaper may remove it physically. A lock record (flag bit 1) was written by
//! a lock holder: it blocks other acquirers until it expires, while a plain value does not.

use std::time::{SystemTime, UNIX_EPOCH};

use kv_core::Result;

use crate::error::failed;

/// Bytes before the value.
pub(crate) const HEADER: usize = 17;
const FLAG_TOMBSTONE: u8 = 1;
const FLAG_LOCK: u8 = 2;

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub version: u64,
    /// Unix milliseconds; 0 = never.
    pub expires_at: u64,
    pub tombstone: bool,
    /// Written by a lock holder (a live lock record blocks other acquirers until it expires).
    pub lock: bool,
    pub value: Vec<u8>,
}

impl Record {
    pub fn live(version: u64, expires_at: u64, value: Vec<u8>) -> Self {
        Record {
            version,
            expires_at,
            tombstone: false,
            lock: false,
            value,
        }
    }

    pub fn tombstone(version: u64, remove_after: u64) -> Self {
        Record {
            version,
            expires_at: remove_after,
            tombstone: true,
            lock: false,
            value: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.value.len());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        let mut flags = 0;
        if self.tombstone {
            flags |= FLAG_TOMBSTONE;
        }
        if self.lock {
            flags |= FLAG_LOCK;
        }
        out.push(flags);
        out.extend_from_slice(&self.value);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < HEADER {
            return Err(failed(format!(
                "corrupt record: {} bytes, shorter than the {HEADER}-byte header",
                bytes.len()
            )));
        }
        let flags = bytes[16];
        if flags & !(FLAG_TOMBSTONE | FLAG_LOCK) != 0 {
            return Err(failed(format!(
                "corrupt record: unknown flags {flags:#04x}"
            )));
        }
        Ok(Record {
            version: u64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes")),
            expires_at: u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")),
            tombstone: flags & FLAG_TOMBSTONE != 0,
            lock: flags & FLAG_LOCK != 0,
            value: bytes[HEADER..].to_vec(),
        })
    }

    /// Present at `now` (not a tombstone, not expired).
    pub fn is_live(&self, now: u64) -> bool {
        !self.tombstone && (self.expires_at == 0 || self.expires_at > now)
    }
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Key of the expiry index: `[due u64 BE][stored key]`, so the index iterates by due time.
pub(crate) fn expiry_key(due: u64, stored_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + stored_key.len());
    k.extend_from_slice(&due.to_be_bytes());
    k.extend_from_slice(stored_key);
    k
}

/// Splits an expiry index key into (due, stored key).
pub(crate) fn parse_expiry_key(k: &[u8]) -> Option<(u64, &[u8])> {
    if k.len() < 8 {
        return None;
    }
    Some((u64::from_be_bytes(k[0..8].try_into().ok()?), &k[8..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_core::Error;

    #[test]
    fn round_trip() {
        for r in [
            Record::live(1, 0, vec![]),
            Record::live(u64::MAX, 1_700_000_000_000, b"hello".to_vec()),
            Record::tombstone(42, 99),
            Record::live(7, 0, vec![0u8; 70_000]),
        ] {
            let bytes = r.encode();
            assert_eq!(bytes.len(), HEADER + r.value.len());
            assert_eq!(Record::decode(&bytes).unwrap(), r);
        }
    }

    #[test]
    fn layout_is_big_endian() {
        let b = Record::live(0x0102, 0x0304, b"v".to_vec()).encode();
        assert_eq!(&b[0..8], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&b[8..16], &[0, 0, 0, 0, 0, 0, 3, 4]);
        assert_eq!(b[16], 0);
        assert_eq!(&b[17..], b"v");
        assert_eq!(Record::tombstone(1, 2).encode()[16], 1);
        // Versions sort like their byte encodings.
        assert!(
            Record::live(255, 0, vec![]).encode()[..8] < Record::live(256, 0, vec![]).encode()[..8]
        );
    }

    #[test]
    fn corrupt_records_are_errors() {
        assert!(matches!(
            Record::decode(&[0; 5]),
            Err(Error::Backend { .. })
        ));
        let mut b = Record::live(1, 0, vec![]).encode();
        b[16] = 0x80;
        assert!(Record::decode(&b).is_err());
    }

    #[test]
    fn liveness() {
        assert!(Record::live(1, 0, vec![]).is_live(u64::MAX));
        assert!(Record::live(1, 100, vec![]).is_live(99));
        assert!(!Record::live(1, 100, vec![]).is_live(100));
        assert!(!Record::tombstone(1, 0).is_live(0));
    }

    #[test]
    fn expiry_keys_sort_by_due_time() {
        let a = expiry_key(5, b"zzz");
        let b = expiry_key(256, b"aaa");
        assert!(a < b);
        assert_eq!(parse_expiry_key(&b), Some((256, &b"aaa"[..])));
        assert_eq!(parse_expiry_key(b"short"), None);
    }
}
