//! The watches of a store share one server-side watch per session: a persistent recursive
//! watch on the deepest znode path covering every watched path (the first watch's own path;
//! moved up to the common ancestor when a watch outside it comes, never down while the hub
//! lives), whose events one task fans out to the watches by path.
//!
//! A watch registers a [`Slot`] under its znode path (a key watch: events on that path; a tree
//! watch: events on the path and below) and waits on it; the hub task marks the slots an event
//! concerns and wakes them. Session events go to every slot. After a reconnect the hub adds the
//! server-side watch again (zookeeper-client 0.11 does not re-register persistent watches)
//! before it tells the slots, so their re-reads follow it on the session. The hub ends with its
//! last registration (dropping the watch removes it on the server) or with its session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::FutureExt;
use kv_core::Result;
use tokio::sync::{mpsc, oneshot, Notify};
use zookeeper_client as zk;
use zookeeper_client::{AddWatchMode, Client, EventType, PersistentWatcher, SessionState};

use crate::inner::{Conn, Inner};
use crate::BACKEND;

/// What a watch's slot was told since the watch last looked.
#[derive(Default, Clone, Copy)]
pub(crate) struct Seen {
    /// The watched znode or subtree changed.
    pub reread: bool,
    /// The connection was lost.
    pub disconnected: bool,
    /// Connected again, with the server-side watch back in place.
    pub connected: bool,
    /// The session ended.
    pub terminal: bool,
}

/// Where the hub reports to one watch.
#[derive(Default)]
pub(crate) struct Slot {
    seen: Mutex<Seen>,
    notify: Notify,
}

impl Slot {
    fn mark(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().unwrap());
        self.notify.notify_one();
    }

    /// Forgets the changes marked so far (a read follows).
    pub fn clear_reread(&self) {
        self.seen.lock().unwrap().reread = false;
    }

    /// Takes what was seen so far.
    pub fn take(&self) -> Seen {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Waits until the slot is marked (a mark made before the wait counts).
    pub async fn wait(&self) {
        self.notify.notified().await
    }
}

#[derive(Default)]
struct Slots {
    keys: HashMap<String, Vec<Arc<Slot>>>,
    trees: HashMap<String, Vec<Arc<Slot>>>,
}

impl Slots {
    fn map(&mut self, tree: bool) -> &mut HashMap<String, Vec<Arc<Slot>>> {
        if tree {
            &mut self.trees
        } else {
            &mut self.keys
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.keys.values().chain(self.trees.values()).flatten()
    }
}

/// The shared watch of one session.
pub(crate) struct Hub {
    pub gen: u64,
    slots: Mutex<Slots>,
    /// The path of the shared watch (set once the watch is in place).
    cover: Mutex<String>,
    /// Requests to move the shared watch up.
    widen: mpsc::UnboundedSender<Widen>,
    /// Dropped with the last registration: the task then ends and drops the server-side watch.
    _stop: oneshot::Sender<()>,
}

/// A watch's place in a hub; unregisters on drop.
pub(crate) struct Registration {
    pub hub: Arc<Hub>,
    pub slot: Arc<Slot>,
    path: Box<str>,
    tree: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut slots = self.hub.slots.lock().unwrap();
        let map = slots.map(self.tree);
        if let Some(v) = map.get_mut(&*self.path) {
            v.retain(|s| !Arc::ptr_eq(s, &self.slot));
            if v.is_empty() {
                map.remove(&*self.path);
            }
        }
    }
}

impl Hub {
    fn covers(&self, path: &str) -> bool {
        covers(&self.cover.lock().unwrap(), path)
    }

    /// Registers a watch of `path` (a key's znode, or with `tree` a subtree's root).
    pub fn register(self: &Arc<Self>, path: &str, tree: bool) -> Registration {
        let slot = Arc::new(Slot::default());
        let mut slots = self.slots.lock().unwrap();
        slots
            .map(tree)
            .entry(path.to_string())
            .or_default()
            .push(slot.clone());
        Registration {
            hub: self.clone(),
            slot,
            path: path.into(),
            tree,
        }
    }

    fn broadcast(&self, f: impl Fn(&mut Seen)) {
        for s in self.slots.lock().unwrap().all() {
            s.mark(&f);
        }
    }

