//! The registry of locks a store holds, released together when the store closes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Locks held through one store, each under an id, with whatever the driver needs to release
/// it (`T`: a lease id, a session, a notifier). `close` drains it.
#[derive(Debug)]
pub struct HeldLocks<T> {
    next: AtomicU64,
    held: Mutex<HashMap<u64, T>>,
}

impl<T> Default for HeldLocks<T> {
    fn default() -> Self {
        HeldLocks {
            next: AtomicU64::new(1),
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> HeldLocks<T> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a held lock; returns its id.
    pub fn insert(&self, lock: T) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, lock);
        id
    }

    /// Unregisters a lock (released or lost); `None` if `close` already took it.
    pub fn remove(&self, id: u64) -> Option<T> {
        self.lock().remove(&id)
    }

    /// Takes every held lock (on close).
    pub fn drain(&self) -> Vec<T> {
        self.lock().drain().map(|(_, t)| t).collect()
    }

    /// How many locks are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, T>> {
        // A panic while holding this short critical section leaves the map consistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::HeldLocks;
    use std::sync::Arc;

    #[test]
    fn concurrent_insert_remove_drain() {
        let reg = Arc::new(HeldLocks::new());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let reg = reg.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let id = reg.insert((t, i));
                        if i % 2 == 0 {
                            assert_eq!(reg.remove(id), Some((t, i)));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(reg.len(), 8 * 250);
        assert_eq!(reg.drain().len(), 8 * 250);
        assert!(reg.is_empty());
    }
}
