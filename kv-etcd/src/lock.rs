//! Locks on a lease: etcd's lock recipe (owner keys ordered by create revision) plus the
//! user key holding `LockOptions::value`, a keep-alive task ([`crate::lease`]) and a loss
//! monitor. Held locks are registered in the store's [`HeldLocks`](kv_core::raw::HeldLocks)
//! and released on close; an unfinished acquisition revokes its lease through a
//! [`CleanupGuard`] when dropped.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare as EtcdCompare, CompareOp, EventType, GetOptions, PutOptions as EtcdPutOptions,
    SortOrder, SortTarget, Txn as EtcdTxn, TxnOp as EtcdTxnOp,
};
use kv_core::raw::{lost_signal, CleanupGuard, LostNotifier};
use kv_core::retry::Backoff;
use kv_core::{Error, Lock, LockOptions, LockRelease, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{header_rev, prefix_end, ttl_secs, version_of, LOCK_SEP};
use crate::connect::Inner;
use crate::error::map_err;

/// A held lock, as the store's registry keeps it (for `close`).
pub(crate) struct Held {
    lease: i64,
    notifier: Arc<LostNotifier>,
    tasks: Vec<JoinHandle<()>>,
}

impl Held {
    fn stop(self) -> i64 {
        for t in &self.tasks {
            t.abort();
        }
        self.lease
    }
}

enum Outcome {
    Acquired(Lock),
    /// The lease ended while waiting: start over with a new one.
    Retry,
}

/// Waits out one backoff step, or fails with `Closed` if the store closes meanwhile.
async fn back_off(inner: &Inner, backoff: &mut Backoff) -> Result<()> {
    tokio::select! {
        _ = inner.life.closed() => Err(Error::Closed),
        _ = backoff.wait() => Ok(()),
    }
}

/// Waits for and takes the lock at normalized `key`.
pub(crate) async fn acquire(inner: Arc<Inner>, key: String, options: LockOptions) -> Result<Lock> {
    loop {
        match attempt(&inner, &key, &options).await? {
            Outcome::Acquired(l) => return Ok(l),
            Outcome::Retry => {
                tracing::debug!(
                    backend = crate::BACKEND,
                    key,
                    "lock lease ended while waiting, retrying"
                );
            }
        }
    }
}

fn lock_prefix(inner: &Inner, key: &str) -> String {
    format!("{}{LOCK_SEP}lock/{key}/", inner.ns.as_str())
}

/// Waits until no owner key of `prefix` older than `my_rev` is left. `Ok(false)`: our lease
/// ended meanwhile.
async fn wait_turn(
    inner: &Inner,
    key: &str,
    prefix: &str,
    my_rev: i64,
    lease_rx: &mut watch::Receiver<Option<String>>,
) -> Result<bool> {
    let mut backoff = Backoff::default();
    loop {
        if lease_rx.borrow().is_some() {
            return Ok(false);
        }
        let opts = GetOptions::new()
            .with_range(prefix_end(prefix.as_bytes()))
            .with_max_create_revision(my_rev - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1)
            .with_keys_only();
        let pred = inner
            .bounded(
                "lock",
                inner.kv_get("lock", key, prefix.as_bytes().to_vec(), Some(opts)),
            )
            .await;
        let pred = match pred {
            Ok(p) => p,
            Err(e) if e.is_transient() => {
                back_off(inner, &mut backoff).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(p) = pred.kvs().first() else {
            return Ok(true);
        };
        let pred_key = p.key().to_vec();
        let from = header_rev(pred.header()) + 1;
        // Wait for the predecessor's deletion (from the read's revision: nothing is missed).
        let mut stream = match crate::watch::open(inner, pred_key, Vec::new(), from, key).await {
            Ok(s) => s,
            Err(e) if e.is_transient() => {
                back_off(inner, &mut backoff).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        loop {
            tokio::select! {
                _ = inner.life.closed() => return Err(Error::Closed),
                _ = lease_rx.changed() => return Ok(false),
                m = stream.message() => match m {
                    Ok(Some(resp)) => {
                        if resp.canceled() || resp.compact_revision() > 0 {
                            break;
                        }
                        if resp.events().iter().any(|e| e.event_type() == EventType::Delete) {
                            backoff.reset();
                            break;
                        }
                    }
                    Ok(None) | Err(_) => {
                        back_off(inner, &mut backoff).await?;
                        break;
                    }
                }
            }
        }
    }
}

async fn attempt(inner: &Arc<Inner>, key: &str, options: &LockOptions) -> Result<Outcome> {
    inner.life.check()?;
    let ttl = Duration::from_secs(ttl_secs(options.ttl) as u64);
    let lease = inner.grant(options.ttl, key).await?;
    let (lease_tx, mut lease_rx) = watch::channel(None::<String>);
    let keeper = tokio::spawn(crate::lease::keep(inner.clone(), lease, ttl, lease_tx));
    // Dropped armed (abandoned future, error, retry): stop the keeper, revoke the lease.
    let abort = keeper.abort_handle();
    let mut lc = inner.lease.clone();
    let guard = CleanupGuard::new("etcd lock attempt", inner.timeout(), async move {
        abort.abort();
        let _ = lc.revoke(lease).await;
    });
    let prefix = lock_prefix(inner, key);
    let owner = format!("{prefix}{lease:016x}");

    // 1. Join the queue.
    let mut kv = inner.kv.clone();
    let put = kv.put(
        owner.clone(),
        Vec::new(),
        Some(EtcdPutOptions::new().with_lease(lease)),
    );
    let resp = inner
        .bounded("lock", async {
            put.await.map_err(|e| map_err(e, &inner.ctx("lock", key)))
        })
        .await?;
    let my_rev = header_rev(resp.header());

    // 2. Wait until no owner key older than ours is left.
    if !wait_turn(inner, key, &prefix, my_rev, &mut lease_rx).await? {
        return Ok(Outcome::Retry);
    }

    // 3. Our turn: write the value on our lease, if our owner key is still there.
    let txn = EtcdTxn::new()
        .when([EtcdCompare::create_revision(
            owner.clone(),
            CompareOp::Equal,
            my_rev,
        )])
        .and_then([EtcdTxnOp::put(
            inner.full(key),
            options.value.clone(),
            Some(EtcdPutOptions::new().with_lease(lease)),
        )]);
    let value_len = options.value.len();
    let resp = inner
        .bounded("lock", inner.kv_txn("lock", key, Some(value_len), txn))
        .await?;
    if !resp.succeeded() {
        return Ok(Outcome::Retry);
    }
    let value_rev = header_rev(resp.header());

    // 4. Held: monitor it.
    let mut deadline = None;
    let keeper = if options.keep_alive {
        Some(keeper)
    } else {
        // A lease: renewed once now, then it ends `ttl` after acquisition.
        keeper.abort();
        let mut lc = inner.lease.clone();
        inner
            .bounded("lock", async {
                lc.keep_alive(lease)
                    .await
                    .map(|_| ())
                    .map_err(|e| map_err(e, &inner.ctx("lock", key)))
            })
            .await?;
        deadline = Some(tokio::time::Instant::now() + ttl);
        None
    };
    let (notifier, signal) = lost_signal(key.to_string());
    let notifier = Arc::new(notifier);
    // The id is known once registered: the monitor waits for it.
    let (id_tx, id_rx) = tokio::sync::oneshot::channel();
    let monitor = tokio::spawn(monitor(
        inner.clone(),
        id_rx,
        key.to_string(),
        lease,
        value_rev,
        deadline,
        lease_rx,
        notifier.clone(),
    ));
    let mut tasks = vec![monitor];
    tasks.extend(keeper);
    let id = inner.locks.insert(Held {
        lease,
        notifier,
        tasks,
    });
    let _ = id_tx.send(id);
    guard.disarm();
    if inner.life.is_closed() {
        // close() ran meanwhile and may have missed this lock.
        release_all(inner).await;
    }
    Ok(Outcome::Acquired(Lock::new(
        key.to_string(),
        options.value.clone(),
        version_of(value_rev),
        signal,
        Box::new(Release {
            inner: inner.clone(),
            id,
            lease,
        }),
    )))
}

/// Watches a held lock until it is lost (then fires the signal and gives the lease back).
#[allow(clippy::too_many_arguments)]
async fn monitor(
    inner: Arc<Inner>,
    id: tokio::sync::oneshot::Receiver<u64>,
    key: String,
    lease: i64,
    value_rev: i64,
    deadline: Option<tokio::time::Instant>,
    mut lease_rx: watch::Receiver<Option<String>>,
    notifier: Arc<LostNotifier>,
) {
    let expired = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let lease_lost = async {
        let verdict = lease_rx
            .wait_for(|r| r.is_some())
            .await
            .map(|r| r.clone().unwrap_or_default());
        match verdict {
            Ok(r) => r,
            // The keeper is gone without a verdict (keep_alive = false): never fires.
            Err(_) => std::future::pending().await,
        }
    };
    let reason = tokio::select! {
        r = lease_lost => r,
        _ = expired => "its TTL passed (keep_alive = false)".to_string(),
        r = watch_value(&inner, &key, value_rev) => r,
        _ = inner.life.closed() => return, // close() fires and revokes
    };
    tracing::info!(backend = crate::BACKEND, key, %reason, "lock lost");
    notifier.fire(reason);
    let held = match id.await {
        Ok(id) => inner.locks.remove(id),
        Err(_) => None,
    };
    let _ = inner.revoke(lease).await;
    if let Some(h) = held {
        // Our own task is among them: abort the others only.
        for t in h.tasks.iter().skip(1) {
            t.abort();
        }
    }
}

/// Resolves with a reason once the lock's key is deleted or written by someone else.
async fn watch_value(inner: &Inner, key: &str, value_rev: i64) -> String {
    let full = inner.full(key);
    let mut rev = value_rev;
    let mut backoff = Backoff::default();
    loop {
        let opened =
            crate::watch::open(inner, full.clone().into_bytes(), Vec::new(), rev + 1, key).await;
        let Ok(mut stream) = opened else {
            backoff.wait().await;
            continue;
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        // Re-read: is the key still ours?
                        match inner.bounded("lock", inner.read_key(key, false)).await {
                            Ok((Some(p), r)) if p.version == value_rev as u64 => {
                                rev = r;
                                break;
                            }
                            Ok((Some(_), _)) => {
                                return "its key was overwritten by someone else".into()
                            }
                            Ok((None, _)) => return "its key was deleted".into(),
                            Err(_) => {
                                backoff.wait().await;
                                break;
                            }
                        }
                    }
                    if resp.canceled() {
                        backoff.wait().await;
                        break;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        rev = rev.max(kv.mod_revision());
                        match ev.event_type() {
                            EventType::Delete => return "its key was deleted".into(),
                            EventType::Put if kv.mod_revision() != value_rev => {
                                return "its key was overwritten by someone else".into()
                            }
                            EventType::Put => {}
                        }
                    }
                    backoff.reset();
                }
                Ok(None) | Err(_) => {
                    backoff.wait().await;
                    break;
                }
            }
        }
    }
}

/// Gives a held lock back.
struct Release {
    inner: Arc<Inner>,
    id: u64,
    lease: i64,
}

#[async_trait]
impl LockRelease for Release {
    async fn release(self: Box<Self>) -> Result<()> {
        match self.inner.locks.remove(self.id) {
            Some(h) => {
                let lease = h.stop();
                self.inner.revoke(lease).await
            }
            // Lost (the monitor revoked it) or the store was closed (close revoked it).
            None if self.inner.life.is_closed() => Ok(()),
            // Best effort: make sure nothing is left.
            None => self.inner.revoke(self.lease).await,
        }
    }
}

/// On close: every held lock is lost and its lease revoked (concurrently: `close` is
/// bounded by the timeout as a whole).
pub(crate) async fn release_all(inner: &Inner) {
    let revokes = inner.locks.drain().into_iter().map(|h| {
        h.notifier.fire("the store was closed");
        let lease = h.stop();
        tracing::debug!(backend = crate::BACKEND, lease, "lock released on close");
        async move {
            let _ = inner.revoke(lease).await;
        }
    });
    futures::future::join_all(revokes).await;
}
