//! Removing what a lock attempt or a released lock left on the server, until it is gone.
//!
//! A contender node that outlives its attempt sits in the queue for as long as its session
//! lives and blocks every later acquisition of the lock; a lock value that outlives its hold
//! does the same. One `delete` is not enough: while the server is paused or cut off it fails
//! with `ConnectionLoss`, and the session often survives (it only needs a heartbeat within
//! the session timeout), so the node would stay for good. And a `create` whose answer was
//! lost may have made a contender whose name nobody knows.
//!
//! So every contender's name carries a tag unique to its attempt (`c-<tag>-<sequence>`, as
//! Curator's protected mode does), and removal retries with back-off until the nodes are
//! gone, or gone with their session: the session ended, the client was cut off from every
//! server for over twice the negotiated session timeout (the servers expired it), or the
//! store was closed (its session is closed with it). Ten minutes is the last bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kv_core::raw::Lifecycle;
use tokio::time::Instant;
use zookeeper_client as zk;
use zookeeper_client::Client;

use crate::codec;

/// The last bound on a removal's retries.
pub(super) const GIVE_UP: Duration = Duration::from_secs(600);

/// A tag no other attempt of any session shares: the session id and a process-wide count.
pub(super) fn new_tag(c: &Client) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{n:x}", c.session_id().0 as u64)
}

/// The sequence number of contender node `name` (`c-<tag>-<seq>`, or `c-<seq>` as written
/// by kv before tags).
pub(super) fn sequence(name: &str) -> Option<i64> {
    name.strip_prefix("c-")?.rsplit('-').next()?.parse().ok()
}

/// What to remove, with the session that made it.
pub(super) struct Leftovers {
    pub client: Arc<Client>,
    /// Closed when the store closes.
    pub life: Lifecycle,
    /// The lock directory and the attempt's tag: every `c-<tag>-…` child is ours.
    pub dir: String,
    pub tag: String,
    /// The contender's path, when its create was answered.
    pub contender: Option<String>,
    /// The lock value: its path and the `mzxid` this hold wrote (`None`: any version this
    /// session created).
    pub value: Option<(String, Option<i64>)>,
    /// Bound on one pass.
    pub timeout: Duration,
}

enum Pass {
    Done,
    /// Connection lost or no answer in time: try again.
    Retry,
    /// Nothing more can be done (the error is logged).
    Stop,
}

impl Leftovers {
    /// Removes the nodes; retries as the [module docs](self) say. Always makes one pass, also
    /// after the store was closed.
    pub async fn remove(self) {
        let limit = Instant::now() + GIVE_UP;
        let cut_limit = 2 * self.client.session_timeout();
        let mut cut_since: Option<Instant> = None;
        let mut backoff =
            kv_core::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let pass = match tokio::time::timeout(self.timeout, self.pass()).await {
                Ok(p) => p,
                Err(_) => Pass::Retry,
            };
            match pass {
                Pass::Done | Pass::Stop => return,
                Pass::Retry => {}
            }
            let state = self.client.state();
            if self.life.is_closed() || state.is_terminated() {
                return; // the session goes, and its ephemeral nodes with it
            }
            if matches!(
                state,
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly
            ) {
                cut_since = None;
            } else if cut_since.get_or_insert_with(Instant::now).elapsed() > cut_limit {
                return; // the servers have expired the session
            }
            if Instant::now() > limit {
                tracing::warn!(backend = crate::BACKEND, dir = %self.dir, "lock clean-up gave up after {GIVE_UP:?}; the nodes go when the session ends");
                return;
            }
            tokio::select! {
                _ = backoff.wait() => {}
                _ = self.life.closed() => return,
            }
        }
    }

    async fn pass(&self) -> Pass {
        let c = &self.client;
        if let Some((path, mzxid)) = &self.value {
            for _ in 0..10 {
                let st = match c.check_stat(path).await {
                    Ok(Some(st)) => st,
                    Ok(None) => break,
                    Err(e) => return self.failed(e),
                };
                let ours = match mzxid {
                    Some(m) => st.mzxid == *m,
                    None => st.ephemeral_owner == c.session_id().0,
                };
                if !ours {
                    break;
                }
                let r = match c.delete(path, Some(st.version)).await {
                    // The key got children (a plain value then): leave them, drop the value.
                    Err(zk::Error::NotEmpty) => c
                        .set_data(path, codec::TOMBSTONE, Some(st.version))
                        .await
                        .map(|_| ()),
                    r => r,
                };
                match r {
                    Ok(()) | Err(zk::Error::NoNode) => break,
                    Err(zk::Error::BadVersion | zk::Error::NotEmpty) => continue,
                    Err(e) => return self.failed(e),
                }
            }
        }
        let targets = match &self.contender {
            Some(p) => vec![p.clone()],
            None => match c.list_children(&self.dir).await {
                Ok(children) => {
                    let mine = format!("c-{}-", self.tag);
                    children
                        .into_iter()
                        .filter(|n| n.starts_with(&mine))
                        .map(|n| format!("{}/{n}", self.dir))
                        .collect()
                }
                Err(zk::Error::NoNode) => Vec::new(),
                Err(e) => return self.failed(e),
            },
        };
        for t in targets {
            match c.delete(&t, None).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return self.failed(e),
            }
        }
        Pass::Done
    }

    fn failed(&self, e: zk::Error) -> Pass {
        match e {
            // Lost or silent connections ("no response from connection in …" is `Custom`),
            // busy or read-only servers.
            zk::Error::ConnectionLoss
            | zk::Error::Timeout
            | zk::Error::Custom(_)
            | zk::Error::NoHosts
            | zk::Error::Throttled
            | zk::Error::NotReadOnly => Pass::Retry,
            // The session is gone: so are its ephemeral nodes.
            zk::Error::SessionExpired | zk::Error::ClientClosed => Pass::Stop,
            e => {
                tracing::warn!(backend = crate::BACKEND, dir = %self.dir, error = %e, "lock clean-up failed");
                Pass::Stop
            }
        }
    }
}
