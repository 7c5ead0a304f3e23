//! Watch streams and the channel drivers feed them through.
//!
//! A driver runs one background task per watch and hands its events to a [`KeyWatcher`] or
//! [`TreeWatcher`]. These never block the driver (a slow reader makes the queue coalesce to
//! the latest states instead), drop consecutive duplicate states, and tell the driver when
//! the caller dropped the stream so the task can stop.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::Stream;

use crate::error::{Error, Result};
use crate::pair::KvPair;

/// Stream returned by [`Store::watch`](crate::Store::watch): the key's current state
/// (`None` = absent), then one item per change; deletes arrive as `None`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Option<KvPair>>> + Send>>;

/// Stream returned by [`Store::watch_tree`](crate::Store::watch_tree): the whole subtree in key
/// order, first as it is, then after each change.
pub type TreeWatchStream = Pin<Box<dyn Stream<Item = Result<Vec<KvPair>>> + Send>>;

/// How many undelivered items a watch queue holds before it drops the oldest states.
pub const WATCH_QUEUE: usize = 1024;

struct State<T> {
    queue: VecDeque<Result<T>>,
    waker: Option<Waker>,
    sender_gone: bool,
    /// Lossless queues (typed events) never drop one item: past the limit they drop them all
    /// and set `overflowed`, and the driver sends a resync instead.
    lossless: bool,
    overflowed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Set when the caller drops its stream; `dropped` wakes whoever waits for that.
    stream_gone: std::sync::atomic::AtomicBool,
    dropped: tokio::sync::Notify,
}

/// Driver side of a watch queue; see [`event_channel`].
pub struct EventSender<T> {
    shared: Arc<Shared<T>>,
}

/// Caller side of a watch queue: a `Stream`.
pub struct EventStream<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Drop for EventStream<T> {
    fn drop(&mut self) {
        self.shared
            .stream_gone
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.dropped.notify_waiters();
    }
}

/// A non-blocking queue from a driver task to a watch stream.
///
/// Past [`WATCH_QUEUE`] undelivered items the oldest `Ok` item is dropped: each item is a
/// full state, so the reader still gets the latest one.
pub fn event_channel<T>() -> (EventSender<T>, EventStream<T>) {
    channel(false)
}

/// A queue that never drops a single item: past [`WATCH_QUEUE`] undelivered items it empties
/// itself and [`EventSender::take_overflow`] reports it, so the driver can send one item that
/// replaces them all (a resync snapshot).
pub fn lossless_event_channel<T>() -> (EventSender<T>, EventStream<T>) {
    channel(true)
}

fn channel<T>(lossless: bool) -> (EventSender<T>, EventStream<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            waker: None,
            sender_gone: false,
            lossless,
            overflowed: false,
        }),
        stream_gone: std::sync::atomic::AtomicBool::new(false),
        dropped: tokio::sync::Notify::new(),
    });
    (
        EventSender {
            shared: shared.clone(),
        },
        EventStream { shared },
    )
}

impl<T> EventSender<T> {
    /// Queues an item; returns `false` once the stream was dropped.
    pub fn send(&self, item: Result<T>) -> bool {
        if self.is_closed() {
            return false;
        }
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.lossless && (st.overflowed || st.queue.len() >= WATCH_QUEUE) {
            if !st.overflowed {
                st.queue.clear();
                st.overflowed = true;
            }
            if item.is_ok() {
                return true; // dropped: the driver sends a resync instead
            }
        }
        if st.queue.len() >= WATCH_QUEUE {
            if let Some(pos) = st.queue.iter().position(|i| i.is_ok()) {
                st.queue.remove(pos);
            } else {
                st.queue.pop_front();
            }
        }
        st.queue.push_back(item);
        if let Some(w) = st.waker.take() {
            w.wake();
        }
        true
    }

    /// True once the stream was dropped.
    pub fn is_closed(&self) -> bool {
        self.shared
            .stream_gone
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// On a lossless queue: true (once) after it overflowed and dropped its items; the next
    /// item sent goes through again.
    pub fn take_overflow(&self) -> bool {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut st.overflowed)
    }

    /// Resolves when the stream is dropped.
    pub async fn closed(&self) {
        let notified = self.shared.dropped.notified();
        tokio::pin!(notified);
        // Registered before the check, so a drop between the two still wakes us.
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await;
    }
}

impl<T> Drop for EventSender<T> {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.sender_gone = true;
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }
}

