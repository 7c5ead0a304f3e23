//! Locks: the ephemeral-sequential recipe, the lock value as an ephemeral znode at the key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kv_core::lock::{lost_signal, LostNotifier};
use kv_core::{async_trait, Error, Lock, LockOptions, LockRelease, Result};
use tokio::sync::watch as tokio_watch;
use tokio::time::Instant;
use zookeeper_client as zk;
use zookeeper_client::{AddWatchMode, Client, CreateMode, EventType, SessionState};

use crate::{codec, Inner, LOCKS_DIR};

/// A held lock, shared by its [`Lock`] handle, its monitor task and the store's registry.
pub(crate) struct Held {
    id: u64,
    path: String,
    contender: String,
    mzxid: i64,
    pub notifier: LostNotifier,
    client: Mutex<Option<Arc<Client>>>,
    released: AtomicBool,
    stop: tokio_watch::Sender<bool>,
    inner: Weak<Inner>,
}

impl Held {
    /// Stops monitoring and removes the lock value (if still ours) and the contender node.
    pub async fn release_nodes(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.stop.send_replace(true);
        if let Some(inner) = self.inner.upgrade() {
            inner
                .locks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.id);
        }
        let client = self.client.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(c) = client else { return };
        if let Ok(Some(st)) = c.check_stat(&self.path).await {
            if st.mzxid == self.mzxid {
                if let Err(zk::Error::NotEmpty) = c.delete(&self.path, Some(st.version)).await {
                    let _ = c
                        .set_data(&self.path, codec::TOMBSTONE, Some(st.version))
                        .await;
                }
            }
        }
        let _ = c.delete(&self.contender, None).await;
    }

    async fn lose(&self, reason: &str) {
        if self.released.load(Ordering::SeqCst) {
            return;
        }
        self.notifier.fire(reason);
        self.release_nodes().await;
    }
}

struct Release {
    held: Arc<Held>,
    timeout: Duration,
}

#[async_trait]
impl LockRelease for Release {
    async fn release(self: Box<Self>) -> Result<()> {
        let _ = tokio::time::timeout(self.timeout, self.held.release_nodes()).await;
        Ok(())
    }
}

/// Removes an abandoned contender node (dropped `new_lock` future).
struct Guard {
    client: Option<Arc<Client>>,
    path: String,
    /// Set once the lock is ours and its value is being written: an abandoned attempt
    /// then also removes a value znode this session created.
    value: Option<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let path = std::mem::take(&mut self.path);
            let value = self.value.take();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), async {
                        if let Some(v) = value {
                            if let Ok(Some(st)) = c.check_stat(&v).await {
                                if st.ephemeral_owner == c.session_id().0 {
                                    let _ = c.delete(&v, Some(st.version)).await;
                                }
                            }
                        }
                        let _ = c.delete(&path, None).await;
                    })
                    .await;
                });
            }
        }
    }
}

async fn create_contender(inner: &Inner, c: &Client, dir: &str, key: &str) -> Result<String> {
    let opts = CreateMode::EphemeralSequential.with_acls(inner.acls());
    let prefix = format!("{dir}/c-");
    for _ in 0..10 {
        match c.create(&prefix, &[codec::CONTENDER], &opts).await {
            Ok((_, seq)) => return Ok(format!("{prefix}{seq}")),
            Err(zk::Error::NoNode) => {
                inner
                    .make_parents(c, dir)
                    .await
                    .map_err(|e| inner.err(e, key))?;
                match c
                    .create(dir, &[], &CreateMode::Container.with_acls(inner.acls()))
                    .await
                {
                    Ok(_) | Err(zk::Error::NodeExists) => {}
                    Err(e) => return Err(inner.err(e, key)),
                }
            }
            Err(e) => return Err(inner.err(e, key)),
        }
    }
    Err(Error::backend(
        crate::BACKEND,
        format!("lock {key:?}: the lock directory kept vanishing"),
        zk::Error::NoNode,
    ))
}

enum Turn {
    /// Start over (our contender vanished or the session changed).
    Restart,
    Fail(Error),
}

