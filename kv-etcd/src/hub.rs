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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{WatchClient, WatchOptions, WatchRequestSender, WatchResponse};
use etcd_client::{WatchResponseStream, WatchStream};
use futures::future::BoxFuture;
use kv_core::raw::Lifecycle;
use kv_core::retry::{timed, Backoff};
use kv_core::{Error, Result};
use tokio::sync::{mpsc, watch, Notify};

use crate::connect::Inner;
use crate::error::{map_err, Ctx};

/// A stream that lived this long is re-opened at once when it breaks; a younger one (a server
/// that accepts and then drops it) waits out the back-off first.
const STABLE: Duration = Duration::from_secs(1);

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
        let task = Task {
            client: inner.watch.clone(),
            endpoints: inner.endpoints.clone(),
            timeout: inner.timeout(),
            health: health_tx,
            regs: HashMap::new(),
            by_wid: HashMap::new(),
            pending: VecDeque::new(),
            ops: None,
            backoff: Backoff::default(),
        };
        tokio::spawn(task.run(rx, inner.life.clone()));
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

/// An error for one more receiver (kv errors are not `Clone`; the source is left out).
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

/// The error context of the stream's calls.
fn ctx(endpoints: &str, timeout: Duration) -> Ctx<'_> {
    Ctx {
        endpoints,
        op: "watch",
        key: "",
        size: None,
        timeout,
    }
}

/// A registered watch as the task keeps it.
struct Reg {
    start: Vec<u8>,
    end: Vec<u8>,
    /// The revision to (re-)create the watch from: after the last event routed.
    next: i64,
    slot: Arc<Slot>,
    /// Its watch id on the current stream, once etcd answered the creation.
    wid: Option<i64>,
    /// Its creation is sent on the current stream (or opens it).
    sent: bool,
}

impl Reg {
    fn options(&self) -> WatchOptions {
        let opts = WatchOptions::new().with_start_revision(self.next);
        if self.end.is_empty() {
            opts
        } else {
            opts.with_range(self.end.clone())
        }
    }
}

enum Op {
    Create(Vec<u8>, WatchOptions),
    Cancel(i64),
}

