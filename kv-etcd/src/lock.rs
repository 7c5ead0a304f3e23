//! Locks on a lease: etcd's lock recipe (owner keys ordered by create revision) plus the
//! user key holding `LockOptions::value`, a keep-alive loop and a loss monitor.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{
    Compare as EtcdCompare, CompareOp, EventType, GetOptions, PutOptions as EtcdPutOptions,
    SortOrder, SortTarget, Txn as EtcdTxn, TxnOp as EtcdTxnOp,
};
use kv_core::lock::{lost_signal, LostNotifier};
use kv_core::retry::{timed, Backoff};
use kv_core::{Error, Lock, LockOptions, LockRelease, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::map_err;
use crate::{prefix_end, ttl_secs, Inner, LOCK_SEP};

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

/// Revokes the lease of an unfinished acquisition when dropped (abandoned future or error).
struct Attempt {
    inner: Arc<Inner>,
    lease: i64,
    keeper: Option<JoinHandle<()>>,
    armed: bool,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.armed {
            if let Some(k) = self.keeper.take() {
                k.abort();
            }
            self.inner.revoke_in_background(self.lease);
        }
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
        _ = inner.wait_closed() => Err(Error::Closed),
        _ = backoff.wait() => Ok(()),
    }
}

/// Waits for and takes the lock at normalized `key`.
pub(crate) async fn acquire(inner: Arc<Inner>, key: String, options: LockOptions) -> Result<Lock> {
    loop {
        match attempt(&inner, &key, &options).await? {
            Outcome::Acquired(l) => return Ok(l),
            Outcome::Retry => continue,
        }
    }
}

fn lock_prefix(inner: &Inner, key: &str) -> String {
    format!("{}{LOCK_SEP}lock/{key}/", inner.ns)
}

