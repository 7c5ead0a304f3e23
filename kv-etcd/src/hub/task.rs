//! The task that owns the handle's watch stream (see [`crate::hub`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{WatchClient, WatchOptions, WatchRequestSender, WatchResponse};
use etcd_client::{WatchResponseStream, WatchStream};
use futures::future::BoxFuture;
use kv_core::raw::Lifecycle;
use kv_core::retry::{timed, Backoff};
use kv_core::{Error, Result};
use tokio::sync::{mpsc, watch};

use super::{Cmd, Health, Slot};
use crate::connect::Inner;
use crate::error::{map_err, Ctx};

/// A stream that lived this long is re-opened at once when it breaks; a younger one (a server
/// that accepts and then drops it) waits out the back-off first.
const STABLE: Duration = Duration::from_secs(1);

/// Starts the task of `inner`'s handle: it runs until the handle is dropped or closed.
pub(super) fn spawn(
    inner: &Inner,
    health: watch::Sender<Health>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let task = Task {
        client: inner.watch.clone(),
        endpoints: inner.endpoints.clone(),
        timeout: inner.timeout(),
        health,
        regs: HashMap::new(),
        by_wid: HashMap::new(),
        pending: VecDeque::new(),
        ops: None,
        backoff: Backoff::default(),
    };
    tokio::spawn(task.run(cmds, inner.life.clone()));
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
        responses: Box<WatchResponseStream>,
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
            responses: Box::new(responses),
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
