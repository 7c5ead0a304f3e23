//! Detached clean-up: work a dropped future or guard still owes the server.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed clean-up future.
pub type CleanupFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs `fut` in the background on the current tokio runtime, bounded by `timeout`; `false`
/// (and nothing runs) when called outside a runtime. `what` names the work in the debug
/// event logged when it overruns.
pub fn spawn_cleanup(
    what: &'static str,
    timeout: Duration,
    fut: impl Future<Output = ()> + Send + 'static,
) -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                if tokio::time::timeout(timeout, fut).await.is_err() {
                    tracing::debug!(what, ?timeout, "background clean-up timed out");
                }
            });
            true
        }
        Err(_) => {
            tracing::debug!(what, "no tokio runtime: background clean-up skipped");
            false
        }
    }
}

/// Runs a clean-up when dropped unless [`disarm`](CleanupGuard::disarm)ed: put one in the
/// future of a multi-step call (a lock attempt, a lease grant) so that dropping the call
/// undoes what it created.
pub struct CleanupGuard {
    what: &'static str,
    timeout: Duration,
    task: Option<CleanupFuture>,
}

impl CleanupGuard {
    /// A guard that runs `task` (bounded by `timeout`) when dropped armed.
    pub fn new(
        what: &'static str,
        timeout: Duration,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        CleanupGuard {
            what,
            timeout,
            task: Some(Box::pin(task)),
        }
    }

    /// The call finished: nothing to undo.
    pub fn disarm(mut self) {
        self.task = None;
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            spawn_cleanup(self.what, self.timeout, task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn armed_guard_runs_disarmed_does_not() {
        let n = Arc::new(AtomicUsize::new(0));
        let bump = |n: Arc<AtomicUsize>| async move {
            n.fetch_add(1, Ordering::SeqCst);
        };
        drop(CleanupGuard::new(
            "t",
            Duration::from_secs(5),
            bump(n.clone()),
        ));
        CleanupGuard::new("t", Duration::from_secs(5), bump(n.clone())).disarm();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while n.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn outside_a_runtime_nothing_runs() {
        assert!(!spawn_cleanup("t", Duration::from_secs(1), async {}));
    }
}
