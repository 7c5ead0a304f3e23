//! Watches: a [`Feed`] of blocking queries for kv-core's watch engine.

use std::sync::Arc;
use std::time::Duration;

use kv_core::raw::{Feed, Update};
use kv_core::{async_trait, KvPair, Result};

use crate::store::Inner;

/// `wait=` of every blocking query.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Pause when a blocking query came back without a new index (Consul < 1.12 returns early on
/// missing keys), so the watch never spins.
const UNCHANGED_PAUSE: Duration = Duration::from_millis(100);

/// The next index to block on, following Consul's rules: reset (0: a plain read) when the
/// index goes backwards, never below 1 once a result was seen.
pub(crate) fn next_index(prev: u64, got: u64) -> u64 {
    if got < prev {
        0
    } else {
        got.max(1)
    }
}

enum Target {
    /// The stored key and the user key.
    Key { full: String, key: String },
    /// The raw Consul prefix of the subtree and the normalized prefix.
    Tree { raw: String, prefix: String },
}

/// One watch's blocking queries (one query in flight per watch).
pub(crate) struct Blocking {
    inner: Arc<Inner>,
    target: Target,
}

impl Blocking {
    pub fn key(inner: Arc<Inner>, key: &str) -> Self {
        let full = inner.full(key);
        Blocking {
            inner,
            target: Target::Key {
                full,
                key: key.to_string(),
            },
        }
    }

    pub fn tree(inner: Arc<Inner>, prefix: &str) -> Self {
        let raw = inner.ns.subtree_start(prefix);
        Blocking {
            inner,
            target: Target::Tree {
                raw,
                prefix: prefix.to_string(),
            },
        }
    }

    /// The watched pairs and `X-Consul-Index`; blocks while the index is `index` (0: at once).
    async fn query(&self, index: u64) -> Result<(Vec<KvPair>, u64)> {
        let (inner, mode) = (&self.inner, self.inner.read);
        match &self.target {
            Target::Key { full, key } => {
                let (e, got) = inner.http.kv_get(full, Some((index, WAIT)), mode).await?;
                let pairs = match e {
                    Some(e) => vec![KvPair::new(key.clone(), e.value_bytes()?, e.modify_index)],
                    None => Vec::new(),
                };
                Ok((pairs, got))
            }
            Target::Tree { raw, prefix } => {
                let (entries, got) = inner.http.kv_list(raw, Some((index, WAIT)), mode).await?;
                Ok((inner.subtree_pairs(prefix, &entries)?, got))
            }
        }
    }
}

#[async_trait]
impl Feed for Blocking {
    /// A consistent (or, with `consistency=stale`, stale) read and its `X-Consul-Index`.
    async fn read(&mut self) -> Result<(Vec<KvPair>, u64)> {
        let (pairs, got) = self.query(0).await?;
        Ok((pairs, next_index(0, got)))
    }

    /// The blocking query at `cursor`: the whole watched state at the new index.
    async fn next(&mut self, cursor: u64) -> Result<Update> {
        let (pairs, got) = self.query(cursor).await?;
        if got < cursor {
            tracing::debug!(
                backend = crate::BACKEND,
                cursor,
                got,
                "X-Consul-Index went backwards: index reset"
            );
        } else if got == cursor && cursor > 0 {
            tokio::time::sleep(UNCHANGED_PAUSE).await;
        }
        Ok(Update::State(pairs, next_index(cursor, got)))
    }
}

#[cfg(test)]
mod tests {
    use super::next_index;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 0), 1);
        assert_eq!(next_index(5, 9), 9);
        assert_eq!(next_index(9, 5), 0);
        assert_eq!(next_index(9, 9), 9);
    }
}
