//! `watch` and `watch_tree` as a [`Feed`] of kv-core's watch engine, all of a store's watches
//! sharing one server-side watch per session ([`crate::hub`]), and a re-read after each trigger.
//!
//! `read` registers the watch with the session's hub (adding the shared persistent recursive
//! watch, or moving it up, when it does not cover the watched znode yet) and reads after a `sync` (linearizable
//! reads); the cursor is the largest zxid read. `next` waits for the hub to mark the watch (an
//! event on the key's znode, anything below the prefix, a reconnect, a new session) or a TTL
//! expiry that is due, and returns the state read then ([`Update::State`]). A lost connection
//! is an `Err` at once (the engine retries silently once) and then one `Err` per store timeout
//! the outage lasts; after a reconnect the hub adds the shared watch again and every watch
//! returns [`Update::Resync`] (events can be lost across a reconnect, ZOOKEEPER-4698), so the
//! engine re-reads synced and a typed `watch_events` stream gets a `Resync`; a session expiry
//! likewise re-registers on the store's next session through a `Resync`.

use std::sync::Arc;
use std::time::Duration;

use kv_core::raw::{watch_key, watch_tree, Feed, Update};
use kv_core::{async_trait, Error, KvPair, Result, TreeWatchStream, WatchStream};
use tokio::sync::watch;
use tokio::time::Instant;
use zookeeper_client as zk;

use crate::hub::Registration;
use crate::inner::{Conn, Inner};
use crate::node::{read_node, Node};
use crate::{codec, tree, BACKEND};

/// Starts a watch of one key.
pub(crate) async fn key(inner: Arc<Inner>, key: String) -> Result<WatchStream> {
    let path = inner.path(&key);
    let life = inner.life.clone();
    let feed = ZkFeed::new(inner, Target::Key(key.clone()), path);
    watch_key(BACKEND, life, key, feed).await
}

/// Starts a watch of the subtree of `prefix`.
/// The typed event stream of a subtree: the subtree watch's feed (a resumed cursor starts
/// with a Resync: ZooKeeper keeps no history to replay).
pub(crate) async fn events(
    inner: Arc<Inner>,
    prefix: String,
    from: Option<kv_core::Cursor>,
) -> Result<kv_core::EventStream> {
    let path = inner.prefix_path(&prefix);
    let life = inner.life.clone();
    let feed = ZkFeed::new(inner, Target::Tree(prefix.clone()), path);
    kv_core::raw::watch_events(BACKEND, life, prefix, from, feed).await
}

pub(crate) async fn subtree(inner: Arc<Inner>, prefix: String) -> Result<TreeWatchStream> {
    let path = inner.prefix_path(&prefix);
    let life = inner.life.clone();
    let feed = ZkFeed::new(inner, Target::Tree(prefix.clone()), path);
    watch_tree(BACKEND, life, prefix, feed).await
}

enum Target {
    Key(String),
    Tree(String),
}

struct ZkFeed {
    inner: Arc<Inner>,
    target: Target,
    /// The watched znode.
    path: String,
    /// The watch's place in the hub of the session it was registered on.
    reg: Option<Registration>,
    /// When the earliest TTL among the pairs read is due.
    expiry: Option<Instant>,
    /// The connection is lost (a `Disconnected` event and no reconnect yet).
    disconnected: bool,
    /// A re-read is due (`Some(true)`: after a `sync`).
    pending: Option<bool>,
    conn_rx: watch::Receiver<Option<Conn>>,
}

enum Wake {
    Seen(crate::hub::Seen),
    Session,
    Expiry,
    Outage,
}

/// Sleeps until `d` (never without one). The timer is boxed: an idle watch waiting on no
/// deadline keeps no timer in its state.
async fn sleep_opt(d: Option<Instant>) {
    match d {
        Some(d) => Box::pin(tokio::time::sleep_until(d)).await,
        None => std::future::pending().await,
    }
}

