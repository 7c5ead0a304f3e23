//! A store's open/closed state, shared by the store and its background tasks.

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::{Error, Result};

/// Open until [`close`](Lifecycle::close) is called; cheap to clone, every clone sees the same
/// state. Background tasks select on [`closed`](Lifecycle::closed) to stop.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A new, open lifecycle.
    pub fn new() -> Self {
        Lifecycle {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        *self.tx.borrow()
    }

    /// `Err(Error::Closed)` once closed.
    pub fn check(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Marks the store closed; `true` for the call that closed it, `false` if it already was.
    pub fn close(&self) -> bool {
        !self.tx.send_replace(true)
    }

    /// Resolves once closed (at once if it already is).
    pub async fn closed(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we borrow it.
        let _ = rx.wait_for(|closed| *closed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_once_and_wake_waiters() {
        let l = Lifecycle::new();
        assert!(l.check().is_ok());
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move { l.closed().await })
            })
            .collect();
        assert!(l.close());
        assert!(!l.close());
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), w)
                .await
                .expect("waiter woken")
                .unwrap();
        }
        assert!(matches!(l.check(), Err(Error::Closed)));
        l.closed().await;
    }
}
