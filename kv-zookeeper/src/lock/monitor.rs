//! The task that watches a held lock and fires its lost signal.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use zookeeper_client as zk;
use zookeeper_client::{AddWatchMode, Client, EventType, SessionState};

use super::Held;
use crate::inner::{Conn, Inner};

async fn sleep_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Starts the task that fires the lost signal when the value is deleted or overwritten, the
/// session ends, or (with `keep_alive = false`) the lease ends.
pub(super) fn spawn(
    held: Arc<Held>,
    inner: &Inner,
    client: Arc<Client>,
    gen: u64,
    lease: Option<Duration>,
) {
    let conn_rx = inner.conn.subscribe();
    let timeout = inner.cfg.timeout;
    tokio::spawn(run(held, conn_rx, timeout, client, gen, lease));
}

async fn run(
    held: Arc<Held>,
    mut conn_rx: tokio::sync::watch::Receiver<Option<Conn>>,
    timeout: Duration,
    client: Arc<Client>,
    gen: u64,
    lease: Option<Duration>,
) {
    let lease_at = lease.map(|d| Instant::now() + d);
    let path = held.path.clone();
    let mut pw: Option<zk::PersistentWatcher> = None;
    let mut check = true;
    loop {
        if check {
            check = false;
            if pw.is_none() {
                match tokio::time::timeout(
                    timeout,
                    client.watch(&path, AddWatchMode::PersistentRecursive),
                )
                .await
                {
                    Ok(Ok(w)) => pw = Some(w),
                    Ok(Err(zk::Error::ConnectionLoss)) | Err(_) => {}
                    Ok(Err(_)) => {
                        held.lose("the ZooKeeper session behind the lock ended")
                            .await;
                        return;
                    }
                }
            }
            match tokio::time::timeout(timeout, client.check_stat(&path)).await {
                Ok(Ok(Some(st))) if st.mzxid == held.mzxid => {}
                Ok(Ok(_)) => {
                    held.lose("the lock key was deleted or overwritten").await;
                    return;
                }
                Ok(Err(zk::Error::ConnectionLoss)) | Err(_) => {}
                Ok(Err(_)) => {
                    held.lose("the ZooKeeper session behind the lock ended")
                        .await;
                    return;
                }
            }
        }
        let retry_at = if pw.is_none() {
            Some(Instant::now() + Duration::from_millis(200))
        } else {
            None
        };
        tokio::select! {
            _ = held.stop.closed() => return,
            ev = async { pw.as_mut().unwrap().changed().await }, if pw.is_some() => {
                match ev.event_type {
                    EventType::Session => match ev.session_state {
                        SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                            // Persistent watches are not re-registered by the client after a
                            // reconnect: add it again (the old one goes after).
                            let old = pw.take();
                            check = true;
                            drop(old);
                        }
                        SessionState::Disconnected => {}
                        _ => {
                            held.lose("the ZooKeeper session behind the lock expired").await;
                            return;
                        }
                    },
                    _ if ev.path == path => check = true,
                    _ => {}
                }
            }
            _ = sleep_opt(retry_at) => check = true,
            _ = sleep_opt(lease_at) => {
                held.lose("the lock's ttl passed (keep_alive = false)").await;
                return;
            }
            r = conn_rx.changed() => {
                let changed = r.is_err() || conn_rx.borrow().as_ref().map(|c| c.gen) != Some(gen);
                if changed {
                    held.lose("the ZooKeeper session behind the lock expired").await;
                    return;
                }
            }
        }
    }
}
