//! What a store remembers of the znodes it created, wrote or read, so that a put or delete is
//! one request (see [`crate::write`]).
//!
//! A znode's type (permanent, TTL, ephemeral lock value) is fixed when it is created, and
//! ZooKeeper does not report TTL znodes as such (`ephemeralOwner` reads 0), so each store keeps
//! a [`Known`] entry per path: the znode's `czxid` (which identifies that znode: a delete and
//! re-create gives a new one), its type, and the data version and `mzxid` last seen.

use std::collections::HashMap;

// foldhash: a fast, randomly seeded hash; SipHash was about 4 % of a new-key put's client
// instructions here (a lookup and an insert per call).
use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use zookeeper_client::Stat;

/// Most paths a store remembers: two generations of up to half of it each. When the young one
/// is full, the old one is dropped and the young one becomes old, so what was forgotten is what
/// was not used during the last 50,000 paths' worth of writes and reads (the next put of such a
/// path costs what a first one does; a delete reads first).
const KNOWN_MAX: usize = 100_000;

type Table = HashMap<String, Known, RandomState>;

/// The two generations: paths used lately, and those used before; a path found in `old` moves
/// to `young`.
#[derive(Default)]
struct Generations {
    young: Table,
    old: Table,
}

impl Generations {
    /// Makes room for one more path in `young`: when it is full it becomes `old`, and the old
    /// one is returned, to be dropped once the lock is released.
    fn make_room(&mut self) -> Option<Table> {
        if self.young.len() < KNOWN_MAX / 2 {
            return None;
        }
        let young = std::mem::take(&mut self.young);
        Some(std::mem::replace(&mut self.old, young))
    }
}

/// Bound of the first-put score: how many first puts in a row it takes to switch back.
const SCORE_MAX: i32 = 3;

/// What a store knows of the znode at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Known {
    /// Creation zxid: identifies the znode (a re-created znode has another).
    pub czxid: i64,
    /// TTL in ms of a TTL znode, `None` for a permanent one.
    pub ttl: Option<u64>,
    /// Data version last seen.
    pub version: i32,
    /// `mzxid` last seen (the key's version then).
    pub mzxid: i64,
}

/// The table of [`Known`] znodes by path, and the score of what first puts found.
#[derive(Default)]
pub(crate) struct KnownNodes {
    types: Mutex<Generations>,
    /// How often puts of paths missing from `types` found a znode there lately: above 0,
    /// such a put reads and writes first instead of creating first.
    unknown_existed: AtomicI32,
}

impl KnownNodes {
    fn table(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.types.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what a write or read of `path` returned: `stat` of a non-ephemeral znode of
    /// type `ttl`. A reply older than what is known (concurrent puts) is ignored.
    pub fn remember(&self, path: &str, stat: &Stat, ttl: Option<u64>) {
        let k = Known {
            czxid: stat.czxid,
            ttl,
            version: stat.version,
            mzxid: stat.mzxid,
        };
        let newer = |old: &Known| (k.czxid, k.mzxid) >= (old.czxid, old.mzxid);
        let mut t = self.table();
        if let Some(old) = t.young.get_mut(path) {
            if newer(old) {
                *old = k;
            }
            return;
        }
        // Not used lately: from the old generation (keeping its name) or new.
        let (name, entry) = match t.old.remove_entry(path) {
            Some((name, old)) => (name, if newer(&old) { k } else { old }),
            None => (path.to_string(), k),
        };
        let dropped = t.make_room();
        t.young.insert(name, entry);
        drop(t);
        drop(dropped);
    }

    /// Records a read of a key's znode when its type is certain (no children, not ephemeral:
    /// then the value header gives it).
    pub fn remember_read(&self, path: &str, stat: &Stat, ttl: Option<u64>) {
        if stat.num_children == 0 && stat.ephemeral_owner == 0 {
            self.remember(path, stat, ttl);
        }
    }

    /// Records what the first put of a path missing from the table found.
    pub fn first_put_found(&self, existed: bool) {
        let step = if existed { 1 } else { -1 };
        let _ = self
            .unknown_existed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((s + step).clamp(-SCORE_MAX, SCORE_MAX))
            });
    }

    /// True when first puts lately mostly found a znode (probe before creating).
    pub fn unknown_paths_exist(&self) -> bool {
        self.unknown_existed.load(Ordering::Relaxed) > 0
    }

    /// What is known of `path` (which then counts as used lately).
    pub fn get(&self, path: &str) -> Option<Known> {
        let mut t = self.table();
        if let Some(k) = t.young.get(path) {
            return Some(*k);
        }
        let (name, k) = t.old.remove_entry(path)?;
        let dropped = t.make_room();
        t.young.insert(name, k);
        drop(t);
        drop(dropped);
        Some(k)
    }

    pub fn forget(&self, path: &str) {
        let mut t = self.table();
        t.young.remove(path);
        t.old.remove(path);
    }

    /// Forgets every path below `root` (after `delete_tree`).
    pub fn forget_below(&self, root: &str) {
        let below = format!("{}/", root.trim_end_matches('/'));
        let mut t = self.table();
        t.young.retain(|p, _| !p.starts_with(&below));
        t.old.retain(|p, _| !p.starts_with(&below));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(czxid: i64, mzxid: i64) -> Stat {
        crate::codec::test_stat(czxid, mzxid, 0)
    }

    #[test]
    fn a_full_table_forgets_only_what_was_not_used_lately() {
        let known = KnownNodes::default();
        known.remember("hot", &stat(1, 1), None);
        // Three generations' worth of other paths; "hot" is read in between.
        for i in 0..(3 * KNOWN_MAX / 2) {
            known.remember(&format!("p{i}"), &stat(i as i64 + 2, i as i64 + 2), None);
            if i % 10_000 == 0 {
                assert!(known.get("hot").is_some(), "hot forgotten at {i}");
            }
        }
        let t = known.table();
        assert!(t.young.len() <= KNOWN_MAX / 2 && t.old.len() <= KNOWN_MAX / 2);
        drop(t);
        assert!(known.get("hot").is_some());
        // The last 50,000 paths are all known; the first ones are forgotten.
        let n = 3 * KNOWN_MAX / 2;
        assert!((n - KNOWN_MAX / 2..n).all(|i| known.get(&format!("p{i}")).is_some()));
        assert!(known.get("p0").is_none());
    }

    #[test]
    fn an_older_reply_does_not_replace_a_newer_one_in_either_generation() {
        let known = KnownNodes::default();
        known.remember("k", &stat(5, 9), None);
        // Push "k" into the old generation.
        for i in 0..KNOWN_MAX / 2 {
            known.remember(&format!("p{i}"), &stat(1, 1), None);
        }
        assert!(known.table().old.contains_key("k"));
        known.remember("k", &stat(5, 7), None);
        assert_eq!(known.get("k").map(|k| k.mzxid), Some(9));
        known.forget("k");
        assert_eq!(known.get("k"), None);
    }
}