/// Waits until our contender node is the first one.
async fn wait_turn(
    inner: &Inner,
    c: &Client,
    gen: u64,
    dir: &str,
    me: &str,
    key: &str,
) -> std::result::Result<(), Turn> {
    let mut conn_rx = inner.conn.subscribe();
    let mut closed_rx = inner.closed.subscribe();
    let my_name = me.rsplit('/').next().unwrap_or_default().to_string();
    let mut backoff =
        kv_core::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        if inner.is_closed.load(Ordering::SeqCst) {
            return Err(Turn::Fail(Error::Closed));
        }
        if conn_rx.borrow().as_ref().map(|x| x.gen) != Some(gen) {
            return Err(Turn::Restart);
        }
        let children = match tokio::time::timeout(inner.cfg.timeout, c.list_children(dir)).await {
            Ok(Ok(ch)) => ch,
            Ok(Err(zk::Error::NoNode)) => return Err(Turn::Restart),
            Ok(Err(zk::Error::ConnectionLoss)) | Err(_) => {
                backoff.wait().await;
                continue;
            }
            Ok(Err(zk::Error::SessionExpired | zk::Error::SessionMoved)) => {
                wait_new_session(&mut conn_rx, &mut closed_rx, gen).await?;
                return Err(Turn::Restart);
            }
            Ok(Err(e)) => return Err(Turn::Fail(inner.err(e, key))),
        };
        let mut seqs: Vec<(i64, String)> = children
            .into_iter()
            .filter_map(|n| Some((n.strip_prefix("c-")?.parse::<i64>().ok()?, n)))
            .collect();
        seqs.sort();
        let Some(idx) = seqs.iter().position(|(_, n)| *n == my_name) else {
            return Err(Turn::Restart);
        };
        if idx == 0 {
            return Ok(());
        }
        let pred = format!("{dir}/{}", seqs[idx - 1].1);
        match tokio::time::timeout(inner.cfg.timeout, c.check_and_watch_stat(&pred)).await {
            Ok(Ok((None, _))) => continue,
            Ok(Ok((Some(_), w))) => {
                backoff.reset();
                let mut terminal = false;
                tokio::select! {
                    ev = w.changed() => {
                        terminal = ev.event_type == EventType::Session && ev.session_state.is_terminated();
                    }
                    _ = conn_rx.changed() => {}
                    _ = wait_true(&mut closed_rx) => return Err(Turn::Fail(Error::Closed)),
                }
                if terminal {
                    wait_new_session(&mut conn_rx, &mut closed_rx, gen).await?;
                    return Err(Turn::Restart);
                }
            }
            Ok(Err(zk::Error::SessionExpired | zk::Error::SessionMoved)) => {
                wait_new_session(&mut conn_rx, &mut closed_rx, gen).await?;
                return Err(Turn::Restart);
            }
            Ok(Err(zk::Error::ConnectionLoss)) | Err(_) => backoff.wait().await,
            Ok(Err(e)) => return Err(Turn::Fail(inner.err(e, key))),
        }
    }
}

async fn wait_new_session(
    conn_rx: &mut tokio_watch::Receiver<Option<crate::Conn>>,
    closed_rx: &mut tokio_watch::Receiver<bool>,
    gen: u64,
) -> std::result::Result<(), Turn> {
    tokio::select! {
        ok = async { conn_rx.wait_for(|c| c.as_ref().map(|x| x.gen) != Some(gen)).await.map(|v| v.is_some()).unwrap_or(false) } => {
            if ok { Ok(()) } else { Err(Turn::Fail(Error::Closed)) }
        }
        _ = wait_true(closed_rx) => Err(Turn::Fail(Error::Closed)),
    }
}