fn unreachable(inner: &Inner, message: String) -> Error {
    Error::Unreachable {
        endpoint: inner.endpoints.clone(),
        message,
        source: None,
    }
}

/// Reads the watched key or subtree (after a `sync` if `sync`, shared with the watch reads
/// started at the same moment, see [`crate::shared_sync`]), bounded by the store timeout: the
/// pairs and the earliest TTL expiry (ms) among them.
async fn read_state(
    inner: &Inner,
    target: &Target,
    path: &str,
    conn: &Conn,
    sync: bool,
) -> Result<(Vec<KvPair>, Option<i64>)> {
    let client = &*conn.client;
    let read = async {
        match target {
            Target::Key(key) => match read_node(client, path).await? {
                Node::Value(v, stat, ttl) => Ok((
                    vec![KvPair::new(key.clone(), v, stat.mzxid as u64)],
                    ttl.map(|t| stat.mtime.saturating_add(t as i64)),
                )),
                Node::Expired(stat) => {
                    inner.reap(client, path, &stat);
                    Ok((Vec::new(), None))
                }
                Node::NoValue(_) | Node::Missing => Ok((Vec::new(), None)),
            },
            Target::Tree(prefix) => tree::list(inner, client, prefix).await,
        }
    };
    let read = async {
        if sync {
            let barrier = inner.read_barrier();
            inner.sync_share.read_after(conn, path, barrier, read).await
        } else {
            read.await
        }
    };
    let name = match target {
        Target::Key(k) | Target::Tree(k) => k,
    };
    tokio::time::timeout(inner.cfg.timeout, read)
        .await
        .map_err(|_| unreachable(inner, "no answer to the watch's read".into()))?
        .map_err(|e: zk::Error| inner.err(e, name))
}

impl ZkFeed {
    fn new(inner: Arc<Inner>, target: Target, path: String) -> Self {
        let conn_rx = inner.conn.subscribe();
        ZkFeed {
            inner,
            target,
            path,
            reg: None,
            expiry: None,
            disconnected: false,
            pending: None,
            conn_rx,
        }
    }

    fn name(&self) -> &str {
        match &self.target {
            Target::Key(k) | Target::Tree(k) => k,
        }
    }

    fn unreachable(&self, message: String) -> Error {
        unreachable(&self.inner, message)
    }

    /// Registers the watch with the hub of `conn`'s session (unless it is) and reads the
    /// watched state (after a `sync` if `sync`). The registration precedes the read, and the
    /// shared watch was added before on the same session, so no change after the read is missed.
    async fn arm_and_read(&mut self, conn: &Conn, sync: bool) -> Result<(Vec<KvPair>, u64)> {
        if self.reg.as_ref().map(|r| r.hub.gen) != Some(conn.gen) {
            self.reg = None;
            let hub = self.inner.hub(conn, &self.path).await?;
            let tree = matches!(self.target, Target::Tree(_));
            self.reg = Some(hub.register(&self.path, tree));
        } else if let Some(r) = &self.reg {
            r.slot.clear_reread();
        }
        self.disconnected = false;
        self.pending = None;
        let read = read_state(&self.inner, &self.target, &self.path, conn, sync).await;
        self.finish_read(read)
    }

    /// Reads the watched state (after a `sync` if `sync`).
    async fn state(&mut self, conn: &Conn, sync: bool) -> Result<(Vec<KvPair>, u64)> {
        let read = read_state(&self.inner, &self.target, &self.path, conn, sync).await;
        self.finish_read(read)
    }

    /// Notes the earliest TTL expiry of a read; its pairs and cursor (the largest zxid read).
    fn finish_read(
        &mut self,
        read: Result<(Vec<KvPair>, Option<i64>)>,
    ) -> Result<(Vec<KvPair>, u64)> {
        let (pairs, exp) = read?;
        self.expiry = exp.map(|e| {
            let wait = (e - codec::now_ms()).max(0) as u64 + 5;
            Instant::now() + Duration::from_millis(wait)
        });
        let cursor = pairs.iter().map(|p| p.version).max().unwrap_or(0);
        Ok((pairs, cursor))
    }

