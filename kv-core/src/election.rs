//! Leader election on any [`Store`], with terms that fence a deposed leader's writes.
//!
//! Modelled on Apache Curator's `LeaderLatch` / `LeaderSelector` and docker/leadership, built
//! only on the public [`Store`] API: leadership *is* the lock at the election key, the lock's
//! value names the leader, and the lock's [fencing token](crate::Lock::fencing_token) is the
//! **term**: it strictly increases with every election, on every backend, so a leader that was
//! paused past its TTL (GC, SIGSTOP, VM stall) and resumes believing it still leads can be
//! told apart from its successor. Guard its writes with [`Txn::when_held`](crate::Txn) (or
//! [`Leadership::guard`]) and the stale ones fail with [`Error::FencingFailed`].
//!
//! - [`Candidate::campaign`] waits until elected (drop the future to stop campaigning) and
//!   returns a [`Leadership`]: `term()`, `lost()` (resolves on loss), `resign()`.
//! - [`Candidate::run`] is the loop form: it re-campaigns after each loss and yields
//!   [`ElectionEvent`]s (`Elected { term }`, `Lost { term, reason }`).
//! - [`observe`] follows the current leader from anywhere: a deduplicated stream of
//!   `Option<Leader>` that rides out watch errors and never ends silently.
//!
//! At most one `Leadership` per key is current at any time: two holders can only overlap
//! while the older one has not noticed its loss yet, and its term is then smaller and its
//! guarded writes are rejected.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn kv_core::Store>) -> kv_core::Result<()> {
//! use std::time::Duration;
//! use kv_core::election::Candidate;
//! use kv_core::Txn;
//!
//! let candidate = Candidate::new(store.clone(), "services/scheduler/leader", "node-1", Duration::from_secs(10));
//! let leadership = candidate.campaign().await?; // waits until elected
//! println!("leading in term {}", leadership.term());
//! // Writes that must not come from a deposed leader:
//! store.txn(leadership.guard().put("services/scheduler/plan", "v1")).await?;
//! tokio::select! {
//!     e = leadership.lost() => println!("deposed: {e}"),
//!     _ = tokio::time::sleep(Duration::from_secs(60)) => leadership.resign().await?,
//! }
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::lock::{Lock, LostSignal};
use crate::pair::{KvPair, LockOptions};
use crate::retry::Backoff;
use crate::store::Store;
use crate::txn::Txn;

/// One participant in the election at a key. Cheap to clone.
#[derive(Clone)]
pub struct Candidate {
    store: Arc<dyn Store>,
    key: String,
    value: Vec<u8>,
    ttl: Duration,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("key", &self.key)
            .field("value", &String::from_utf8_lossy(&self.value))
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Candidate {
    /// A candidate for the election at `key`, naming itself `node_value` while it leads.
    /// `ttl` bounds how long a crashed or partitioned leader keeps the office (it must be at
    /// least the backend's [`Capabilities::min_ttl`](crate::Capabilities::min_ttl)).
    pub fn new(
        store: Arc<dyn Store>,
        key: impl Into<String>,
        node_value: impl Into<Vec<u8>>,
        ttl: Duration,
    ) -> Self {
        Candidate {
            store,
            key: key.into(),
            value: node_value.into(),
            ttl,
        }
    }

    /// The election key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Waits until this candidate is elected. Dropping the future stops campaigning and
    /// removes whatever the attempt had created (docker/leadership cannot do this).
    ///
    /// ```no_run
    /// # async fn demo(c: kv_core::election::Candidate) -> kv_core::Result<()> {
    /// let bounded = tokio::time::timeout(std::time::Duration::from_secs(5), c.campaign()).await;
    /// match bounded {
    ///     Ok(leadership) => println!("term {}", leadership?.term()),
    ///     Err(_) => println!("not elected within 5 s; stopped campaigning"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn campaign(&self) -> Result<Leadership> {
        let options = LockOptions::with_value(self.value.clone()).ttl(self.ttl);
        let lock = self.store.new_lock(&self.key, options).await?;
        Ok(Leadership { lock })
    }

