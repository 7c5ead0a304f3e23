//! Bounded calls and retry pacing shared by drivers.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

/// Default bound on every call that talks to a server.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `fut`, turning an overrun of `after` into [`Error::Timeout`] naming `operation`.
pub async fn timed<T, F>(operation: &str, after: Duration, fut: F) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            operation: operation.to_string(),
            after,
        }),
    }
}

/// Exponential back-off for reconnect and resume loops: 50 ms doubling up to a cap.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
    }
}

impl Backoff {
    /// Starts at `initial`, doubling to at most `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Sleeps for the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_cap() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(35));
        let d: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(d, vec![10, 20, 35, 35]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 10);
    }

    #[tokio::test]
    async fn timed_reports_timeout() {
        let r: Result<()> = timed("get", Duration::from_millis(10), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        })
        .await;
        assert!(matches!(r, Err(Error::Timeout { ref operation, .. }) if operation == "get"));
    }
}
