//! Watches: a [`Feed`] per watch for kv-core's watch engine, fed by the handle's shared
//! pool of blocking queries ([`crate::pool`]).

use std::sync::Arc;
use std::time::Duration;

use kv_core::raw::{Feed, Update};
use kv_core::{async_trait, Error, KvPair, Result};
use tokio::sync::watch;

use crate::group::{signature, Query, Target};
use crate::pool::{share, Msg};
use crate::store::Inner;

/// `wait=` of the blocking queries of a group that has run a while.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// `wait=` of a new group's first blocking query (doubling up to [`WAIT`]).
pub(crate) const FIRST_WAIT: Duration = Duration::from_millis(200);

/// Pause when a blocking query came back without a new index (Consul < 1.12 returns early on
/// missing keys), so the watch never spins.
pub(crate) const UNCHANGED_PAUSE: Duration = Duration::from_millis(100);

/// The next index to block on, following Consul's rules: reset (0: a plain read) when the
/// index goes backwards, never below 1 once a result was seen.
pub(crate) fn next_index(prev: u64, got: u64) -> u64 {
    if got < prev {
        0
    } else {
        got.max(1)
    }
}

/// One watch: its own reads, then the states its group hands it.
pub(crate) struct Pooled {
    inner: Arc<Inner>,
    id: u64,
    target: Target,
    /// Given to the pool on the first read.
    tx: Option<watch::Sender<Msg>>,
    rx: watch::Receiver<Msg>,
    /// The index of the last state, the number of the last failure and of index resets seen.
    seen: (Option<u64>, u64, u64),
}

impl Pooled {
    fn new(inner: Arc<Inner>, target: Target) -> Self {
        let (tx, rx) = watch::channel(Msg::default());
        let id = inner.pool.id();
        Pooled {
            inner,
            id,
            target,
            tx: Some(tx),
            rx,
            seen: (None, 0, 0),
        }
    }

    pub fn key(inner: Arc<Inner>, key: &str) -> Self {
        let full = inner.full(key);
        let key = key.to_string();
        Pooled::new(inner, Target::Key { full, key })
    }

    pub fn tree(inner: Arc<Inner>, prefix: &str) -> Self {
        let raw = inner.ns.subtree_start(prefix);
        let prefix = prefix.to_string();
        Pooled::new(inner, Target::Tree { raw, prefix })
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.inner.pool.leave(self.id);
    }
}

#[async_trait]
impl Feed for Pooled {
    /// A consistent (or, with `consistency=stale`, stale) read of the watched key or subtree
    /// through the pool, and its `X-Consul-Index`; the watch then follows its group.
    async fn read(&mut self) -> Result<(Vec<KvPair>, u64)> {
        let pool = &self.inner.pool;
        pool.join(&self.inner, self.id, &self.target, self.tx.take());
        {
            // What the group sent before this read is older than the read.
            let m = self.rx.borrow_and_update();
            self.seen = (
                m.state.as_ref().map(|s| s.1),
                m.failure.as_ref().map_or(0, |f| f.0),
                m.resets,
            );
        }
        let snap = {
            let _permit = pool.read_permit().await;
            pool.query(&self.inner, &Query::of(&self.target), 0, WAIT)
                .await?
        };
        let part = self.target.part(&snap.entries);
        let pairs = self.target.pairs(&self.inner, part)?;
        let cursor = next_index(0, snap.index);
        pool.ready(&self.inner, self.id, cursor, signature(part));
        Ok((pairs, cursor))
    }

    /// The watch's next state from its group (only when its own part changed).
    async fn next(&mut self, _cursor: u64) -> Result<Update> {
        loop {
            {
                let m = self.rx.borrow_and_update();
                if m.resets != self.seen.2 {
                    // The index went backwards: re-read (a typed stream gets a Resync).
                    self.seen.2 = m.resets;
                    return Ok(Update::Resync);
                }
                if let Some((pairs, index)) = &m.state {
                    if self.seen.0 != Some(*index) {
                        self.seen.0 = Some(*index);
                        return Ok(Update::State(pairs.clone(), *index));
                    }
                }
                if let Some((n, e)) = &m.failure {
                    if self.seen.1 != *n {
                        self.seen.1 = *n;
                        return Err(share(e));
                    }
                }
            }
            if self.rx.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
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