    /// The loop form: campaigns, reports [`ElectionEvent::Elected`], waits for the loss,
    /// reports [`ElectionEvent::Lost`] and campaigns again, until the stream is dropped
    /// (which resigns). Campaign errors are reported as [`ElectionEvent::Error`] and retried
    /// with back-off; the stream ends only after `Error(Error::Closed)` (store closed).
    ///
    /// ```no_run
    /// # async fn demo(c: kv_core::election::Candidate) {
    /// use futures::StreamExt;
    /// use kv_core::election::ElectionEvent;
    /// let mut events = c.run();
    /// while let Some(ev) = events.next().await {
    ///     match ev {
    ///         ElectionEvent::Elected { term } => println!("leading, term {term}"),
    ///         ElectionEvent::Lost { term, reason } => println!("term {term} ended: {reason}"),
    ///         ElectionEvent::Error(e) => println!("campaign error (retrying): {e}"),
    ///         _ => {}
    ///     }
    /// }
    /// # }
    /// ```
    pub fn run(self) -> Campaign {
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(run_loop(self, tx));
        Campaign { rx, task }
    }
}

/// The office while held: returned by [`Candidate::campaign`]. Dropping it resigns (in the
/// background); [`resign`](Leadership::resign) does so and reports the outcome.
#[derive(Debug)]
pub struct Leadership {
    lock: Lock,
}

impl Leadership {
    /// The term: this election's fencing token, larger than every earlier term at this key.
    pub fn term(&self) -> u64 {
        self.lock.fencing_token()
    }

    /// The election key.
    pub fn key(&self) -> &str {
        self.lock.key()
    }

    /// The value this leader published (its node name).
    pub fn value(&self) -> &[u8] {
        self.lock.value()
    }

    /// True once leadership was lost.
    pub fn is_lost(&self) -> bool {
        self.lock.is_lost()
    }

    /// Resolves when leadership is lost (TTL passed without renewal, key deleted or
    /// overwritten, session lost, store closed), with [`Error::LockLost`] and the reason.
    pub async fn lost(&self) -> Error {
        self.lock.lost_signal().wait().await
    }

    /// The loss signal, to learn of loss from another task.
    pub fn lost_signal(&self) -> LostSignal {
        self.lock.lost_signal()
    }

    /// A transaction that applies only while this term is current (see [`Txn::when_held`]).
    pub fn guard(&self) -> Txn {
        Txn::new().when_held(&self.lock)
    }

    /// The lock behind the office.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Gives up the office; the next candidate is elected. [`Error::LockLost`] if it had
    /// already been lost.
    pub async fn resign(self) -> Result<()> {
        self.lock.unlock().await
    }
}

/// What [`Candidate::run`] reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum ElectionEvent {
    /// This candidate now leads, in `term` (guard writes with [`Txn::when_fenced`]`(key, term)`).
    Elected {
        /// The term (fencing token).
        term: u64,
    },
    /// Leadership of `term` ended; the candidate campaigns again.
    Lost {
        /// The term that ended.
        term: u64,
        /// Why.
        reason: String,
    },
    /// Campaigning failed; retried with back-off unless it is [`Error::Closed`] (then the stream ends).
    Error(Error),
}

/// The stream of [`Candidate::run`]. Dropping it stops campaigning and resigns.
pub struct Campaign {
    rx: mpsc::Receiver<ElectionEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Campaign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Campaign").finish_non_exhaustive()
    }
}

impl Stream for Campaign {
    type Item = ElectionEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ElectionEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Campaign {
    fn drop(&mut self) {
        // Dropping the task drops its Lock, which releases it in the background.
        self.task.abort();
    }
}

async fn run_loop(candidate: Candidate, tx: mpsc::Sender<ElectionEvent>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let leadership = tokio::select! {
            r = candidate.campaign() => r,
            _ = tx.closed() => return,
        };
        match leadership {
            Ok(l) => {
                backoff.reset();
                let term = l.term();
                if tx.send(ElectionEvent::Elected { term }).await.is_err() {
                    let _ = l.resign().await;
                    return;
                }
                tokio::select! {
                    e = l.lost() => {
                        let reason = match e {
                            Error::LockLost { reason, .. } => reason,
                            other => other.to_string(),
                        };
                        drop(l);
                        if tx.send(ElectionEvent::Lost { term, reason }).await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => {
                        let _ = l.resign().await;
                        return;
                    }
                }
            }
            Err(Error::Closed) => {
                let _ = tx.send(ElectionEvent::Error(Error::Closed)).await;
                return;
            }
            Err(e) => {
                if tx.send(ElectionEvent::Error(e)).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = backoff.wait() => {}
                    _ = tx.closed() => return,
                }
            }
        }
    }
}