/// The stream's state.
enum Conn {
    /// No watches, no stream.
    Idle,
    Opening(BoxFuture<'static, Result<WatchStream>>),
    Open {
        responses: WatchResponseStream,
        since: Instant,
    },
    /// Waiting out the back-off before the next attempt.
    Waiting(std::pin::Pin<Box<tokio::time::Sleep>>),
}

enum Event {
    Opened(Result<WatchStream>),
    Message(std::result::Result<Option<WatchResponse>, etcd_client::Error>),
    Retry,
}

impl Conn {
    async fn event(&mut self) -> Event {
        match self {
            Conn::Idle => std::future::pending().await,
            Conn::Opening(f) => Event::Opened(f.await),
            Conn::Open { responses, .. } => Event::Message(responses.message().await),
            Conn::Waiting(sleep) => {
                sleep.await;
                Event::Retry
            }
        }
    }
}

struct Task {
    client: WatchClient,
    endpoints: String,
    timeout: Duration,
    health: watch::Sender<Health>,
    regs: HashMap<u64, Reg>,
    /// Registration of each watch id of the current stream.
    by_wid: HashMap<i64, u64>,
    /// Registrations whose creations etcd has not answered yet, in the order sent.
    pending: VecDeque<u64>,
    /// The request side of the current stream (its writer task).
    ops: Option<mpsc::UnboundedSender<Op>>,
    backoff: Backoff,
}

impl Task {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>, life: Lifecycle) {
        let mut conn = Conn::Idle;
        loop {
            if self.regs.is_empty() && !matches!(conn, Conn::Idle) {
                self.reset();
                conn = Conn::Idle;
            } else if !self.regs.is_empty() && matches!(conn, Conn::Idle) {
                conn = self.open();
            }
            tokio::select! {
                biased;
                _ = life.closed() => return,
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(cmd) => self.command(cmd),
                },
                event = conn.event() => {
                    conn = match event {
                        Event::Opened(Ok(stream)) => self.opened(stream),
                        Event::Opened(Err(e)) => self.failed(e, None),
                        Event::Message(Ok(Some(resp))) => {
                            self.backoff.reset();
                            self.route(resp);
                            continue;
                        }
                        Event::Message(r) => {
                            let since = match &conn {
                                Conn::Open { since, .. } => Some(*since),
                                _ => None,
                            };
                            let e = match r {
                                Err(e) => map_err(e, &self.ctx()),
                                Ok(_) => self.unreachable("the etcd watch stream ended"),
                            };
                            self.failed(e, since)
                        }
                        Event::Retry => self.open(),
                    };
                }
            }
        }
    }

    fn ctx(&self) -> Ctx<'_> {
        ctx(&self.endpoints, self.timeout)
    }

    fn unreachable(&self, message: &str) -> Error {
        Error::Unreachable {
            endpoint: self.endpoints.clone(),
            message: message.to_string(),
            source: None,
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Add {
                id,
                start,
                end,
                from,
                slot,
            } => {
                let mut reg = Reg {
                    start,
                    end,
                    next: from,
                    slot,
                    wid: None,
                    sent: false,
                };
                if let Some(ops) = &self.ops {
                    reg.sent = ops
                        .send(Op::Create(reg.start.clone(), reg.options()))
                        .is_ok();
                    self.pending.push_back(id);
                }
                self.regs.insert(id, reg);
            }
            Cmd::Remove(id) => {
                // A creation still unanswered is cancelled when its answer comes.
                if let Some(wid) = self.regs.remove(&id).and_then(|r| r.wid) {
                    self.by_wid.remove(&wid);
                    self.send(Op::Cancel(wid));
                }
            }
        }
    }

    fn send(&self, op: Op) {
        if let Some(ops) = &self.ops {
            let _ = ops.send(op);
        }
    }

    /// Forgets the current stream: every watch is to be created again.
    fn reset(&mut self) {
        self.ops = None;
        self.by_wid.clear();
        self.pending.clear();
        for reg in self.regs.values_mut() {
            reg.wid = None;
            reg.sent = false;
        }
    }

    /// Opens a stream whose first request creates one of the watches.
    fn open(&mut self) -> Conn {
        let Some((&id, reg)) = self.regs.iter_mut().next() else {
            return Conn::Idle;
        };
        reg.sent = true;
        self.pending.push_back(id);
        let (key, opts) = (reg.start.clone(), reg.options());
        let mut client = self.client.clone();
        let (endpoints, timeout) = (self.endpoints.clone(), self.timeout);
        Conn::Opening(Box::pin(async move {
            timed("watch", timeout, async {
                client
                    .watch(key, Some(opts))
                    .await
                    .map_err(|e| map_err(e, &ctx(&endpoints, timeout)))
            })
            .await
        }))
    }

    /// A new stream: its writer task starts, and every other watch is created on it.
    fn opened(&mut self, stream: WatchStream) -> Conn {
        let (sender, responses) = stream.split();
        let (ops, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(sender, rx));
        for (&id, reg) in self.regs.iter_mut().filter(|(_, r)| !r.sent) {
            reg.sent = ops
                .send(Op::Create(reg.start.clone(), reg.options()))
                .is_ok();
            self.pending.push_back(id);
        }
        self.ops = Some(ops);
        // Up again: no need to wake every registration for that.
        self.health.send_if_modified(|h| {
            h.error = None;
            false
        });
        Conn::Open {
            responses,
            since: Instant::now(),
        }
    }

    /// The stream broke (`since`: it was open since then) or could not be opened: every
    /// registration hears of it, and the task tries again.
    fn failed(&mut self, e: Error, since: Option<Instant>) -> Conn {
        tracing::debug!(backend = crate::BACKEND, watches = self.regs.len(), error = %e, "watch stream interrupted");
        self.reset();
        let e = Arc::new(e);
        self.health.send_modify(|h| h.error = Some(e));
        if since.is_some_and(|s| s.elapsed() >= STABLE) {
            self.backoff.reset();
            return self.open();
        }
        Conn::Waiting(Box::pin(tokio::time::sleep(self.backoff.next_delay())))
    }

    /// Hands a response to the registration of its watch id.
    fn route(&mut self, resp: WatchResponse) {
        let wid = resp.watch_id();
        if resp.created() {
            let Some(id) = self.pending.pop_front() else {
                return;
            };
            if !self.regs.contains_key(&id) {
                // Dropped before etcd answered.
                if !resp.canceled() {
                    self.send(Op::Cancel(wid));
                }
                return;
            }
            if resp.canceled() {
                // The creation failed: the feed hears why and registers again.
                if let Some(reg) = self.regs.remove(&id) {
                    reg.slot.push(resp);
                }
                return;
            }
            self.by_wid.insert(wid, id);
            if let Some(reg) = self.regs.get_mut(&id) {
                reg.wid = Some(wid);
                reg.slot.push(resp);
            }
            return;
        }
        let Some(&id) = self.by_wid.get(&wid) else {
            if !resp.canceled() && wid >= 0 {
                self.send(Op::Cancel(wid));
            }
            return;
        };
        if resp.canceled() || resp.compact_revision() > 0 {
            // Compacted (the feed re-reads) or cancelled by etcd (the feed registers again).
            self.by_wid.remove(&wid);
            if let Some(reg) = self.regs.remove(&id) {
                reg.slot.push(resp);
            }
            return;
        }
        let Some(reg) = self.regs.get_mut(&id) else {
            return;
        };
        let Some(last) = resp
            .events()
            .iter()
            .filter_map(|e| e.kv())
            .map(|kv| kv.mod_revision())
            .max()
        else {
            // A progress notice: nothing to deliver.
            return;
        };
        reg.next = reg.next.max(last + 1);
        reg.slot.push(resp);
    }
}

/// Sends a stream's requests in order, so that the task never waits on the request channel.
async fn write(mut sender: WatchRequestSender, mut ops: mpsc::UnboundedReceiver<Op>) {
    while let Some(op) = ops.recv().await {
        let sent = match op {
            Op::Create(key, opts) => sender.watch(key, Some(opts)).await,
            Op::Cancel(wid) => sender.cancel(wid).await,
        };
        if sent.is_err() {
            return;
        }
    }
}
