//! Locks: the ephemeral-sequential recipe, the lock value as an ephemeral znode at the key.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use kv_core::raw::{lost_signal, CleanupGuard, Lifecycle, LockRelease, LostNotifier};
use kv_core::{async_trait, Error, Lock, LockOptions, Result};
use leftovers::Leftovers;
use tokio::sync::watch as tokio_watch;
use zookeeper_client as zk;
use zookeeper_client::{Client, CreateMode, EventType};

use crate::inner::Conn;
use crate::node::fix_stat;
use crate::{codec, Inner};

mod leftovers;
mod monitor;

/// A held lock, shared by its [`Lock`] handle, its monitor task and the store's registry.
pub(crate) struct Held {
    /// Its id in the store's [`HeldLocks`](kv_core::raw::HeldLocks).
    id: OnceLock<u64>,
    path: String,
    /// The lock directory, the attempt's tag and the contender's path.
    dir: String,
    tag: String,
    contender: String,
    /// The store's lifecycle and timeout (for the removal, also after the store is gone).
    store_life: Lifecycle,
    timeout: Duration,
    mzxid: i64,
    pub notifier: LostNotifier,
    client: Mutex<Option<Arc<Client>>>,
    /// Closed when the lock is released or lost: stops the monitor.
    stop: Lifecycle,
    inner: Weak<Inner>,
}

impl Held {
    /// Stops monitoring and removes the lock value (if still ours) and the contender node;
    /// retries in the background past a lost connection (see [`leftovers`]), so a caller's
    /// bound on this call leaves the removal going.
    pub async fn release_nodes(&self) {
        self.stop.close();
        if let (Some(inner), Some(id)) = (self.inner.upgrade(), self.id.get()) {
            inner.locks.remove(*id);
        }
        let client = self.client.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(client) = client else { return };
        let left = Leftovers {
            client,
            life: self.store_life.clone(),
            dir: self.dir.clone(),
            tag: self.tag.clone(),
            contender: Some(self.contender.clone()),
            value: Some((self.path.clone(), Some(self.mzxid))),
            timeout: self.timeout,
        };
        let _ = tokio::spawn(left.remove()).await;
    }

    async fn lose(&self, reason: &str) {
        if self.stop.is_closed() {
            return;
        }
        tracing::info!(backend = crate::BACKEND, lock = %self.path, reason, "lock lost");
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

/// Removes an abandoned attempt's contender node (dropped or failed `new_lock`, also while
/// its create was unanswered: found by `tag`), and, with `value`, the value znode this session
/// created. Retries until the nodes are gone or gone with their session ([`leftovers`]).
fn abandon(
    inner: &Inner,
    c: Arc<Client>,
    dir: &str,
    tag: &str,
    value: Option<String>,
) -> CleanupGuard {
    let left = Leftovers {
        client: c,
        life: inner.life.clone(),
        dir: dir.to_string(),
        tag: tag.to_string(),
        contender: None,
        value: value.map(|v| (v, None)),
        timeout: inner.cfg.timeout,
    };
    // `Leftovers::remove` bounds itself; the guard's bound is the same last resort.
    CleanupGuard::new(
        "remove an abandoned lock attempt",
        leftovers::GIVE_UP + inner.cfg.timeout,
        left.remove(),
    )
}

async fn create_contender(
    inner: &Inner,
    c: &Client,
    dir: &str,
    tag: &str,
    key: &str,
) -> Result<String> {
    let opts = CreateMode::EphemeralSequential.with_acls(inner.acls());
    let prefix = format!("{dir}/c-{tag}-");
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
    let my_name = me.rsplit('/').next().unwrap_or_default().to_string();
    let mut backoff =
        kv_core::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        if inner.life.is_closed() {
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
                wait_new_session(inner, &mut conn_rx, gen).await?;
                return Err(Turn::Restart);
            }
            Ok(Err(e)) => return Err(Turn::Fail(inner.err(e, key))),
        };
        let mut seqs: Vec<(i64, String)> = children
            .into_iter()
            .filter_map(|n| Some((leftovers::sequence(&n)?, n)))
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
                    _ = inner.life.closed() => return Err(Turn::Fail(Error::Closed)),
                }
                if terminal {
                    wait_new_session(inner, &mut conn_rx, gen).await?;
                    return Err(Turn::Restart);
                }
            }
            Ok(Err(zk::Error::SessionExpired | zk::Error::SessionMoved)) => {
                wait_new_session(inner, &mut conn_rx, gen).await?;
                return Err(Turn::Restart);
            }
            Ok(Err(zk::Error::ConnectionLoss)) | Err(_) => backoff.wait().await,
            Ok(Err(e)) => return Err(Turn::Fail(inner.err(e, key))),
        }
    }
}