/// The current leader as [`observe`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The value the leader published (its node name).
    pub value: Vec<u8>,
    /// Its term (the election key's version = the leader's fencing token).
    pub term: u64,
}

impl Leader {
    /// The value as text (lossy).
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// The stream of [`observe`]: `Ok(Some(leader))`, `Ok(None)` (no leader), or `Err` items.
pub type LeaderStream = Pin<Box<dyn Stream<Item = Result<Option<Leader>>> + Send>>;

/// Follows the leader of the election at `key` (docker/leadership's `Follower`, without its
/// hang): the first item is the current leader (or `None`), then one item per change, with
/// consecutive duplicates removed. Watch errors arrive as `Err` items and the stream keeps
/// going (the driver resumes; if the watch itself ends, it is re-opened with back-off). The
/// stream ends only after a final `Err(Error::Closed)` (store closed).
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn kv_core::Store>) {
/// use futures::StreamExt;
/// let mut leaders = kv_core::election::observe(store, "services/scheduler/leader");
/// while let Some(item) = leaders.next().await {
///     match item {
///         Ok(Some(l)) => println!("leader {} (term {})", l.value_str(), l.term),
///         Ok(None) => println!("no leader"),
///         Err(e) => println!("watch trouble, still following: {e}"),
///     }
/// }
/// # }
/// ```
pub fn observe(store: Arc<dyn Store>, key: impl Into<String>) -> LeaderStream {
    let key = key.into();
    let to_leader = |p: Option<KvPair>| {
        p.map(|p| Leader {
            value: p.value,
            term: p.version,
        })
    };
    let inner = resilient(move || {
        let store = store.clone();
        let key = key.clone();
        async move { store.watch(&key).await }
    });
    let mut last: Option<Option<Leader>> = None;
    Box::pin(inner.filter_map(move |item| {
        let out = match item {
            Ok(p) => {
                let l = to_leader(p);
                if last.as_ref() == Some(&l) {
                    None
                } else {
                    last = Some(l.clone());
                    Some(Ok(l))
                }
            }
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    }))
}

/// A watch that is re-opened (with back-off) when opening fails or the stream ends, passing
/// every `Err` through; it ends only after `Err(Error::Closed)`.
pub(crate) fn resilient<T, F, Fut>(open: F) -> Pin<Box<dyn Stream<Item = Result<T>> + Send>>
where
    T: Send + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Pin<Box<dyn Stream<Item = Result<T>> + Send>>>> + Send,
{
    struct State<F, T> {
        open: F,
        stream: Option<Pin<Box<dyn Stream<Item = Result<T>> + Send>>>,
        backoff: Backoff,
        done: bool,
    }
    let state = State {
        open,
        stream: None,
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            let stream = match st.stream.as_mut() {
                Some(s) => s,
                None => match (st.open)().await {
                    Ok(s) => {
                        st.stream = Some(s);
                        continue;
                    }
                    Err(Error::Closed) => {
                        st.done = true;
                        return Some((Err(Error::Closed), st));
                    }
                    Err(e) => {
                        st.backoff.wait().await;
                        return Some((Err(e), st));
                    }
                },
            };
            match stream.next().await {
                Some(Ok(v)) => {
                    st.backoff.reset();
                    return Some((Ok(v), st));
                }
                Some(Err(Error::Closed)) => {
                    st.done = true;
                    return Some((Err(Error::Closed), st));
                }
                Some(Err(e)) => return Some((Err(e), st)),
                None => {
                    // A watch ends only after a final error; re-open it (its first item is
                    // the current state again, so nothing is missed).
                    st.stream = None;
                    st.backoff.wait().await;
                }
            }
        }
    }))
}
