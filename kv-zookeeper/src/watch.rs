//! `watch` and `watch_tree`: a persistent recursive watch per stream, re-read on events.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kv_core::watch::{key_watch, tree_watch, KeyWatcher, TreeWatcher};
use kv_core::{Error, KvPair, Result, TreeWatchStream, WatchStream};
use tokio::time::Instant;
use zookeeper_client as zk;
use zookeeper_client::{AddWatchMode, EventType, PersistentWatcher, SessionState};

use crate::{codec, tree, Conn, Inner, Node};

/// What the watch task should do after an event.
#[derive(Default)]
struct Pending {
    reread: bool,
    disconnected: bool,
    connected: bool,
    terminal: bool,
}

fn classify(ev: &zk::WatchedEvent, only_path: Option<&str>, p: &mut Pending) {
    match ev.event_type {
        EventType::Session => match ev.session_state {
            SessionState::Disconnected => p.disconnected = true,
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                p.connected = true;
                p.reread = true;
            }
            _ => p.terminal = true,
        },
        _ => {
            if only_path.map_or(true, |o| o == ev.path) {
                p.reread = true;
            }
        }
    }
}

/// The part that differs between a key watch and a tree watch.
trait Target: Send + 'static {
    /// Reads the current state and emits it; returns the earliest TTL expiry (ms) seen.
    fn read(
        &mut self,
        inner: &Inner,
        client: &zk::Client,
    ) -> impl std::future::Future<Output = std::result::Result<Option<i64>, zk::Error>> + Send;
    fn error(&mut self, e: Error) -> bool;
    fn is_closed(&self) -> bool;
    fn closed(&self) -> impl std::future::Future<Output = ()> + Send;
    /// `Some(path)` when only events on this exact path matter.
    fn only_path(&self) -> Option<&str>;
}

struct KeyTarget {
    key: String,
    path: String,
    w: KeyWatcher,
}

impl Target for KeyTarget {
    async fn read(
        &mut self,
        _inner: &Inner,
        client: &zk::Client,
    ) -> std::result::Result<Option<i64>, zk::Error> {
        let (state, exp) = match Inner::read_node(client, &self.path).await? {
            Node::Value(v, stat, ttl) => (
                Some(KvPair::new(self.key.clone(), v, stat.mzxid as u64)),
                ttl.map(|t| stat.mtime.saturating_add(t as i64)),
            ),
            Node::Expired(stat) => {
                Inner::reap(client, &self.path, &stat);
                (None, None)
            }
            Node::NoValue(_) | Node::Missing => (None, None),
        };
        self.w.emit(state);
        Ok(exp)
    }
    fn error(&mut self, e: Error) -> bool {
        self.w.error(e)
    }
    fn is_closed(&self) -> bool {
        self.w.is_closed()
    }
    async fn closed(&self) {
        self.w.closed().await
    }
    fn only_path(&self) -> Option<&str> {
        Some(&self.path)
    }
}

struct TreeTarget {
    prefix: String,
    w: TreeWatcher,
}

impl Target for TreeTarget {
    async fn read(
        &mut self,
        inner: &Inner,
        client: &zk::Client,
    ) -> std::result::Result<Option<i64>, zk::Error> {
        let (pairs, exp) = tree::list(inner, client, &self.prefix).await?;
        self.w.emit(pairs);
        Ok(exp)
    }
    fn error(&mut self, e: Error) -> bool {
        self.w.error(e)
    }
    fn is_closed(&self) -> bool {
        self.w.is_closed()
    }
    async fn closed(&self) {
        self.w.closed().await
    }
    fn only_path(&self) -> Option<&str> {
        None
    }
}

/// Arms the persistent recursive watch on `path` and emits the first state.
async fn arm<T: Target>(
    inner: &Inner,
    conn: &Conn,
    path: &str,
    target: &mut T,
) -> std::result::Result<(PersistentWatcher, Option<i64>), zk::Error> {
    let pw = conn
        .client
        .watch(path, AddWatchMode::PersistentRecursive)
        .await?;
    // The first state read after (re-)arming is linearizable unless reads may be stale.
    if inner.sync_reads() {
        conn.client.sync(path).await?;
    }
    let exp = target.read(inner, &conn.client).await?;
    Ok((pw, exp))
}

fn deadline_of(exp_ms: Option<i64>) -> Option<Instant> {
    exp_ms.map(|e| {
        let wait = (e - codec::now_ms()).max(0) as u64 + 5;
        Instant::now() + Duration::from_millis(wait)
    })
}