async fn wait_new_session(
    inner: &Inner,
    conn_rx: &mut tokio_watch::Receiver<Option<Conn>>,
    gen: u64,
) -> std::result::Result<(), Turn> {
    tokio::select! {
        ok = async { conn_rx.wait_for(|c| c.as_ref().map(|x| x.gen) != Some(gen)).await.map(|v| v.is_some()).unwrap_or(false) } => {
            if ok { Ok(()) } else { Err(Turn::Fail(Error::Closed)) }
        }
        _ = inner.life.closed() => Err(Turn::Fail(Error::Closed)),
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
            Ok((stat, _)) => return fix_stat(c, path, stat).await.map_err(|e| inner.err(e, key)),
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
    let dir = inner.lock_dir(&key);
    let timeout = inner.cfg.timeout;
    let mut backoff =
        kv_core::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut conn_rx = inner.conn.subscribe();
    loop {
        let conn = inner.conn()?;
        if conn.client.state().is_terminated() {
            // Wait for the store's next session.
            tokio::select! {
                _ = conn_rx.changed() => {},
                _ = inner.life.closed() => return Err(Error::Closed),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {},
            }
            continue;
        }
        let c = conn.client.clone();
        let tag = leftovers::new_tag(&c);
        // Armed before the create: if its answer is lost, the node is found by its tag.
        let waiting = abandon(&inner, c.clone(), &dir, &tag, None);
        let contender = match kv_core::retry::timed(
            "new_lock",
            timeout,
            create_contender(&inner, &c, &dir, &tag, &key),
        )
        .await
        {
            Ok(p) => p,
            Err(e) if e.is_transient() => {
                backoff.wait().await;
                continue;
            }
            Err(e) => return Err(e),
        };
        match wait_turn(&inner, &c, conn.gen, &dir, &contender, &key).await {
            Ok(()) => {}
            Err(Turn::Restart) => continue,
            Err(Turn::Fail(e)) => return Err(e),
        }
        waiting.disarm();
        let writing = abandon(&inner, c.clone(), &dir, &tag, Some(path.clone()));
        let stat = kv_core::retry::timed(
            "new_lock",
            timeout,
            write_value(&inner, &c, &key, &path, &options.value),
        )
        .await?;
        writing.disarm();
        let (notifier, signal) = lost_signal(key.clone());
        let held = Arc::new(Held {
            id: OnceLock::new(),
            path: path.clone(),
            dir: dir.clone(),
            tag,
            contender,
            store_life: inner.life.clone(),
            timeout,
            mzxid: stat.mzxid,
            notifier,
            client: Mutex::new(Some(c.clone())),
            stop: Lifecycle::new(),
            inner: Arc::downgrade(&inner),
        });
        let _ = held.id.set(inner.locks.insert(held.clone()));
        if inner.life.is_closed() {
            // Closed while the value was written: `close` may have drained the registry
            // before this lock was in it.
            held.notifier.fire("the store was closed");
            let _ = tokio::time::timeout(timeout, held.release_nodes()).await;
            return Err(Error::Closed);
        }
        let lease = (!options.keep_alive).then_some(options.ttl);
        monitor::spawn(held.clone(), &inner, c, conn.gen, lease);
        return Ok(Lock::new(
            key,
            options.value,
            stat.mzxid as u64,
            signal,
            Box::new(Release { held, timeout }),
        ));
    }
}

/// Releases every held lock (store closed): fires their lost signals and removes their
/// znodes, each bounded by the store timeout.
pub(crate) async fn release_all(inner: &Inner) {
    for h in inner.locks.drain() {
        h.notifier.fire("the store was closed");
        let _ = tokio::time::timeout(inner.cfg.timeout, h.release_nodes()).await;
    }
}
