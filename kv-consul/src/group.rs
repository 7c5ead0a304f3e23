//! How watches share blocking queries: what a watch follows, what a query reads, which
//! query covers which watch, and how two queries merge under a common prefix.

use std::hash::{Hash, Hasher};

use kv_core::{KvPair, Result};

use crate::api::Entry;
use crate::store::Inner;

/// What one watch follows, in stored (raw) keys.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// The stored key and the user key.
    Key { full: String, key: String },
    /// The raw Consul prefix of the subtree and the normalized prefix.
    Tree { raw: String, prefix: String },
}

impl Target {
    /// The stored key, or the raw prefix every key of the subtree starts with.
    pub fn raw(&self) -> &str {
        match self {
            Target::Key { full, .. } => full,
            Target::Tree { raw, .. } => raw,
        }
    }

    /// This target's part of a snapshot sorted by key.
    pub fn part<'a>(&self, entries: &'a [Entry]) -> &'a [Entry] {
        match self {
            Target::Key { full, .. } => {
                match entries.binary_search_by(|e| e.key.as_str().cmp(full)) {
                    Ok(i) => &entries[i..=i],
                    Err(_) => &[],
                }
            }
            Target::Tree { raw, .. } => {
                let lo = entries.partition_point(|e| e.key.as_str() < raw.as_str());
                let len = entries[lo..].partition_point(|e| e.key.starts_with(raw.as_str()));
                &entries[lo..lo + len]
            }
        }
    }

    /// The watched pairs of a part (user keys, sorted; invalid stored keys skipped).
    pub fn pairs(&self, inner: &Inner, part: &[Entry]) -> Result<Vec<KvPair>> {
        match self {
            Target::Key { key, .. } => match part.first() {
                Some(e) => Ok(vec![KvPair::new(
                    key.clone(),
                    e.value_bytes()?,
                    e.modify_index,
                )]),
                None => Ok(Vec::new()),
            },
            Target::Tree { prefix, .. } => inner.subtree_pairs(prefix, part),
        }
    }
}

/// A fingerprint of a part: its keys and versions (kv's writes always change the version).
pub(crate) fn signature(part: &[Entry]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    part.len().hash(&mut h);
    for e in part {
        e.key.hash(&mut h);
        e.modify_index.hash(&mut h);
    }
    h.finish()
}

/// What one blocking query reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Query {
    /// One stored key (a plain GET).
    Key(String),
    /// Every stored key starting with this string (`?recurse`).
    Prefix(String),
}

impl Query {
    /// The query of a lone watch.
    pub fn of(t: &Target) -> Query {
        match t {
            Target::Key { full, .. } => Query::Key(full.clone()),
            Target::Tree { raw, .. } => Query::Prefix(raw.clone()),
        }
    }

    pub fn raw(&self) -> &str {
        match self {
            Query::Key(k) | Query::Prefix(k) => k,
        }
    }

    /// Whether this query's results hold everything `t` follows.
    pub fn covers(&self, t: &Target) -> bool {
        match (self, t) {
            (Query::Key(k), Target::Key { full, .. }) => k == full,
            (Query::Key(_), Target::Tree { .. }) => false,
            (Query::Prefix(p), t) => t.raw().starts_with(p.as_str()),
        }
    }

    /// Whether this query's results hold everything `other` reads.
    pub fn within(&self, prefix: &str) -> bool {
        self.raw().starts_with(prefix)
    }
}

/// The longest common prefix of two strings (on character boundaries).
pub(crate) fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let end = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or_else(|| a.len().min(b.len()), |((i, _), _)| i);
    &a[..end]
}

/// The prefix to merge under when every query slot is taken: the longest common prefix of
/// the two closest of `raws` (so groups stay narrow), cut after its last `/` (a whole
/// directory: watches on sibling keys then mostly find their group instead of forcing
/// another merge).
pub(crate) fn merge_prefix(raws: &[&str]) -> String {
    let mut all: Vec<&str> = raws.to_vec();
    all.sort_unstable();
    all.windows(2)
        .map(|w| common_prefix(w[0], w[1]))
        .max_by_key(|p| p.len())
        .map_or("", |p| p.rfind('/').map_or("", |i| &p[..=i]))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, index: u64) -> Entry {
        Entry {
            key: key.into(),
            value: None,
            session: None,
            modify_index: index,
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(common_prefix("ns/k/12", "ns/k/15"), "ns/k/1");
        assert_eq!(common_prefix("ns/a", "ns/a/"), "ns/a");
        assert_eq!(common_prefix("ab", "x"), "");
        assert_eq!(common_prefix("ñb", "ñc"), "ñ");
        assert_eq!(common_prefix("é", "è"), "");
        assert_eq!(
            merge_prefix(&["ns/a/1", "ns/b/1", "ns/a/2", "ns/c"]),
            "ns/a/"
        );
        assert_eq!(merge_prefix(&["ns/a/1", "ns/b"]), "ns/");
        assert_eq!(merge_prefix(&["x", "y"]), "");
        assert_eq!(merge_prefix(&["ns/k/0001", "ns/k/0002", "ns/j"]), "ns/k/");
        assert_eq!(merge_prefix(&["ns/a/b/1", "ns/a/c/2"]), "ns/a/");
    }

    #[test]
    fn coverage_and_parts() {
        let key = |k: &str| Target::Key {
            full: k.into(),
            key: k.into(),
        };
        let tree = |r: &str| Target::Tree {
            raw: r.into(),
            prefix: String::new(),
        };
        assert!(Query::Key("a".into()).covers(&key("a")));
        assert!(!Query::Key("a".into()).covers(&key("ab")));
        assert!(!Query::Key("a/".into()).covers(&tree("a/")));
        assert!(Query::Prefix("a".into()).covers(&key("ab")));
        assert!(Query::Prefix("a".into()).covers(&tree("a/")));
        assert!(!Query::Prefix("a/".into()).covers(&key("a")));
        let entries = [
            entry("a", 1),
            entry("a/1", 2),
            entry("a/2", 3),
            entry("ab", 4),
        ];
        assert_eq!(key("a/1").part(&entries).len(), 1);
        assert_eq!(key("a/3").part(&entries).len(), 0);
        assert_eq!(tree("a/").part(&entries).len(), 2);
        assert_eq!(tree("b/").part(&entries).len(), 0);
        assert_ne!(signature(&entries[..1]), signature(&entries[..2]));
        assert_ne!(signature(&[entry("a", 1)]), signature(&[entry("a", 2)]));
        assert_eq!(signature(&[]), signature(&[]));
    }
}
