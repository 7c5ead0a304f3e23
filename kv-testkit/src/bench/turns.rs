//! Several connections per side, used in turn from run to run: [`Turns`].
//!
//! On this 2-core VM one ZooKeeper session of a process can run faster or slower than
//! another of the same process, whatever client drives it: the same raw client code on two
//! sessions read 1.03, 1.02, 0.91 and 0.96 (median of 41 rounds of sequential `sync` gets,
//! four processes, 2026-12-02). `perf` found the same number of context switches and wake-ups
//! per call on both; the time went to the scheduler's wake-up paths, not to client code. So a
//! bench with one connection per side partly measures which side drew the faster connection.
//! With several per side, used in turn, each side's median spans many draws, and an A/A run
//! (`KV_BENCH_SIDE=raw-raw`) compares different connections, as kv against raw does.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The connections of one side (stores, sessions, clients, each with whatever state goes with
/// it), handed out in turn: the `r`-th [`next`](Turns::next) since the last
/// [`restart`](Turns::restart) gives item `r % len`.
#[derive(Debug)]
pub struct Turns<T> {
    items: Vec<T>,
    next: AtomicUsize,
}

impl<T> Turns<T> {
    /// The items to hand out in turn. Panics when `items` is empty (a bench without a
    /// connection is a bug of the bench).
    pub fn new(items: Vec<T>) -> Self {
        assert!(!items.is_empty(), "Turns needs at least one item");
        Turns {
            items,
            next: AtomicUsize::new(0),
        }
    }

    /// The next item in turn.
    pub fn next(&self) -> &T {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.items[i % self.items.len()]
    }

    /// Starts again at the first item, so that two workloads of the same number of runs use
    /// the items in the same order (a delete row then consumes, on each connection, the keys
    /// the new-key row created there).
    pub fn restart(&self) {
        self.next.store(0, Ordering::Relaxed);
    }

    /// Every item, in order (for set-up, warm-up and close).
    pub fn all(&self) -> &[T] {
        &self.items
    }
}

/// Connections per side: `KV_BENCH_SESSIONS`, default 8, at least 1.
pub fn sessions() -> usize {
    super::env_usize("KV_BENCH_SESSIONS", 8).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_in_turn_and_restarts() {
        let t = Turns::new(vec!['a', 'b', 'c']);
        let got: String = (0..7).map(|_| *t.next()).collect();
        assert_eq!(got, "abcabca");
        t.restart();
        assert_eq!(*t.next(), 'a');
        assert_eq!(t.all(), &['a', 'b', 'c']);
    }

    #[test]
    #[should_panic(expected = "at least one item")]
    fn refuses_no_items() {
        let _ = Turns::<u8>::new(Vec::new());
    }
}