    /// Marks the key watches of `path` and the tree watches of it and its ancestors.
    fn dispatch(&self, path: &str) {
        let slots = self.slots.lock().unwrap();
        let reread = |s: &mut Seen| s.reread = true;
        for s in slots.keys.get(path).into_iter().flatten() {
            s.mark(reread);
        }
        if slots.trees.is_empty() {
            return;
        }
        let mut p = path;
        loop {
            for s in slots.trees.get(p).into_iter().flatten() {
                s.mark(reread);
            }
            match p.rfind('/') {
                Some(0) if p.len() > 1 => p = "/",
                Some(i) if i > 0 => p = &p[..i],
                _ => break,
            }
        }
    }
}

/// Whether a recursive watch on `cover` sees events on `path`.
fn covers(cover: &str, path: &str) -> bool {
    cover == "/"
        || path == cover
        || (path.starts_with(cover) && path.as_bytes().get(cover.len()) == Some(&b'/'))
}

/// The deepest znode path whose recursive watch sees events on both paths.
fn common_cover(a: &str, b: &str) -> String {
    let mut out = String::new();
    for (x, y) in a.split('/').skip(1).zip(b.split('/').skip(1)) {
        if x != y || x.is_empty() {
            break;
        }
        out.push('/');
        out.push_str(x);
    }
    if out.is_empty() {
        "/".into()
    } else {
        out
    }
}

impl Inner {
    /// The hub of `conn`'s session, its shared watch covering `path`: created (one `addWatch`
    /// on `path`) if needed, or moved up to the common ancestor of its cover and `path`.
    pub async fn hub(&self, conn: &Conn, path: &str) -> Result<Arc<Hub>> {
        let current = || {
            let h = self.hub.lock().unwrap().upgrade();
            h.filter(|h| h.gen == conn.gen)
        };
        if let Some(h) = current().filter(|h| h.covers(path)) {
            return Ok(h);
        }
        // One change at a time; the others then find it done.
        let _changing = self.hub_creation.lock().await;
        if let Some(h) = current() {
            if h.covers(path) {
                return Ok(h);
            }
            let cover = common_cover(&h.cover.lock().unwrap(), path);
            let (reply, answer) = oneshot::channel();
            if h.widen.send((cover, reply)).is_ok() {
                match tokio::time::timeout(self.cfg.timeout, answer).await {
                    Ok(Ok(Ok(()))) => return Ok(h),
                    Ok(Ok(Err(Some(e)))) => return Err(self.err(e, "")),
                    Ok(Err(_)) => {} // The hub's task ended with its session.
                    Ok(Ok(Err(None))) | Err(_) => return Err(no_answer(self)),
                }
            }
        }
        let pw = add_watch(self, &conn.client, path).await?;
        let (stop, stopped) = oneshot::channel();
        let (widen, widen_rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub {
            gen: conn.gen,
            slots: Mutex::default(),
            cover: Mutex::new(path.to_string()),
            widen,
            _stop: stop,
        });
        *self.hub.lock().unwrap() = Arc::downgrade(&hub);
        let task = Task {
            hub: Arc::downgrade(&hub),
            client: conn.client.clone(),
            cover: path.to_string(),
            timeout: self.cfg.timeout,
        };
        tokio::spawn(task.run(pw, widen_rx, stopped));
        Ok(hub)
    }
}

fn no_answer(inner: &Inner) -> kv_core::Error {
    kv_core::Error::Unreachable {
        endpoint: inner.endpoints.clone(),
        message: "no answer to adding the watch".into(),
        source: None,
    }
}

async fn add_watch(inner: &Inner, client: &Client, path: &str) -> Result<PersistentWatcher> {
    tokio::time::timeout(
        inner.cfg.timeout,
        client.watch(path, AddWatchMode::PersistentRecursive),
    )
    .await
    .map_err(|_| no_answer(inner))?
    .map_err(|e| inner.err(e, ""))
}

/// A request to move the shared watch up to this path, answered once it is in place
/// (`Err(None)`: no answer within the timeout).
type Widen = (
    String,
    oneshot::Sender<std::result::Result<(), Option<zk::Error>>>,
);

/// The hub's task: fans the shared watch's events out until the last registration or the
/// session is gone.
struct Task {
    hub: Weak<Hub>,
    client: Arc<Client>,
    /// The path of the shared watch.
    cover: String,
    timeout: Duration,
}

/// Whether the task goes on.
enum Flow {
    Go,
    End,
}