/// Writes the lock value at the key: an ephemeral znode, or a plain value when the key has
/// children (an ephemeral znode cannot have any).
async fn write_value(
    inner: &Inner,
    c: &Client,
    key: &str,
    path: &str,
    value: &[u8],
) -> Result<zk::Stat> {
    let data = codec::encode(value, None);
    let eph = CreateMode::Ephemeral.with_acls(inner.acls());
    for _ in 0..20 {
        match c.create(path, &data, &eph).await {
            Ok((stat, _)) => {
                return Inner::fix_stat(c, path, stat)
                    .await
                    .map_err(|e| inner.err(e, key))
            }
            Err(zk::Error::NoNode) => inner
                .make_parents(c, path)
                .await
                .map_err(|e| inner.err(e, key))?,
            Err(zk::Error::NodeExists) => {
                let st = match c.check_stat(path).await {
                    Ok(Some(st)) => st,
                    Ok(None) => continue,
                    Err(e) => return Err(inner.err(e, key)),
                };
                let r = if st.num_children == 0 {
                    inner
                        .replace_node(c, path, Some(st.version), &data, &eph)
                        .await
                        .map_err(zk::Error::from)
                } else {
                    c.set_data(path, &data, Some(st.version)).await
                };
                match r {
                    Ok(st) => return Ok(st),
                    Err(
                        zk::Error::BadVersion
                        | zk::Error::NoNode
                        | zk::Error::NodeExists
                        | zk::Error::NotEmpty,
                    ) => continue,
                    Err(e) => return Err(inner.err(e, key)),
                }
            }
            Err(e) => return Err(inner.err(e, key)),
        }
    }
    Err(Error::backend(
        crate::BACKEND,
        format!("lock {key:?}: writing the lock value kept racing with other writers"),
        zk::Error::RuntimeInconsistent,
    ))
}

pub async fn new_lock(inner: Arc<Inner>, key: String, options: LockOptions) -> Result<Lock> {
    let path = inner.path(&key);
    let dir = format!(
        "{}/{LOCKS_DIR}/{}",
        inner.base,
        codec::escape_path(&key, true)
    );
    let mut backoff =
        kv_core::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut closed_rx = inner.closed.subscribe();
    let mut conn_rx = inner.conn.subscribe();
    loop {
        let conn = inner.conn()?;
        if conn.client.state().is_terminated() {
            // Wait for the store's next session.
            tokio::select! {
                _ = conn_rx.changed() => {},
                _ = wait_true(&mut closed_rx) => return Err(Error::Closed),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {},
            }
            continue;
        }
        let c = conn.client.clone();
        let contender = match inner
            .timed("new_lock", create_contender(&inner, &c, &dir, &key))
            .await
        {
            Ok(p) => p,
            Err(e) if e.is_transient() => {
                backoff.wait().await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut guard = Guard {
            client: Some(c.clone()),
            path: contender.clone(),
            value: None,
        };
        match wait_turn(&inner, &c, conn.gen, &dir, &contender, &key).await {
            Ok(()) => {}
            Err(Turn::Restart) => continue,
            Err(Turn::Fail(e)) => return Err(e),
        }
        guard.value = Some(path.clone());
        let stat = inner
            .timed(
                "new_lock",
                write_value(&inner, &c, &key, &path, &options.value),
            )
            .await?;
        guard.client = None;
        let id = inner.next_id.fetch_add(1, Ordering::SeqCst);
        let (notifier, signal) = lost_signal(key.clone());
        let (stop, stop_rx) = tokio_watch::channel(false);
        let held = Arc::new(Held {
            id,
            path: path.clone(),
            contender,
            mzxid: stat.mzxid,
            notifier,
            client: Mutex::new(Some(c.clone())),
            released: AtomicBool::new(false),
            stop,
            inner: Arc::downgrade(&inner),
        });
        inner
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, held.clone());
        let lease = (!options.keep_alive).then_some(options.ttl);
        tokio::spawn(monitor(
            held.clone(),
            inner.clone(),
            c,
            conn.gen,
            lease,
            stop_rx,
        ));
        return Ok(Lock::new(
            key,
            options.value,
            stat.mzxid as u64,
            signal,
            Box::new(Release {
                held,
                timeout: inner.cfg.timeout,
            }),
        ));
    }
}

/// Resolves once the flag is `true` (or its sender is gone).
pub(crate) async fn wait_true(rx: &mut tokio_watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await.is_ok();
}

async fn sleep_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Fires the lost signal when the value is deleted/overwritten, the session ends, or the lease ends.
async fn monitor(
    held: Arc<Held>,
    inner: Arc<Inner>,
    client: Arc<Client>,
    gen: u64,
    lease: Option<Duration>,
    mut stop: tokio_watch::Receiver<bool>,
) {
    let lease_at = lease.map(|d| Instant::now() + d);
    let mut conn_rx = inner.conn.subscribe();
    let timeout = inner.cfg.timeout;
    drop(inner);
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
            _ = wait_true(&mut stop) => return,
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