    /// Waits for the store's next session (after a session expiry), up to the timeout.
    async fn new_session(&mut self, gen: u64) -> Result<()> {
        let timeout = self.inner.cfg.timeout;
        let changed = self
            .conn_rx
            .wait_for(|c| c.as_ref().map_or(true, |c| c.gen != gen));
        let r = tokio::time::timeout(timeout, changed).await.map(|_| ());
        match r {
            Ok(()) => Ok(()),
            Err(_) => Err(self.unreachable(format!(
                "the ZooKeeper session ended and no new one was opened within {timeout:?}; the watch resumes on the next session"
            ))),
        }
    }
}

#[async_trait]
impl Feed for ZkFeed {
    async fn read(&mut self) -> Result<(Vec<KvPair>, u64)> {
        let conn = self.inner.conn()?;
        let sync = self.inner.read_barrier() != crate::node::Barrier::None;
        self.arm_and_read(&conn, sync).await
    }

    async fn next(&mut self, _cursor: u64) -> Result<Update> {
        // The rare steps (registering, reading, waiting for a session) are boxed, so the state
        // an idle watch keeps while it waits stays small.
        let timeout = self.inner.cfg.timeout;
        loop {
            let conn = self.inner.conn()?;
            if self.reg.as_ref().map(|r| r.hub.gen) != Some(conn.gen) {
                // A new session, or the session ended: register again, re-read synced.
                self.reg = None;
                if conn.client.state().is_terminated() {
                    Box::pin(self.new_session(conn.gen)).await?;
                    continue;
                }
                tracing::debug!(
                    backend = BACKEND,
                    watch = self.name(),
                    session = conn.gen,
                    "re-arming the watch"
                );
                // Changes while no watch was registered cannot be proven absent: the engine
                // re-reads (`read` registers again) and a typed stream gets a `Resync`.
                return Ok(Update::Resync);
            }
            if let Some(sync) = self.pending {
                let (pairs, cursor) = Box::pin(self.state(&conn, sync)).await?;
                self.pending = None;
                return Ok(Update::State(pairs, cursor));
            }
            let outage = self.disconnected.then(|| Instant::now() + timeout);
            let deadline = match (self.expiry, outage) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(reg) = &self.reg else { continue };
            let slot = &reg.slot;
            let wake = tokio::select! {
                _ = slot.wait() => Wake::Seen(slot.take()),
                _ = self.conn_rx.changed() => Wake::Session,
                _ = sleep_opt(deadline) => {
                    if outage.is_some_and(|o| o <= Instant::now()) {
                        Wake::Outage
                    } else {
                        Wake::Expiry
                    }
                }
            };
            match wake {
                Wake::Session => {}
                Wake::Expiry => {
                    self.expiry = None;
                    self.pending = Some(false);
                }
                Wake::Outage => {
                    return Err(self.unreachable(format!(
                        "connection to ZooKeeper lost for more than {timeout:?}; the watch resumes when it is back"
                    )))
                }
                Wake::Seen(seen) if seen.terminal => {
                    tracing::debug!(backend = BACKEND, watch = self.name(), "watch session ended");
                    self.reg = None;
                    Box::pin(self.new_session(conn.gen)).await?;
                }
                Wake::Seen(seen) => {
                    if seen.connected {
                        // Back after a disconnect, the shared watch added again: re-read
                        // synced (events during the outage may be lost, ZOOKEEPER-4698).
                        tracing::debug!(backend = BACKEND, watch = self.name(), "reconnected; re-reading");
                        self.disconnected = false;
                        self.reg = None;
                        return Ok(Update::Resync);
                    } else if seen.disconnected {
                        self.disconnected = true;
                        return Err(self.unreachable("connection to ZooKeeper lost".into()));
                    }
                    if seen.reread && self.pending.is_none() {
                        self.pending = Some(false);
                    }
                }
            }
        }
    }
}