async fn attempt(inner: &Arc<Inner>, key: &str, options: &LockOptions) -> Result<Outcome> {
    inner.check_open()?;
    let ttl = Duration::from_secs(ttl_secs(options.ttl) as u64);
    let lease = inner.grant(options.ttl, key).await?;
    let (lease_tx, mut lease_rx) = watch::channel(None::<String>);
    let mut guard = Attempt {
        inner: inner.clone(),
        lease,
        keeper: Some(tokio::spawn(keep_lease(
            inner.clone(),
            lease,
            ttl,
            lease_tx,
        ))),
        armed: true,
    };
    let prefix = lock_prefix(inner, key);
    let owner = format!("{prefix}{lease:016x}");
    let ctx = inner.ctx("lock", key);

    // 1. Join the queue.
    let mut kv = inner.kv.clone();
    let resp = timed("lock", inner.timeout, async {
        kv.put(
            owner.clone(),
            Vec::new(),
            Some(EtcdPutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(|e| map_err(e, &ctx))
    })
    .await?;
    let my_rev = resp.header().map(|h| h.revision()).unwrap_or(0);

    // 2. Wait until no owner key older than ours is left.
    let mut backoff = Backoff::default();
    loop {
        if lease_rx.borrow().is_some() {
            return Ok(Outcome::Retry);
        }
        let pred = inner
            .kv_get(
                "lock",
                key,
                prefix.clone().into_bytes(),
                Some(
                    GetOptions::new()
                        .with_range(prefix_end(prefix.as_bytes()))
                        .with_max_create_revision(my_rev - 1)
                        .with_sort(SortTarget::Create, SortOrder::Descend)
                        .with_limit(1)
                        .with_keys_only(),
                ),
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
        let Some(p) = pred.kvs().first() else { break };
        let pred_key = p.key().to_vec();
        let from = pred.header().map(|h| h.revision()).unwrap_or(0) + 1;
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
                _ = inner.wait_closed() => return Err(Error::Closed),
                _ = lease_rx.changed() => return Ok(Outcome::Retry),
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

    // 3. Our turn: write the value on our lease, if our owner key is still there.
    let full = inner.full(key);
    let txn = EtcdTxn::new()
        .when([EtcdCompare::create_revision(
            owner.clone(),
            CompareOp::Equal,
            my_rev,
        )])
        .and_then([EtcdTxnOp::put(
            full,
            options.value.clone(),
            Some(EtcdPutOptions::new().with_lease(lease)),
        )]);
    let resp = inner
        .kv_txn("lock", key, Some(options.value.len()), txn)
        .await?;
    if !resp.succeeded() {
        return Ok(Outcome::Retry);
    }
    let value_rev = resp.header().map(|h| h.revision()).unwrap_or(0);

    // 4. Held: monitor it.
    let mut deadline = None;
    let keeper = guard.keeper.take();
    let keeper = if options.keep_alive {
        keeper
    } else {
        // A lease: renewed once now, then it ends `ttl` after acquisition.
        if let Some(k) = keeper {
            k.abort();
        }
        let mut lc = inner.lease.clone();
        let ctx = inner.ctx("lock", key);
        timed("lock", inner.timeout, async {
            lc.keep_alive(lease)
                .await
                .map(|_| ())
                .map_err(|e| map_err(e, &ctx))
        })
        .await?;
        deadline = Some(tokio::time::Instant::now() + ttl);
        None
    };
    let (notifier, signal) = lost_signal(key.to_string());
    let notifier = Arc::new(notifier);
    let id = inner.next_lock.fetch_add(1, Ordering::Relaxed);
    let monitor = tokio::spawn(monitor(
        inner.clone(),
        id,
        key.to_string(),
        lease,
        value_rev,
        deadline,
        lease_rx,
        notifier.clone(),
    ));
    let mut tasks = vec![monitor];
    tasks.extend(keeper);
    {
        let mut locks = inner.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.insert(
            id,
            Held {
                lease,
                notifier,
                tasks,
            },
        );
    }
    guard.armed = false;
    if inner.is_closed() {
        // close() ran meanwhile and may have missed this lock.
        release_all(inner).await;
    }
    Ok(Outcome::Acquired(Lock::new(
        key.to_string(),
        options.value.clone(),
        crate::version_of(value_rev),
        signal,
        Box::new(Release {
            inner: inner.clone(),
            id,
            lease,
        }),
    )))
}

/// Renews the lease every `ttl / 3`; reports loss through `lost` when the lease is gone or
/// could not be renewed within `ttl`.
async fn keep_lease(
    inner: Arc<Inner>,
    lease: i64,
    ttl: Duration,
    lost: watch::Sender<Option<String>>,
) {
    let interval = (ttl / 3).max(Duration::from_millis(300));
    let attempt_timeout = inner.timeout.min(interval);
    let mut last_ok = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), interval);
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(backoff.next_delay()).await;
        } else {
            tokio::time::sleep(interval).await;
        }
        first = false;
        let mut client = inner.lease.clone();
        // Establishing the stream sends one keep-alive and reads its answer.
        let opened = tokio::time::timeout(attempt_timeout, client.keep_alive(lease)).await;
        let (mut keeper, mut stream) = match opened {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) if crate::error::chain(&e).contains("lease not found") => {
                let _ = lost.send(Some("its lease expired or was revoked".into()));
                return;
            }
            other => {
                if last_ok.elapsed() >= ttl {
                    let why = match other {
                        Ok(Err(e)) => crate::error::chain(&e),
                        _ => "no answer".into(),
                    };
                    let _ = lost.send(Some(format!(
                        "its lease could not be renewed within {ttl:?}: {why}"
                    )));
                    return;
                }
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
                Ok(Ok(Some(_))) => {
                    let _ = lost.send(Some("its lease expired or was revoked".into()));
                    return;
                }
                _ => {
                    if last_ok.elapsed() >= ttl {
                        let _ = lost.send(Some(format!(
                            "its lease could not be renewed within {ttl:?}"
                        )));
                        return;
                    }
                    break; // re-create the keep-alive stream
                }
            }
        }
    }
}

/// Watches a held lock until it is lost (then fires the signal and gives the lease back).
#[allow(clippy::too_many_arguments)]
async fn monitor(
    inner: Arc<Inner>,
    id: u64,
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
        _ = inner.wait_closed() => return, // close() fires and revokes
    };
    notifier.fire(reason);
    let held = inner
        .locks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
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
        let mut stream =
            match crate::watch::open(inner, full.clone().into_bytes(), Vec::new(), rev + 1, key)
                .await
            {
                Ok(s) => s,
                Err(_) => {
                    backoff.wait().await;
                    continue;
                }
            };
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        // Re-read: is the key still ours?
                        match inner.read_key(key, false).await {
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
        let held = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        match held {
            Some(h) => {
                let lease = h.stop();
                self.inner.revoke(lease).await
            }
            // Lost (the monitor revoked it) or the store was closed (close revoked it).
            None => {
                if self.inner.is_closed() {
                    Ok(())
                } else {
                    // Best effort: make sure nothing is left.
                    self.inner.revoke(self.lease).await
                }
            }
        }
    }
}

/// On close: every held lock is lost and its lease revoked.
pub(crate) async fn release_all(inner: &Inner) {
    let held: Vec<Held> = {
        let mut locks = inner.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.drain().map(|(_, h)| h).collect()
    };
    for h in held {
        h.notifier.fire("the store was closed");
        let lease = h.stop();
        let _ = inner.revoke(lease).await;
    }
}
