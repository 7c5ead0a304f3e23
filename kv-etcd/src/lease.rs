//! The keep-alive of a lock's lease: renewed every `ttl / 3` over a keep-alive stream that
//! is re-created after errors; loss is reported once the lease is gone or could not be
//! renewed within `ttl`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::retry::Backoff;
use tokio::sync::watch;

use crate::connect::Inner;
use crate::error::{is_lease_gone, map_err};

/// Renews `lease` until it is lost (the reason goes to `lost`) or nobody listens to `lost`
/// any more (the acquisition was abandoned, or the lock released).
pub(crate) async fn keep(
    inner: Arc<Inner>,
    lease: i64,
    ttl: Duration,
    lost: watch::Sender<Option<String>>,
) {
    tokio::select! {
        _ = lost.closed() => {}
        reason = renew(&inner, lease, ttl) => {
            tracing::info!(backend = crate::BACKEND, lease, %reason, "lock lease lost");
            let _ = lost.send(Some(reason));
        }
    }
}

/// Renews until the lease is lost; returns why.
async fn renew(inner: &Inner, lease: i64, ttl: Duration) -> String {
    let interval = (ttl / 3).max(Duration::from_millis(300));
    let attempt_timeout = inner.timeout().min(interval);
    let mut last_ok = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), interval);
    let mut first = true;
    loop {
        if first {
            tokio::time::sleep(interval).await;
        } else {
            tokio::time::sleep(backoff.next_delay()).await;
        }
        first = false;
        let mut client = inner.lease.clone();
        // Establishing the stream sends one keep-alive and reads its answer.
        let opened = tokio::time::timeout(attempt_timeout, client.keep_alive(lease)).await;
        let (mut keeper, mut stream) = match opened {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) if is_lease_gone(&e) => return "its lease expired or was revoked".into(),
            other => {
                if last_ok.elapsed() >= ttl {
                    let why = match other {
                        Ok(Err(e)) => map_err(e, &inner.ctx("lease keep-alive", "")).to_string(),
                        _ => "no answer".into(),
                    };
                    return format!("its lease could not be renewed within {ttl:?}: {why}");
                }
                tracing::debug!(
                    backend = crate::BACKEND,
                    lease,
                    "lease keep-alive stream failed, re-creating"
                );
                continue;
            }
        };
        last_ok = Instant::now();
        backoff.reset();
        loop {
            tokio::time::sleep(interval).await;
            let r = tokio::time::timeout(attempt_timeout, async {
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
            match r {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => last_ok = Instant::now(),
                Ok(Ok(Some(_))) => return "its lease expired or was revoked".into(),
                _ => {
                    if last_ok.elapsed() >= ttl {
                        return format!("its lease could not be renewed within {ttl:?}");
                    }
                    break; // re-create the keep-alive stream
                }
            }
        }
    }
}
