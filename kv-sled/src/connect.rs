//! Opening and closing a handle: joining the process's database of a path, and releasing it
//! (held locks, the final flush round) when the last handle closes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use kv_core::raw::{Connect, DriverInfo, HeldLocks, Lifecycle, Namespace};
use kv_core::retry::timed;
use kv_core::{async_trait, Error, Result};

use crate::config::SledConfig;
use crate::store::SledDriver;
use crate::{db, BACKEND, CAPABILITIES};

#[async_trait]
impl Connect for SledDriver {
    type Config = SledConfig;

    fn parse_url(url: &str) -> Result<SledConfig> {
        crate::parse::parse_url(url)
    }

    /// Opens (or joins, if this process already has it open) the database of `config`.
    async fn connect(config: SledConfig) -> Result<Self> {
        if config.path.as_os_str().is_empty() {
            return Err(Error::config("the sled store needs a path"));
        }
        let namespace = Namespace::new(&config.namespace)
            .map_err(|e| Error::config(format!("bad namespace: {e}")))?;
        let shared = timed("connect", config.timeout, db::open(config.path.clone())).await?;
        shared.handles.fetch_add(1, Ordering::AcqRel);
        Ok(SledDriver {
            info: DriverInfo {
                backend: BACKEND,
                capabilities: CAPABILITIES,
                timeout: config.timeout,
                reserved: &[],
            },
            config,
            life: Lifecycle::new(),
            namespace: Arc::new(namespace),
            shared: Mutex::new(Some(shared)),
            held: Arc::new(HeldLocks::new()),
        })
    }
}

impl Drop for SledDriver {
    fn drop(&mut self) {
        let shared = self.shared.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = shared.take() {
            shared.handles.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Closes one handle (the store is already marked closed): gives up its locks, and on the
/// database's last handle waits (bounded) until the flusher thread ran the final round and
/// released the files, so another process can open the path as soon as `close` returns.
pub(crate) async fn close(driver: &SledDriver) -> Result<()> {
    // The final waits get 90 % of the timeout, so their explanatory error arrives before the
    // checking layer's generic bound on `close` fires.
    let deadline = tokio::time::Instant::now() + driver.config.timeout.mul_f64(0.9);
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let held = driver.held.drain();
    let mut first_err = None;
    for h in &held {
        h.notifier.fire("the store was closed");
        tracing::info!(backend = BACKEND, "lock given up: the store was closed");
        if let Err(e) = h.give_up(true) {
            first_err.get_or_insert(e);
        }
    }
    let shared = driver
        .shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let Some(shared) = shared else {
        return first_err.map_or(Ok(()), Err);
    };
    if !held.is_empty() && driver.config.flush {
        if let Err(e) = timed("close", left(), shared.flush()).await {
            first_err.get_or_insert(e);
        }
    }
    drop(held);
    let last = shared.handles.fetch_sub(1, Ordering::AcqRel) == 1;
    let flusher = shared.flusher.clone();
    drop(shared);
    if last {
        // Watch and lock tasks wind down after the close signal; the flusher thread then runs
        // the final flush and drops sled.
        let released = timed(
            "close (the final flush did not finish in time; the data is as durable as the last \
             completed flush, and the database is released when it finishes)",
            left(),
            async {
                flusher.released().await;
                Ok(())
            },
        )
        .await;
        if let Err(e) = released {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}