impl Task {
    async fn run(
        mut self,
        mut pw: PersistentWatcher,
        mut widen: mpsc::UnboundedReceiver<Widen>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            let ev = tokio::select! {
                _ = &mut stop => return,
                Some((cover, reply)) = widen.recv() => {
                    let adding = self.client.watch(&cover, AddWatchMode::PersistentRecursive);
                    let r = match tokio::time::timeout(self.timeout, adding).await {
                        Ok(Ok(new)) => {
                            // The old watch goes after the new one exists; what it queued
                            // meanwhile is dispatched first.
                            let mut old = std::mem::replace(&mut pw, new);
                            while let Some(ev) = old.changed().now_or_never() {
                                if let Flow::End = self.path_event(&ev) {
                                    return;
                                }
                            }
                            if let Some(h) = self.hub.upgrade() {
                                *h.cover.lock().unwrap() = cover.clone();
                            }
                            self.cover = cover;
                            Ok(())
                        }
                        Ok(Err(e)) => Err(Some(e)),
                        Err(_) => Err(None),
                    };
                    let _ = reply.send(r);
                    continue;
                }
                ev = pw.changed() => ev,
            };
            let flow = match (ev.event_type, ev.session_state) {
                (
                    EventType::Session,
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly,
                ) => self.reconnected(&mut pw, &mut stop).await,
                _ => self.path_event(&ev),
            };
            if let Flow::End = flow {
                return;
            }
        }
    }

    /// Dispatches a path event; reports a disconnect or the end of the session to every slot.
    fn path_event(&self, ev: &zk::WatchedEvent) -> Flow {
        let Some(h) = self.hub.upgrade() else {
            return Flow::End;
        };
        match (ev.event_type, ev.session_state) {
            (EventType::Session, SessionState::Disconnected) => {
                h.broadcast(|s| s.disconnected = true)
            }
            (EventType::Session, state) if state.is_terminated() => {
                h.broadcast(|s| s.terminal = true);
                return Flow::End;
            }
            (EventType::Session, _) => {}
            _ => h.dispatch(&ev.path),
        }
        Flow::Go
    }

    /// After a reconnect: adds the shared watch again (the old one goes after the new one
    /// exists), then tells every slot.
    async fn reconnected(
        &self,
        pw: &mut PersistentWatcher,
        stop: &mut oneshot::Receiver<()>,
    ) -> Flow {
        let mut backoff =
            kv_core::retry::Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        loop {
            let adding = self
                .client
                .watch(&self.cover, AddWatchMode::PersistentRecursive);
            let r = tokio::select! {
                _ = &mut *stop => return Flow::End,
                r = tokio::time::timeout(self.timeout, adding) => r,
            };
            match r {
                Ok(Ok(new)) => {
                    *pw = new;
                    break;
                }
                Ok(Err(zk::Error::SessionExpired | zk::Error::ClientClosed)) => break,
                r => {
                    tracing::debug!(
                        backend = BACKEND,
                        ok = r.is_ok(),
                        "re-adding the shared watch failed; retrying"
                    );
                    if self.client.state().is_terminated() {
                        break;
                    }
                    tokio::select! {
                        _ = &mut *stop => return Flow::End,
                        _ = backoff.wait() => {}
                    }
                }
            }
        }
        let Some(h) = self.hub.upgrade() else {
            return Flow::End;
        };
        tracing::debug!(backend = BACKEND, "reconnected; shared watch re-added");
        h.broadcast(|s| s.connected = true);
        Flow::Go
    }
}

#[cfg(test)]
mod tests {
    use super::{common_cover, covers};

    #[test]
    fn covers_paths_below_on_segment_boundaries() {
        assert!(covers("/", "/a"));
        assert!(covers("/ns", "/ns"));
        assert!(covers("/ns", "/ns/a/b"));
        assert!(!covers("/ns", "/nsx"));
        assert!(!covers("/ns/a", "/ns"));
    }

    #[test]
    fn common_cover_is_the_deepest_common_ancestor() {
        assert_eq!(common_cover("/ns/a", "/ns/b"), "/ns");
        assert_eq!(common_cover("/ns/cfg/a", "/ns/cfg/b/c"), "/ns/cfg");
        assert_eq!(common_cover("/ns/a", "/ns/ab"), "/ns");
        assert_eq!(common_cover("/ns", "/ns/a"), "/ns");
        assert_eq!(common_cover("/a", "/b"), "/");
        assert_eq!(common_cover("/", "/a"), "/");
    }
}
