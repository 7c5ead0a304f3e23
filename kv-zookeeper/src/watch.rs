//! `watch` and `watch_tree` as a [`Feed`] of kv-core's watch engine: one persistent recursive
//! watch per stream on the key's or prefix's znode, and a re-read after each trigger.
//!
//! `read` arms the watch (if needed) and reads after a `sync` (linearizable reads); the cursor
//! is the largest zxid read. `next` waits for the watch to fire (an event on the key's znode,
//! anything below the prefix, a TTL expiry that is due, a reconnect, a new session) and returns
//! the state read then ([`Update::State`]). A lost connection is an `Err` at once (the engine
//! retries silently once) and then one `Err` per store timeout the outage lasts; after a
//! reconnect the watch is added again (zookeeper-client 0.11 re-registers only one-shot watches)
//! and the state re-read; a session expiry re-arms on the store's next session.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kv_core::raw::{watch_key, watch_tree, Feed, Update};
use kv_core::{async_trait, Error, KvPair, Result, TreeWatchStream, WatchStream};
use tokio::sync::watch;
use tokio::time::Instant;
use zookeeper_client as zk;
use zookeeper_client::{AddWatchMode, Client, EventType, PersistentWatcher, SessionState};

use crate::inner::{Conn, Inner};
use crate::node::{after_sync, read_node_synced, Node};
use crate::{codec, tree, BACKEND};

/// Starts a watch of one key.
pub(crate) async fn key(inner: Arc<Inner>, key: String) -> Result<WatchStream> {
    let path = inner.path(&key);
    let life = inner.life.clone();
    let feed = ZkFeed::new(inner, Target::Key(key.clone()), path);
    watch_key(BACKEND, life, key, feed).await
}

/// Starts a watch of the subtree of `prefix`.
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

/// The watch on the current session.
struct Armed {
    gen: u64,
    client: Arc<Client>,
    pw: PersistentWatcher,
}

struct ZkFeed {
    inner: Arc<Inner>,
    target: Target,
    /// The watched znode.
    path: String,
    armed: Option<Armed>,
    /// When the earliest TTL among the pairs read is due.
    expiry: Option<Instant>,
    /// The connection is lost (a `Disconnected` event and no reconnect yet).
    disconnected: bool,
    /// A re-read is due (`Some(true)`: after a `sync`).
    pending: Option<bool>,
    conn_rx: watch::Receiver<Option<Conn>>,
}

/// What the watch saw.
#[derive(Default)]
struct Seen {
    reread: bool,
    disconnected: bool,
    connected: bool,
    terminal: bool,
}

impl Seen {
    fn add(&mut self, ev: &zk::WatchedEvent, only_path: Option<&str>) {
        match ev.event_type {
            EventType::Session => match ev.session_state {
                SessionState::Disconnected => self.disconnected = true,
                SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                    self.connected = true
                }
                _ => self.terminal = true,
            },
            _ => {
                if only_path.map_or(true, |o| o == ev.path) {
                    self.reread = true;
                }
            }
        }
    }
}

