//! Locks on Consul sessions (see the crate docs, section Locks).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kv_core::raw::{lost_signal, CleanupGuard, LostNotifier};
use kv_core::retry::Backoff;
use kv_core::{async_trait, Consistency, Error, Lock, LockOptions, LockRelease, Result};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::api::{Entry, KvOp, TxnOutcome, LOCK_FLAG};
use crate::error::{is_fatal_what, missing_result, what_error};
use crate::store::Inner;
use crate::watch::{next_index, WAIT};
use crate::write::session_guard;
use crate::{BACKEND, MIN_LOCK_TTL};

/// Consul's session TTL for a lock TTL: half of it (invalidation happens after twice the
/// session TTL), at least Consul's minimum of 10 s.
fn session_ttl(ttl: Duration) -> Duration {
    (ttl / 2).max(MIN_LOCK_TTL)
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A session created for a lock attempt, renewed while waiting; its [`CleanupGuard`]
/// destroys it (in the background) if the attempt is dropped or fails.
struct Pending {
    id: String,
    guard: CleanupGuard,
    _renew: AbortOnDrop,
}

impl Pending {
    async fn create(inner: &Arc<Inner>, ttl: Duration) -> Result<Self> {
        let id = inner.http.session_create("kv-lock", "delete", ttl).await?;
        let guard = session_guard(inner, &id);
        let renew = {
            let inner = inner.clone();
            let id = id.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    if let Ok(false) = inner.http.session_renew(&id).await {
                        return;
                    }
                }
            })
        };
        Ok(Pending {
            id,
            guard,
            _renew: AbortOnDrop(renew),
        })
    }

    /// Hands the session over to the holder task (renewal stops, nothing is destroyed).
    fn defuse(self) -> String {
        self.guard.disarm();
        self.id
    }
}