impl<T> Stream for EventStream<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(item) = st.queue.pop_front() {
            return Poll::Ready(Some(item));
        }
        if st.sender_gone {
            return Poll::Ready(None);
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Feeds a [`WatchStream`], dropping states equal to the last one sent.
pub struct KeyWatcher {
    tx: EventSender<Option<KvPair>>,
    last: Option<Option<u64>>,
}

/// Creates a single-key watch: the driver keeps the [`KeyWatcher`], the caller gets the stream.
pub fn key_watch() -> (KeyWatcher, WatchStream) {
    let (tx, rx) = event_channel();
    (KeyWatcher { tx, last: None }, Box::pin(rx))
}

impl KeyWatcher {
    /// Sends the key's state unless it equals the last one sent (same version, or both absent).
    /// Returns `false` once the stream was dropped.
    pub fn emit(&mut self, state: Option<KvPair>) -> bool {
        let version = state.as_ref().map(|p| p.version);
        if self.last == Some(version) {
            return !self.tx.is_closed();
        }
        self.last = Some(version);
        self.tx.send(Ok(state))
    }

    /// Sends an error item; the stream goes on if the driver keeps sending.
    pub fn error(&mut self, error: Error) -> bool {
        self.tx.send(Err(error))
    }

    /// True once the stream was dropped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the stream is dropped.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// Feeds a [`TreeWatchStream`], dropping snapshots equal to the last one sent.
pub struct TreeWatcher {
    tx: EventSender<Vec<KvPair>>,
    last: Option<Vec<(String, u64)>>,
}

/// Creates a subtree watch: the driver keeps the [`TreeWatcher`], the caller gets the stream.
pub fn tree_watch() -> (TreeWatcher, TreeWatchStream) {
    let (tx, rx) = event_channel();
    (TreeWatcher { tx, last: None }, Box::pin(rx))
}

impl TreeWatcher {
    /// Sends a snapshot (sorted here by key) unless it equals the last one sent.
    /// Returns `false` once the stream was dropped.
    pub fn emit(&mut self, mut pairs: Vec<KvPair>) -> bool {
        pairs.sort_by(|a, b| a.key.cmp(&b.key));
        let ids: Vec<(String, u64)> = pairs.iter().map(|p| (p.key.clone(), p.version)).collect();
        if self.last.as_ref() == Some(&ids) {
            return !self.tx.is_closed();
        }
        self.last = Some(ids);
        self.tx.send(Ok(pairs))
    }

    /// Sends an error item; the stream goes on if the driver keeps sending.
    pub fn error(&mut self, error: Error) -> bool {
        self.tx.send(Err(error))
    }

    /// True once the stream was dropped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the stream is dropped.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// What [`KeyWatcher`] and [`TreeWatcher`] have in common, so a driver can write one watch
/// loop for both.
pub trait WatchSink: Send {
    /// The state a watch emits: `Option<KvPair>` for a key, `Vec<KvPair>` for a subtree.
    type State: Send;

    /// Sends a state unless it equals the last one; `false` once the stream was dropped.
    fn emit(&mut self, state: Self::State) -> bool;

    /// Sends an error item; `false` once the stream was dropped.
    fn error(&mut self, error: Error) -> bool;

    /// Resolves when the stream is dropped.
    fn closed(&self) -> impl std::future::Future<Output = ()> + Send;
}

impl WatchSink for KeyWatcher {
    type State = Option<KvPair>;

    fn emit(&mut self, state: Self::State) -> bool {
        KeyWatcher::emit(self, state)
    }

    fn error(&mut self, error: Error) -> bool {
        KeyWatcher::error(self, error)
    }

    fn closed(&self) -> impl std::future::Future<Output = ()> + Send {
        KeyWatcher::closed(self)
    }
}

impl WatchSink for TreeWatcher {
    type State = Vec<KvPair>;

    fn emit(&mut self, state: Self::State) -> bool {
        TreeWatcher::emit(self, state)
    }

    fn error(&mut self, error: Error) -> bool {
        TreeWatcher::error(self, error)
    }

    fn closed(&self) -> impl std::future::Future<Output = ()> + Send {
        TreeWatcher::closed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn dedups_and_ends_when_sender_drops() {
        let (mut w, mut s) = key_watch();
        assert!(w.emit(None));
        assert!(w.emit(None));
        assert!(w.emit(Some(KvPair::new("k", "a", 1))));
        assert!(w.emit(Some(KvPair::new("k", "a", 1))));
        assert!(w.emit(Some(KvPair::new("k", "b", 2))));
        drop(w);
        let items: Vec<_> = s
            .by_ref()
            .map(|r| r.unwrap().map(|p| p.version))
            .collect()
            .await;
        assert_eq!(items, vec![None, Some(1), Some(2)]);
    }

    #[tokio::test]
    async fn sender_sees_drop() {
        let (w, s) = tree_watch();
        assert!(!w.is_closed());
        drop(s);
        assert!(w.is_closed());
        tokio::time::timeout(std::time::Duration::from_secs(5), w.closed())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn overflow_keeps_latest() {
        let (mut w, mut s) = key_watch();
        for v in 1..=(WATCH_QUEUE as u64 + 10) {
            assert!(w.emit(Some(KvPair::new("k", "x", v))));
        }
        drop(w);
        let items: Vec<_> = s
            .by_ref()
            .map(|r| r.unwrap().unwrap().version)
            .collect()
            .await;
        assert_eq!(items.len(), WATCH_QUEUE);
        assert_eq!(*items.last().unwrap(), WATCH_QUEUE as u64 + 10);
    }
}
