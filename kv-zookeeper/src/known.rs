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

/// Most paths a store remembers; the table is cleared when full (then the first put of a path
/// costs a `create` attempt again).
const KNOWN_MAX: usize = 100_000;

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
    types: Mutex<HashMap<String, Known, RandomState>>,
    /// How often puts of paths missing from `types` found a znode there lately: above 0,
    /// such a put reads and writes first instead of creating first.
    unknown_existed: AtomicI32,
}

impl KnownNodes {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known, RandomState>> {
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
        let mut t = self.table();
        if let Some(old) = t.get_mut(path) {
            if (k.czxid, k.mzxid) >= (old.czxid, old.mzxid) {
                *old = k;
            }
            return;
        }
        if t.len() >= KNOWN_MAX {
            t.clear();
        }
        t.insert(path.to_string(), k);
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

    pub fn get(&self, path: &str) -> Option<Known> {
        self.table().get(path).copied()
    }

    pub fn forget(&self, path: &str) {
        self.table().remove(path);
    }

    /// Forgets every path below `root` (after `delete_tree`).
    pub fn forget_below(&self, root: &str) {
        let below = format!("{}/", root.trim_end_matches('/'));
        self.table().retain(|p, _| !p.starts_with(&below));
    }
}