async fn sleep_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn run<T: Target>(
    inner: Arc<Inner>,
    path: String,
    mut target: T,
    conn: Conn,
    pw: PersistentWatcher,
    exp: Option<i64>,
) {
    let mut conn_rx = inner.conn.subscribe();
    let mut closed_rx = inner.closed.subscribe();
    let mut conn = Some(conn);
    let mut pw = Some(pw);
    let mut expiry = deadline_of(exp);
    // Set when a read must be (re)done: after an event, a reconnect, or a failed read.
    let mut retry_at: Option<Instant> = None;
    let mut outage_since: Option<Instant> = None;
    let mut outage_reported = false;
    let mut backoff =
        kv_core::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        if target.is_closed() {
            return;
        }
        let outage_deadline = match (outage_since, outage_reported) {
            (Some(t), false) => Some(t + inner.cfg.timeout),
            _ => None,
        };
        let mut p = Pending::default();
        tokio::select! {
            _ = target.closed() => return,
            _ = crate::lock::wait_true(&mut closed_rx) => {
                target.error(Error::Closed);
                return;
            }
            ev = async { pw.as_mut().unwrap().changed().await }, if pw.is_some() => {
                classify(&ev, target.only_path(), &mut p);
                // Coalesce whatever else is already queued.
                while !p.terminal {
                    match pw.as_mut().unwrap().changed().now_or_never() {
                        Some(ev) => classify(&ev, target.only_path(), &mut p),
                        None => break,
                    }
                }
            }
            _ = conn_rx.changed() => {
                let new = conn_rx.borrow_and_update().clone();
                match new {
                    None => {
                        target.error(Error::Closed);
                        return;
                    }
                    Some(c) if Some(c.gen) != conn.as_ref().map(|x| x.gen) => {
                        // New session: re-arm on it.
                        pw = None;
                        conn = Some(c);
                        retry_at = Some(Instant::now());
                    }
                    _ => {}
                }
            }
            _ = sleep_opt(expiry) => { expiry = None; p.reread = true; }
            _ = sleep_opt(retry_at) => { retry_at = None; p.reread = true; }
            _ = sleep_opt(outage_deadline) => {
                outage_reported = true;
                target.error(Error::Unreachable {
                    endpoint: inner.endpoints.clone(),
                    message: format!("connection to ZooKeeper lost for more than {:?}; the watch resumes when it is back", inner.cfg.timeout),
                    source: None,
                });
            }
        }
        if p.terminal {
            // The session ended: wait for the store's new session (conn_rx) to re-arm.
            pw = None;
            outage_since.get_or_insert_with(Instant::now);
            continue;
        }
        if p.disconnected && !p.connected && outage_since.is_none() {
            outage_since = Some(Instant::now());
        }
        if p.connected {
            outage_since = None;
            outage_reported = false;
        }
        if !p.reread {
            continue;
        }
        let Some(c) = conn.clone() else { continue };
        if p.connected && pw.is_some() {
            // zookeeper-client 0.11 does not re-register persistent watches after a
            // reconnect (it resends only the one-shot ones): add the watch again. The old
            // watcher is dropped after the new one exists, so the server keeps watching.
            match tokio::time::timeout(
                inner.cfg.timeout,
                c.client.watch(&path, AddWatchMode::PersistentRecursive),
            )
            .await
            {
                Ok(Ok(w)) => pw = Some(w),
                _ => pw = None,
            }
        }
        let r = if pw.is_none() {
            match tokio::time::timeout(inner.cfg.timeout, arm(&inner, &c, &path, &mut target)).await
            {
                Ok(Ok((w, exp))) => {
                    pw = Some(w);
                    Ok(exp)
                }
                Ok(Err(e)) => Err(Some(e)),
                Err(_) => Err(None),
            }
        } else {
            match tokio::time::timeout(inner.cfg.timeout, target.read(&inner, &c.client)).await {
                Ok(Ok(exp)) => Ok(exp),
                Ok(Err(e)) => Err(Some(e)),
                Err(_) => Err(None),
            }
        };
        match r {
            Ok(exp) => {
                expiry = deadline_of(exp);
                backoff.reset();
                outage_since = None;
                outage_reported = false;
            }
            Err(e) => {
                retry_at = Some(Instant::now() + backoff.next_delay());
                match e {
                    Some(
                        zk::Error::ConnectionLoss
                        | zk::Error::SessionExpired
                        | zk::Error::SessionMoved,
                    ) => {
                        outage_since.get_or_insert_with(Instant::now);
                    }
                    Some(zk::Error::ClientClosed)
                        if inner.is_closed.load(std::sync::atomic::Ordering::SeqCst) =>
                    {
                        target.error(Error::Closed);
                        return;
                    }
                    Some(e) => {
                        let key = inner.key_of(&path).unwrap_or_default();
                        if !target.error(inner.err(e, &key)) {
                            return;
                        }
                    }
                    None => {
                        outage_since.get_or_insert_with(Instant::now);
                    }
                }
            }
        }
    }
}

/// Arms the watch on `path` for `target` (bounded by the store timeout, errors naming
/// `name`) and spawns the task that keeps it up.
async fn start<T: Target>(
    inner: Arc<Inner>,
    op: &str,
    name: &str,
    path: String,
    mut target: T,
) -> Result<()> {
    let conn = inner.conn()?;
    let (pw, exp) = inner
        .timed(op, async {
            arm(&inner, &conn, &path, &mut target)
                .await
                .map_err(|e| inner.err(e, name))
        })
        .await?;
    tokio::spawn(run(inner.clone(), path, target, conn, pw, exp));
    Ok(())
}

pub async fn watch_key(inner: Arc<Inner>, key: String) -> Result<WatchStream> {
    let path = inner.path(&key);
    let (w, stream) = key_watch();
    let target = KeyTarget {
        key: key.clone(),
        path: path.clone(),
        w,
    };
    start(inner, "watch", &key, path, target).await?;
    Ok(stream)
}

pub async fn watch_tree(inner: Arc<Inner>, prefix: String) -> Result<TreeWatchStream> {
    let path = inner.prefix_path(&prefix);
    let (w, stream) = tree_watch();
    let target = TreeTarget {
        prefix: prefix.clone(),
        w,
    };
    start(inner, "watch_tree", &prefix, path, target).await?;
    Ok(stream)
}
