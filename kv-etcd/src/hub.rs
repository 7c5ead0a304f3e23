//! The handle's shared etcd watch stream: every `watch`/`watch_tree` of a store handle is one
//! watch id on one gRPC watch stream, owned by one task that fans the responses out.
//!
//! The task creates each registered watch from its start revision. Creations are pipelined:
//! etcd answers them in order, so the n-th `created` answer carries the n-th creation's watch
//! id. Responses are routed by watch id to the registration's queue, and the task remembers
//! the revision after the last event it routed. When the stream breaks (or cannot be opened)
//! every registration sees a new failure in [`Health`]; the task opens a new stream and
//! re-creates every watch from its own next revision. A compaction or a cancellation of one
//! watch id ends that registration (its feed re-reads, or registers again). A dropped
//! registration cancels its watch id; a handle without watches closes the stream.

mod task;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use etcd_client::WatchResponse;
use kv_core::Error;
use tokio::sync::{mpsc, watch, Notify};

use crate::connect::Inner;

/// The stream as the registrations see it: every failure is a new value, whose `error` stays
/// until a new stream is open (`None`: up, or never failed).
#[derive(Default)]
pub(crate) struct Health {
    error: Option<Arc<Error>>,
}

/// Responses for one registration, in stream order.
#[derive(Default)]
pub(crate) struct Slot {
    queue: Mutex<VecDeque<WatchResponse>>,
    ready: Notify,
}

impl Slot {
    fn push(&self, resp: WatchResponse) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(resp);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<WatchResponse> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
}

/// What a registration asks of the task.
enum Cmd {
    Add {
        id: u64,
        start: Vec<u8>,
        end: Vec<u8>,
        from: i64,
        slot: Arc<Slot>,
    },
    Remove(u64),
}

/// The per-handle side of the task: started on the first watch, it ends when the handle is
/// dropped or closed.
pub(crate) struct Hub {
    cmds: mpsc::UnboundedSender<Cmd>,
    health: watch::Receiver<Health>,
    ids: AtomicU64,
}

/// What a registration waits for next.
pub(crate) enum Next {
    /// A response of its watch id (the creation answer included).
    Response(WatchResponse),
    /// The stream failed (again) since the last look: the task is re-opening it.
    Failed(Error),
    /// The task ended: the handle was closed.
    Ended,
}

/// One watch on the shared stream; dropping it cancels the watch id.
pub(crate) struct Registration {
    id: u64,
    slot: Arc<Slot>,
    health: watch::Receiver<Health>,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl Registration {
    /// The next response, or the next failure of the stream. Queued responses come first.
    pub(crate) async fn next(&mut self) -> Next {
        loop {
            if let Some(resp) = self.slot.pop() {
                return Next::Response(resp);
            }
            tokio::select! {
                biased;
                _ = self.slot.ready.notified() => {}
                changed = self.health.changed() => {
                    if changed.is_err() {
                        return Next::Ended;
                    }
                    if let Some(e) = &self.health.borrow_and_update().error {
                        return Next::Failed(copy_error(e));
                    }
                }
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Remove(self.id));
    }
}

impl Hub {
    /// Starts the task of `inner`'s handle.
    pub(crate) fn start(inner: &Inner) -> Hub {
        let (cmds, rx) = mpsc::unbounded_channel();
        let (health_tx, health) = watch::channel(Health::default());
        task::spawn(inner, health_tx, rx);
        Hub {
            cmds,
            health,
            ids: AtomicU64::new(0),
        }
    }

    /// Registers a watch of `[start, end)` (`end` empty: the key `start`) from revision `from`.
    /// Returns at once; the creation is sent on the stream in the background.
    pub(crate) fn register(&self, start: Vec<u8>, end: Vec<u8>, from: i64) -> Registration {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        let mut health = self.health.clone();
        if health.borrow_and_update().error.is_some() {
            // Down right now: the registration reports it once.
            health.mark_changed();
        }
        let _ = self.cmds.send(Cmd::Add {
            id,
            start,
            end,
            from,
            slot: slot.clone(),
        });
        Registration {
            id,
            slot,
            health,
            cmds: self.cmds.clone(),
        }
    }
}

/// A copy of an error for one more receiver (kv errors are not `Clone`; the source is left out).
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Timeout { operation, after } => Error::Timeout {
            operation: operation.clone(),
            after: *after,
        },
        Error::Unauthorized { message, .. } => Error::Unauthorized {
            message: message.clone(),
            source: None,
        },
        Error::Closed => Error::Closed,
        Error::Unreachable {
            endpoint, message, ..
        } => Error::Unreachable {
            endpoint: endpoint.clone(),
            message: message.clone(),
            source: None,
        },
        other => Error::Unreachable {
            endpoint: String::new(),
            message: other.to_string(),
            source: None,
        },
    }
}
