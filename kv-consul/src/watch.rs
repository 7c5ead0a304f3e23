//! Watches through blocking queries.

use std::sync::Arc;
use std::time::Duration;

use kv_core::retry::Backoff;
use kv_core::watch::{key_watch, tree_watch, WatchSink};
use kv_core::{Error, KvPair, Result, TreeWatchStream, WatchStream};

use crate::Inner;

/// `wait=` of every blocking query.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Pause when a blocking query came back without a new index (Consul < 1.12 returns early on
/// missing keys), so the loop never spins.
const UNCHANGED_PAUSE: Duration = Duration::from_millis(100);

/// The next index to block on, following Consul's rules: reset when the index goes backwards,
/// never below 1 once a result was seen.
pub(crate) fn next_index(prev: u64, got: u64) -> u64 {
    if got < prev {
        0
    } else {
        got.max(1)
    }
}

enum Step<T> {
    State(T, u64),
    Failed(Error),
    Stop,
}

/// Runs one blocking query unless the watch is dropped or the store closed.
async fn step<T, F>(
    inner: &Inner,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    closed: impl std::future::Future<Output = ()>,
    query: F,
) -> Step<T>
where
    F: std::future::Future<Output = Result<(T, u64)>>,
{
    if inner.is_closed() || *shutdown.borrow() {
        return Step::Failed(Error::Closed);
    }
    tokio::select! {
        _ = closed => Step::Stop,
        _ = shutdown.changed() => Step::Failed(Error::Closed),
        r = query => match r {
            Ok((s, i)) => Step::State(s, i),
            Err(e) => Step::Failed(e),
        },
    }
}

async fn pause(
    d: Duration,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    closed: impl std::future::Future<Output = ()>,
) -> bool {
    tokio::select! {
        _ = closed => false,
        _ = shutdown.changed() => true,
        _ = tokio::time::sleep(d) => true,
    }
}

pub(crate) fn watch_key(inner: Arc<Inner>, key: String) -> WatchStream {
    let (w, stream) = key_watch();
    let full = inner.full(&key);
    let query = move |inner: Arc<Inner>, index: u64| {
        let (full, key) = (full.clone(), key.clone());
        async move {
            let (e, i) = inner
                .http
                .kv_get(&full, Some((index, WAIT)), inner.read)
                .await?;
            let pair = match e {
                Some(e) => Some(KvPair::new(key, e.value_bytes()?, e.modify_index)),
                None => None,
            };
            Ok((pair, i))
        }
    };
    tokio::spawn(blocking_loop(inner, w, query));
    stream
}

pub(crate) fn watch_tree(inner: Arc<Inner>, prefix: String) -> TreeWatchStream {
    let (w, stream) = tree_watch();
    let raw = inner.raw_subtree(&prefix);
    let query = move |inner: Arc<Inner>, index: u64| {
        let (raw, prefix) = (raw.clone(), prefix.clone());
        async move {
            let (entries, i) = inner
                .http
                .kv_list(&raw, Some((index, WAIT)), inner.read)
                .await?;
            Ok((inner.subtree_pairs(&prefix, &entries)?, i))
        }
    };
    tokio::spawn(blocking_loop(inner, w, query));
    stream
}

/// The blocking-query loop of every watch: query at the last index, emit the state, follow
/// Consul's index rules, report errors as `Err` items and back off, stop when the stream is
/// dropped or the store closed.
async fn blocking_loop<W, Q, F>(inner: Arc<Inner>, mut w: W, query: Q)
where
    W: WatchSink,
    Q: Fn(Arc<Inner>, u64) -> F + Send,
    F: std::future::Future<Output = Result<(W::State, u64)>> + Send,
{
    let mut shutdown = inner.shutdown.subscribe();
    let mut index = 0u64;
    let mut backoff = Backoff::default();
    loop {
        let q = query(inner.clone(), index);
        match step(&inner, &mut shutdown, w.closed(), q).await {
            Step::Stop => return,
            Step::Failed(Error::Closed) => {
                w.error(Error::Closed);
                return;
            }
            Step::Failed(e) => {
                if !w.error(e) {
                    return;
                }
                let d = backoff.next_delay();
                if !pause(d, &mut shutdown, w.closed()).await {
                    return;
                }
            }
            Step::State(state, got) => {
                backoff.reset();
                let unchanged = got == index && index > 0;
                if !w.emit(state) {
                    return;
                }
                index = next_index(index, got);
                if unchanged && !pause(UNCHANGED_PAUSE, &mut shutdown, w.closed()).await {
                    return;
                }
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