pub(crate) async fn new_lock(inner: Arc<Inner>, key: String, opts: LockOptions) -> Result<Lock> {
    let full = inner.full(&key);
    let sttl = session_ttl(opts.ttl);
    let mut pending = Pending::create(&inner, sttl).await?;
    let mut index = 0u64;
    let mut backoff = Backoff::default();
    // Transient errors while waiting are retried until they last longer than the store's
    // timeout; then the wait fails with the last error.
    let mut failing_since: Option<Instant> = None;
    let entry: Entry = loop {
        inner.life.check()?;
        let r = tokio::select! {
            _ = inner.life.closed() => return Err(Error::Closed),
            r = inner
                .http
                .kv_get(&full, Some((index, WAIT)), Consistency::Linearizable) => r,
        };
        let (cur, got) = match r {
            Ok(v) => {
                failing_since = None;
                v
            }
            Err(e) if e.is_transient() => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= inner.http.timeout {
                    return Err(e);
                }
                tokio::select! {
                    _ = inner.life.closed() => return Err(Error::Closed),
                    _ = backoff.wait() => {}
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(e) = &cur {
            if e.session.as_deref() == Some(pending.id.as_str()) {
                // Our own earlier attempt took it (its answer was lost): we hold it.
                break e.clone();
            }
            if e.held() {
                // Held by someone: block until the key changes.
                index = next_index(index, got);
                continue;
            }
        }
        let op = KvOp::new("lock", &full)
            .value(&opts.value, LOCK_FLAG)
            .session(&pending.id);
        match inner.http.txn("lock", &[op]).await? {
            TxnOutcome::Ok(mut r) => match r.pop() {
                Some(e) => break e,
                None => return Err(missing_result("lock")),
            },
            TxnOutcome::Rejected(errs) => {
                index = 0;
                if errs.iter().any(|e| e.what.contains("invalid session")) {
                    // Our session was invalidated while waiting: start over with a new one.
                    pending = Pending::create(&inner, sttl).await?;
                    continue;
                }
                if let Some(e) = errs.iter().find(|e| is_fatal_what(&e.what)) {
                    return Err(what_error("new_lock", &key, &e.what));
                }
                if errs.iter().any(|e| e.what.contains("lock delay")) {
                    // Another client's session left a lock-delay on the key.
                    tokio::select! {
                        _ = inner.life.closed() => return Err(Error::Closed),
                        _ = backoff.wait() => {}
                    }
                }
                // Someone else took it first: wait again.
            }
        }
    };

    if !opts.keep_alive {
        // Re-arm Consul's timer now: the session then outlives the lease's end (`ttl` after
        // acquisition), which the holder task enforces itself. (Still cancel-safe: `pending`
        // destroys the session if this future is dropped here.)
        let _ = inner.http.session_renew(&pending.id).await;
    }
    let session = pending.defuse();
    let (notifier, signal) = lost_signal(key.clone());
    let (release_tx, release_rx) = oneshot::channel();
    let holder = Holder {
        inner: inner.clone(),
        full,
        session,
        session_ttl: sttl,
        keep_alive: opts.keep_alive,
        lease_end: (!opts.keep_alive).then(|| Instant::now() + opts.ttl),
        held_index: entry.modify_index,
    };
    // Registered until it ends; `close` takes the registered tasks and waits for them (each
    // sees the closed lifecycle, fires its signal and destroys its session).
    let (id_tx, id_rx) = oneshot::channel();
    let task = tokio::spawn({
        let inner = inner.clone();
        async move {
            holder.run(notifier, release_rx).await;
            if let Ok(id) = id_rx.await {
                inner.locks.remove(id);
            }
        }
    });
    let _ = id_tx.send(inner.locks.insert(task));
    Ok(Lock::new(
        key,
        opts.value,
        entry.modify_index,
        signal,
        Box::new(Release {
            tx: Some(release_tx),
        }),
    ))
}

type Reply = oneshot::Sender<Result<()>>;

struct Release {
    tx: Option<oneshot::Sender<Reply>>,
}

#[async_trait]
impl LockRelease for Release {
    async fn release(mut self: Box<Self>) -> Result<()> {
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        let (rtx, rrx) = oneshot::channel();
        if tx.send(rtx).is_err() {
            // The holder task already ended (lock lost or store closed) and cleaned up.
            return Ok(());
        }
        rrx.await.unwrap_or(Ok(()))
    }
}

struct Holder {
    inner: Arc<Inner>,
    full: String,
    session: String,
    session_ttl: Duration,
    keep_alive: bool,
    lease_end: Option<Instant>,
    held_index: u64,
}

enum Exit {
    Release(Reply),
    Lost(String),
}

type Monitor<'a> = Pin<Box<dyn Future<Output = Result<(Option<Entry>, u64)>> + Send + 'a>>;

impl Holder {
    async fn run(self, notifier: LostNotifier, mut release_rx: oneshot::Receiver<Reply>) {
        let exit = self.watch(&mut release_rx).await;
        match exit {
            Exit::Lost(reason) => {
                tracing::info!(backend = BACKEND, key = %self.full, %reason, "lock lost");
                notifier.fire(reason);
                let _ = self.destroy().await;
                // A release request that raced with the loss still gets its answer.
                if let Ok(reply) = release_rx.try_recv() {
                    let _ = reply.send(Ok(()));
                }
            }
            Exit::Release(reply) => {
                let r = self.destroy().await;
                let _ = reply.send(r);
            }
        }
        drop(notifier);
    }

    async fn destroy(&self) -> Result<()> {
        let mut attempt = 1;
        loop {
            match self.inner.http.session_destroy(&self.session).await {
                Err(_) if attempt < 3 => {
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn watch(&self, release_rx: &mut oneshot::Receiver<Reply>) -> Exit {
        let life = &self.inner.life;
        if life.is_closed() {
            return Exit::Lost("the store was closed".into());
        }
        let renew_every = self.session_ttl / 3;
        let mut next_renew = Instant::now() + renew_every;
        let mut last_renewed = Instant::now();
        let lease_end = self
            .lease_end
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 86400));
        let mut index = self.held_index;
        let mut monitor: Option<Monitor<'_>> = None;
        let mut backoff = Backoff::default();
        loop {
            let m = monitor.get_or_insert_with(|| {
                Box::pin(self.inner.http.kv_get(
                    &self.full,
                    Some((index, WAIT)),
                    Consistency::Linearizable,
                ))
            });
            tokio::select! {
                r = &mut *release_rx => {
                    return match r {
                        Ok(reply) => Exit::Release(reply),
                        // The Lock was dropped without release (cannot happen: Lock releases on drop).
                        Err(_) => Exit::Lost("the lock handle was dropped".into()),
                    };
                }
                _ = life.closed() => return Exit::Lost("the store was closed".into()),
                _ = tokio::time::sleep_until(lease_end) => {
                    return Exit::Lost(
                        "its lease ended (keep_alive = false and the TTL passed)".into(),
                    );
                }
                _ = tokio::time::sleep_until(next_renew), if self.keep_alive => {
                    match self.inner.http.session_renew(&self.session).await {
                        Ok(true) => {
                            last_renewed = Instant::now();
                            next_renew = last_renewed + renew_every;
                        }
                        Ok(false) => {
                            return Exit::Lost(
                                "its Consul session was invalidated (renewal answered 404)".into(),
                            )
                        }
                        Err(e) => {
                            if last_renewed.elapsed() >= self.session_ttl * 2 {
                                return Exit::Lost(format!(
                                    "its Consul session could not be renewed for {:?}: {e}",
                                    last_renewed.elapsed()
                                ));
                            }
                            next_renew = Instant::now() + Duration::from_secs(1).min(renew_every);
                        }
                    }
                }
                r = m => {
                    monitor = None;
                    match r {
                        Ok((None, _)) => return Exit::Lost("its key was deleted".into()),
                        Ok((Some(e), got)) => {
                            backoff.reset();
                            if e.session.as_deref() != Some(self.session.as_str()) {
                                return Exit::Lost(
                                    "its key was released or taken by another session".into(),
                                );
                            }
                            if e.modify_index != self.held_index {
                                return Exit::Lost("its key was overwritten".into());
                            }
                            index = next_index(index, got);
                        }
                        Err(_) => {
                            // Renewal decides about loss while the agent is unreachable.
                            tokio::select! {
                                _ = backoff.wait() => {}
                                _ = life.closed() => return Exit::Lost("the store was closed".into()),
                            }
                        }
                    }
                }
            }
        }
    }
}