enum Wake {
    Seen(Seen),
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

/// Reads the watched key or subtree (after a `sync` of `path` if `sync`), bounded by the store
/// timeout: the pairs and the earliest TTL expiry (ms) among them.
async fn read_state(
    inner: &Inner,
    target: &Target,
    path: &str,
    client: &Client,
    sync: bool,
) -> Result<(Vec<KvPair>, Option<i64>)> {
    let read = async {
        match target {
            Target::Key(key) => match read_node_synced(client, path, sync).await? {
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
            Target::Tree(prefix) => {
                after_sync(client, path, sync, tree::list(inner, client, prefix)).await
            }
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
            armed: None,
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

    /// Adds the persistent recursive watch on `conn`'s session and reads the watched state
    /// (after a `sync` if `sync`), pipelined: `addWatch`, `sync` and the read are sent without
    /// waiting for each other's answers. ZooKeeper answers a session's requests in order, so
    /// the watch is in place before the read: no change after the read is missed.
    async fn arm_and_read(&mut self, conn: &Conn, sync: bool) -> Result<(Vec<KvPair>, u64)> {
        // The old watcher (if any) goes after the new one exists: the server keeps watching.
        // On failure none is left, so the next call arms again.
        let _old = self.armed.take();
        let client = conn.client.clone();
        let adding = client.watch(&self.path, AddWatchMode::PersistentRecursive);
        let reading = read_state(&self.inner, &self.target, &self.path, &client, sync);
        let (added, read) = futures::join!(
            tokio::time::timeout(self.inner.cfg.timeout, adding),
            reading
        );
        let pw = added
            .map_err(|_| self.unreachable("no answer to adding the watch".into()))?
            .map_err(|e| self.inner.err(e, self.name()))?;
        self.armed = Some(Armed {
            gen: conn.gen,
            client: conn.client.clone(),
            pw,
        });
        self.disconnected = false;
        self.pending = None;
        self.finish_read(read)
    }

    /// Reads the watched state (after a `sync` if `sync`).
    async fn state(&mut self, client: &Client, sync: bool) -> Result<(Vec<KvPair>, u64)> {
        let read = read_state(&self.inner, &self.target, &self.path, client, sync).await;
        self.finish_read(read)
    }

    /// Notes the earliest TTL expiry of a read; its pairs and cursor (the largest zxid read).
    fn finish_read(&mut self, read: Result<(Vec<KvPair>, Option<i64>)>) -> Result<(Vec<KvPair>, u64)> {
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
        let sync = self.inner.sync_reads();
        self.arm_and_read(&conn, sync).await
    }

    async fn next(&mut self, _cursor: u64) -> Result<Update> {
        // The rare steps (arming, reading, waiting for a session) are boxed, so the state an
        // idle watch keeps while it waits stays small.
        let timeout = self.inner.cfg.timeout;
        loop {
            let conn = self.inner.conn()?;
            if self.armed.as_ref().map(|a| a.gen) != Some(conn.gen) {
                // First arm, a new session, or the session ended: (re-)arm, re-read synced.
                self.armed = None;
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
                let sync = self.inner.sync_reads();
                let (pairs, cursor) = Box::pin(self.arm_and_read(&conn, sync)).await?;
                return Ok(Update::State(pairs, cursor));
            }
            if let Some(sync) = self.pending {
                let client = conn.client.clone();
                let (pairs, cursor) = Box::pin(self.state(&client, sync)).await?;
                self.pending = None;
                return Ok(Update::State(pairs, cursor));
            }
            let key_only = matches!(self.target, Target::Key(_));
            let outage = self.disconnected.then(|| Instant::now() + timeout);
            let deadline = match (self.expiry, outage) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(armed) = self.armed.as_mut() else {
                continue;
            };
            let only_path = key_only.then_some(self.path.as_str());
            let wake = tokio::select! {
                ev = armed.pw.changed() => {
                    let mut seen = Seen::default();
                    seen.add(&ev, only_path);
                    // Coalesce whatever else is already queued.
                    while !seen.terminal {
                        match armed.pw.changed().now_or_never() {
                            Some(ev) => seen.add(&ev, only_path),
                            None => break,
                        }
                    }
                    Wake::Seen(seen)
                }
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
                    self.armed = None;
                    Box::pin(self.new_session(conn.gen)).await?;
                }
                Wake::Seen(seen) => {
                    if seen.connected {
                        // Back after a disconnect: add the watch again (the client does not
                        // re-register persistent watches, and events during the outage may be
                        // lost, ZOOKEEPER-4698), re-reading synced in the same round trip.
                        let client = armed.client.clone();
                        tracing::debug!(backend = BACKEND, watch = self.name(), "reconnected; re-adding the watch");
                        let conn = Conn { client, gen: conn.gen };
                        let sync = self.inner.sync_reads();
                        let (pairs, cursor) = Box::pin(self.arm_and_read(&conn, sync)).await?;
                        return Ok(Update::State(pairs, cursor));
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
