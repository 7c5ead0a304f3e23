//! The watches of a store share one server-side watch: a persistent recursive watch on the
//! namespace root per session, whose events one task fans out to the watches by path.
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

use kv_core::Result;
use tokio::sync::{oneshot, Notify};
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

impl Inner {
    /// The hub of `conn`'s session, created (one `addWatch` on the namespace root) if needed.
    pub async fn hub(&self, conn: &Conn) -> Result<Arc<Hub>> {
        let current = || {
            let h = self.hub.lock().unwrap().upgrade();
            h.filter(|h| h.gen == conn.gen)
        };
        if let Some(h) = current() {
            return Ok(h);
        }
        // One creator at a time; the others then find its hub.
        let _creating = self.hub_creation.lock().await;
        if let Some(h) = current() {
            return Ok(h);
        }
        let root = self.prefix_path("");
        let pw = add_watch(self, &conn.client, &root).await?;
        let (stop, stopped) = oneshot::channel();
        let hub = Arc::new(Hub {
            gen: conn.gen,
            slots: Mutex::default(),
            _stop: stop,
        });
        *self.hub.lock().unwrap() = Arc::downgrade(&hub);
        tokio::spawn(run(
            Arc::downgrade(&hub),
            conn.client.clone(),
            pw,
            stopped,
            root,
            self.cfg.timeout,
        ));
        Ok(hub)
    }
}

async fn add_watch(inner: &Inner, client: &Client, root: &str) -> Result<PersistentWatcher> {
    tokio::time::timeout(
        inner.cfg.timeout,
        client.watch(root, AddWatchMode::PersistentRecursive),
    )
    .await
    .map_err(|_| kv_core::Error::Unreachable {
        endpoint: inner.endpoints.clone(),
        message: "no answer to adding the watch".into(),
        source: None,
    })?
    .map_err(|e| inner.err(e, ""))
}

/// The hub's task: fans the shared watch's events out until the last registration or the
/// session is gone.
async fn run(
    hub: Weak<Hub>,
    client: Arc<Client>,
    mut pw: PersistentWatcher,
    mut stop: oneshot::Receiver<()>,
    root: String,
    timeout: Duration,
) {
    loop {
        let ev = tokio::select! {
            _ = &mut stop => return,
            ev = pw.changed() => ev,
        };
        let Some(h) = hub.upgrade() else { return };
        match (ev.event_type, ev.session_state) {
            (EventType::Session, SessionState::Disconnected) => {
                h.broadcast(|s| s.disconnected = true)
            }
            (EventType::Session, SessionState::SyncConnected | SessionState::ConnectedReadOnly) => {
                // Add the watch again; the old one goes after the new one exists.
                drop(h);
                let mut backoff = kv_core::retry::Backoff::new(
                    Duration::from_millis(50),
                    Duration::from_millis(500),
                );
                loop {
                    let adding = client.watch(&root, AddWatchMode::PersistentRecursive);
                    let r = tokio::select! {
                        _ = &mut stop => return,
                        r = tokio::time::timeout(timeout, adding) => r,
                    };
                    match r {
                        Ok(Ok(new)) => {
                            pw = new;
                            break;
                        }
                        Ok(Err(zk::Error::SessionExpired | zk::Error::ClientClosed)) => break,
                        r => {
                            tracing::debug!(
                                backend = BACKEND,
                                ok = r.is_ok(),
                                "re-adding the shared watch failed; retrying"
                            );
                            if client.state().is_terminated() {
                                break;
                            }
                            tokio::select! {
                                _ = &mut stop => return,
                                _ = backoff.wait() => {}
                            }
                        }
                    }
                }
                let Some(h) = hub.upgrade() else { return };
                tracing::debug!(backend = BACKEND, "reconnected; shared watch re-added");
                h.broadcast(|s| s.connected = true);
            }
            (EventType::Session, state) if state.is_terminated() => {
                h.broadcast(|s| s.terminal = true);
                return;
            }
            (EventType::Session, _) => {}
            _ => h.dispatch(&ev.path),
        }
    }
}
