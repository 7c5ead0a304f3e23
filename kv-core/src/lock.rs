//! Held locks: release on unlock or drop, and a signal for loss.

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::{Error, Result};

/// Driver hook that gives a held lock back.
#[async_trait]
pub trait LockRelease: Send + Sync {
    /// Releases the lock: stops keep-alive, removes the lock key and anything the driver
    /// created for it. Must be safe to call after the lock was lost.
    async fn release(self: Box<Self>) -> Result<()>;
}

/// Driver side of a [`LostSignal`].
#[derive(Debug)]
pub struct LostNotifier {
    tx: watch::Sender<Option<String>>,
}

impl LostNotifier {
    /// Fires the signal with a reason (only the first reason is kept).
    pub fn fire(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.tx.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

/// Fires when a held lock is lost (expired, deleted or overwritten by someone else, session
/// lost). Cheap to clone; every clone sees the same signal.
#[derive(Clone, Debug)]
pub struct LostSignal {
    key: String,
    rx: watch::Receiver<Option<String>>,
}

/// A new lost signal for the lock at `key`.
pub fn lost_signal(key: impl Into<String>) -> (LostNotifier, LostSignal) {
    let (tx, rx) = watch::channel(None);
    (
        LostNotifier { tx },
        LostSignal {
            key: key.into(),
            rx,
        },
    )
}

impl LostSignal {
    /// True once the lock was lost.
    pub fn is_lost(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// Waits until the lock is lost and returns [`Error::LockLost`] with the reason. Also
    /// resolves once the lock was released and its driver stopped watching it.
    pub async fn wait(&self) -> Error {
        let mut rx = self.rx.clone();
        let reason = match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => "the lock was released or its store was closed".to_string(),
        };
        Error::LockLost {
            key: self.key.clone(),
            reason,
        }
    }
}

/// A held lock, returned by [`Store::new_lock`](crate::Store::new_lock).
///
/// Call [`unlock`](Lock::unlock) to release it and learn whether that worked. Dropping a
/// `Lock` releases it in the background (best effort, needs a running tokio runtime).
pub struct Lock {
    key: String,
    value: Vec<u8>,
    fencing_token: u64,
    lost: LostSignal,
    release: Option<Box<dyn LockRelease>>,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("key", &self.key)
            .field("fencing_token", &self.fencing_token)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl Lock {
    /// Wraps a driver's held lock. `fencing_token` is the lock key's version as written by
    /// this acquisition (the version `get` returns for the key while the lock is held); see
    /// [`Lock::fencing_token`].
    pub fn new(
        key: impl Into<String>,
        value: Vec<u8>,
        fencing_token: u64,
        lost: LostSignal,
        release: Box<dyn LockRelease>,
    ) -> Self {
        Lock {
            key: key.into(),
            value,
            fencing_token,
            lost,
            release: Some(release),
        }
    }

    /// The normalized lock key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value stored at the key while held.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The fencing token of this acquisition: the lock key's version when it was acquired.
    ///
    /// Under kv's version contract (a key's version strictly increases on every write, also
    /// across delete and re-create) every later acquisition of the same lock key, by anyone,
    /// gets a larger token. Hand it to the resource you protect, or guard writes to the store
    /// itself with [`Txn::when_held`](crate::Txn::when_held): a holder that was paused past its
    /// TTL and resumes believing it still holds the lock is then rejected with
    /// [`Error::FencingFailed`] instead of overwriting its successor's work.
    ///
    /// ```no_run
    /// # async fn demo(store: &dyn kv_core::Store) -> kv_core::Result<()> {
    /// use kv_core::{LockOptions, Txn};
    /// let lock = store.new_lock("jobs/lock", LockOptions::with_value("worker-1")).await?;
    /// let token = lock.fencing_token(); // larger than any earlier holder's
    /// store.txn(Txn::new().when_held(&lock).put("jobs/state", format!("{token}"))).await?;
    /// # Ok(()) }
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// True once the lock was lost.
    pub fn is_lost(&self) -> bool {
        self.lost.is_lost()
    }

    /// A signal that fires when the lock is lost; keep it to learn of loss from another task.
    pub fn lost_signal(&self) -> LostSignal {
        self.lost.clone()
    }

    /// Releases the lock. Returns [`Error::LockLost`] (after cleaning up) if it had been lost.
    pub async fn unlock(mut self) -> Result<()> {
        let was_lost = self.lost.rx.borrow().clone();
        if let Some(r) = self.release.take() {
            r.release().await?;
        }
        match was_lost {
            Some(reason) => Err(Error::LockLost {
                key: self.key.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(r) = self.release.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = r.release().await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Count(Arc<AtomicUsize>);

    #[async_trait]
    impl LockRelease for Count {
        async fn release(self: Box<Self>) -> Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn unlock_and_drop_release_once() {
        let n = Arc::new(AtomicUsize::new(0));
        let (_notify, sig) = lost_signal("k");
        let l = Lock::new("k", vec![], 1, sig, Box::new(Count(n.clone())));
        l.unlock().await.unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 1);

        let (_notify, sig) = lost_signal("k");
        drop(Lock::new("k", vec![], 1, sig, Box::new(Count(n.clone()))));
        for _ in 0..100 {
            if n.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn lost_signal_fires_and_unlock_reports_it() {
        let n = Arc::new(AtomicUsize::new(0));
        let (notify, sig) = lost_signal("k");
        let l = Lock::new("k", vec![], 1, sig, Box::new(Count(n.clone())));
        let s = l.lost_signal();
        assert!(!l.is_lost());
        notify.fire("expired");
        notify.fire("second reason is ignored");
        match s.wait().await {
            Error::LockLost { key, reason } => {
                assert_eq!(key, "k");
                assert_eq!(reason, "expired");
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(l.unlock().await, Err(Error::LockLost { .. })));
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
