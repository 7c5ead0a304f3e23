//! The per-handle pool of blocking queries (`watch_pool=N`) that all watches share.
//!
//! Every request of a watch (its reads and the blocking queries) goes over the pool's own
//! connections ([`crate::lanes`]: at most N, under N permits), so a handle's watches never
//! hold more than N connections to the agents. At most N − 1 blocking queries ("groups") run
//! at once, which leaves a permit for the watches' reads (with N = 1 the reads wait for the
//! one query, whose wait is then at most [`SOLO_WAIT`]). Each group reads one key or, once
//! more keys are watched than there are groups, every key under a common prefix
//! (`?recurse`), and hands each of its watches that watch's part of the result when, and
//! only when, that part changed at a newer index. Queries are never cancelled while watches
//! come and go (Consul 1.8 keeps a cancelled query's connection busy until its wait ends): a
//! group that is merged away or loses its last watch stops after its current query.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kv_core::retry::Backoff;
use kv_core::{Error, KvPair, Result};
use tokio::sync::{watch, Semaphore, SemaphorePermit};

use crate::api::Entry;
use crate::group::{merge_prefix, signature, Query, Target};
use crate::http::Http;
use crate::store::Inner;
use crate::watch::{next_index, FIRST_WAIT, UNCHANGED_PAUSE, WAIT};

/// Default `watch_pool`.
pub const DEFAULT_WATCH_POOL: usize = 16;
/// Largest accepted `watch_pool` (well below Consul's 200 connections per client address).
pub const MAX_WATCH_POOL: usize = 64;

/// What a group hands a watch: its latest state and its latest failure. A failure never
/// hides a state the watch has not read yet (the watch reads the state first).
#[derive(Clone, Debug, Default)]
pub(crate) struct Msg {
    /// The watch's latest state and its index.
    pub state: Option<(Vec<KvPair>, u64)>,
    /// The latest failure of the group's query since that state, numbered.
    pub failure: Option<(u64, Arc<Error>)>,
    failures: u64,
    /// How many times the group's index went backwards (an index reset: Consul lost or
    /// restored its state), so the watch cannot prove that it missed nothing.
    pub resets: u64,
}

impl Msg {
    fn set_state(&mut self, pairs: Vec<KvPair>, index: u64) {
        self.state = Some((pairs, index));
        self.failure = None;
    }

    fn set_failure(&mut self, e: Arc<Error>) {
        self.failures += 1;
        self.failure = Some((self.failures, e));
    }
}

/// One watch inside a group.
struct Member {
    target: Target,
    tx: watch::Sender<Msg>,
    /// Index and [`signature`] of the state the watch has; `None` while its read runs.
    known: Option<(u64, u64)>,
    /// The group's index went backwards while the watch's read ran.
    reset: bool,
}

struct Group {
    query: Query,
    members: HashMap<u64, Member>,
    /// The group's last result, for watches whose read ends after it.
    latest: Option<Arc<Snapshot>>,
}

/// One result of a blocking query: the entries sorted by key and `X-Consul-Index`.
pub(crate) struct Snapshot {
    pub index: u64,
    pub entries: Vec<Entry>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    groups: HashMap<u64, Group>,
    /// The group of each watch.
    member_group: HashMap<u64, u64>,
}

/// The blocking-query pool of one store handle.
pub(crate) struct Pool {
    /// The client of every watch request (at most `size` idle connections).
    pub http: Http,
    size: usize,
    permits: Semaphore,
    state: Mutex<State>,
}

/// The longest wait of a blocking query with `watch_pool=1`, whose one connection also
/// serves the watches' reads.
pub(crate) const SOLO_WAIT: Duration = Duration::from_millis(250);

impl Pool {
    pub fn new(http: Http, size: usize) -> Pool {
        Pool {
            http,
            size,
            permits: Semaphore::new(size),
            state: Mutex::new(State::default()),
        }
    }

    /// The configured `watch_pool`.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Most blocking queries at once.
    fn max_groups(&self) -> usize {
        self.size.saturating_sub(1).max(1)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new watch id.
    pub fn id(&self) -> u64 {
        let mut st = self.lock();
        st.next_id += 1;
        st.next_id
    }

    /// A permit for a watch's read.
    pub async fn read_permit(&self) -> SemaphorePermit<'_> {
        self.permits
            .acquire()
            .await
            .expect("the pool semaphore is never closed")
    }

    /// Reads `q` under a permit, blocking while its index is `index`.
    async fn blocking(
        &self,
        inner: &Inner,
        q: &Query,
        index: u64,
        wait: Duration,
    ) -> Result<Snapshot> {
        let _permit = self.read_permit().await;
        self.query(inner, q, index, wait).await
    }

    /// One request for `q` at `index` (0: a plain read), the caller holding a permit.
    pub async fn query(
        &self,
        inner: &Inner,
        q: &Query,
        index: u64,
        wait: Duration,
    ) -> Result<Snapshot> {
        let (mode, block) = (inner.read, Some((index, wait)));
        let (mut entries, index) = match q {
            Query::Key(full) => {
                let (e, got) = self.http.kv_get(full, block, mode).await?;
                (e.into_iter().collect::<Vec<_>>(), got)
            }
            Query::Prefix(raw) => self.http.kv_list(raw, block, mode).await?,
        };
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Snapshot { index, entries })
    }

    /// Adds watch `id` to a group covering `target` (making room by merging groups under a
    /// common prefix when all slots are taken), or marks it as re-reading if it is in one.
    pub fn join(
        &self,
        inner: &Arc<Inner>,
        id: u64,
        target: &Target,
        tx: Option<watch::Sender<Msg>>,
    ) {
        let mut st = self.lock();
        if let Some(gid) = st.member_group.get(&id).copied() {
            if let Some(m) = st.groups.get_mut(&gid).and_then(|g| g.members.get_mut(&id)) {
                m.known = None;
                m.reset = false;
            }
            return;
        }
        let Some(tx) = tx else { return };
        let gid = match st.groups.iter().find(|(_, g)| g.query.covers(target)) {
            Some((gid, _)) => *gid,
            None => {
                if st.groups.len() >= self.max_groups() {
                    // Merge the closest groups (with the new watch first) down to half the
                    // slots, so that the next watches mostly find a group: every merge retires
                    // queries, and a retired query holds its connection until it returns.
                    let mut with = Some(target.raw());
                    loop {
                        let mut raws: Vec<&str> =
                            st.groups.values().map(|g| g.query.raw()).collect();
                        raws.extend(with.take());
                        let prefix = merge_prefix(&raws);
                        self.merge(inner, &mut st, prefix);
                        if st.groups.len() <= self.max_groups() / 2 || st.groups.len() < 2 {
                            break;
                        }
                    }
                }
                match st.groups.iter().find(|(_, g)| g.query.covers(target)) {
                    Some((gid, _)) => *gid,
                    None => self.spawn(inner, &mut st, Query::of(target), HashMap::new()),
                }
            }
        };
        let member = Member {
            target: target.clone(),
            tx,
            known: None,
            reset: false,
        };
        st.groups
            .get_mut(&gid)
            .expect("group")
            .members
            .insert(id, member);
        st.member_group.insert(id, gid);
    }

    /// Replaces every group within `prefix` by one recursive group on it; the watches move
    /// with their known state, and the new group starts with a fresh read, so no change made
    /// while they move is lost. The old groups' queries are not cancelled (Consul would keep
    /// a cancelled query's connection until its wait ends): each ends with its current query.
    fn merge(&self, inner: &Arc<Inner>, st: &mut State, prefix: String) {
        let old: Vec<u64> = st
            .groups
            .iter()
            .filter(|(_, g)| g.query.within(&prefix))
            .map(|(gid, _)| *gid)
            .collect();
        let mut members = HashMap::new();
        for gid in old {
            let g = st.groups.remove(&gid).expect("group");
            members.extend(g.members);
        }
        tracing::debug!(
            backend = crate::BACKEND,
            prefix,
            watches = members.len(),
            "watch groups merged"
        );
        self.spawn(inner, st, Query::Prefix(prefix), members);
    }

    fn spawn(
        &self,
        inner: &Arc<Inner>,
        st: &mut State,
        query: Query,
        members: HashMap<u64, Member>,
    ) -> u64 {
        st.next_id += 1;
        let gid = st.next_id;
        for id in members.keys() {
            st.member_group.insert(*id, gid);
        }
        tokio::spawn(run(inner.clone(), gid, query.clone()));
        let group = Group {
            query,
            members,
            latest: None,
        };
        st.groups.insert(gid, group);
        gid
    }

    /// Watch `id`'s read ended with `cursor` and this state signature: it now follows its
    /// group (and takes the group's last result if that is newer).
    pub fn ready(&self, inner: &Inner, id: u64, cursor: u64, sig: u64) {
        let mut st = self.lock();
        let Some(gid) = st.member_group.get(&id).copied() else {
            return;
        };
        let Some(g) = st.groups.get_mut(&gid) else {
            return;
        };
        let latest = g.latest.clone();
        let Some(m) = g.members.get_mut(&id) else {
            return;
        };
        if std::mem::take(&mut m.reset) {
            // Which of the read and the group's result is newer is unknown: the group's next
            // result (a fresh read) decides.
            m.known = Some((0, sig));
            return;
        }
        m.known = Some((cursor, sig));
        if let Some(snap) = latest {
            offer(inner, m, &snap);
        }
    }

    /// Watch `id` is gone; a group without watches stops after its current query.
    pub fn leave(&self, id: u64) {
        let mut st = self.lock();
        let Some(gid) = st.member_group.remove(&id) else {
            return;
        };
        let Some(g) = st.groups.get_mut(&gid) else {
            return;
        };
        g.members.remove(&id);
        if g.members.is_empty() {
            st.groups.remove(&gid);
        }
    }

    /// The highest index group `gid`'s watches have seen so far (their reads included), or
    /// `None` if the group is gone.
    fn floor(&self, gid: u64) -> Option<u64> {
        let st = self.lock();
        let g = st.groups.get(&gid)?;
        Some(
            g.members
                .values()
                .filter_map(|m| m.known.map(|k| k.0))
                .max()
                .unwrap_or(0),
        )
    }

    /// Hands group `gid`'s result to its watches; `false` if the group is gone.
    fn deliver(&self, inner: &Inner, gid: u64, snap: Snapshot, reset: bool) -> bool {
        let snap = Arc::new(snap);
        let mut st = self.lock();
        let Some(g) = st.groups.get_mut(&gid) else {
            return false;
        };
        g.latest = Some(snap.clone());
        for m in g.members.values_mut() {
            if reset {
                m.tx.send_modify(|msg| msg.resets += 1);
                match &mut m.known {
                    Some((cursor, _)) => *cursor = 0,
                    None => m.reset = true,
                }
            }
            offer(inner, m, &snap);
        }
        true
    }

    /// Hands group `gid`'s failure to its watches; `false` if the group is gone.
    fn fail(&self, gid: u64, e: Error) -> bool {
        let e = Arc::new(e);
        let st = self.lock();
        let Some(g) = st.groups.get(&gid) else {
            return false;
        };
        for m in g.members.values().filter(|m| m.known.is_some()) {
            m.tx.send_modify(|msg| msg.set_failure(e.clone()));
        }
        true
    }
}

/// Sends `m` its part of `snap` if the snapshot is newer than what it has and the part changed.
fn offer(inner: &Inner, m: &mut Member, snap: &Snapshot) {
    let Some((cursor, sig)) = m.known else { return };
    if snap.index <= cursor {
        return;
    }
    let part = m.target.part(&snap.entries);
    let s = signature(part);
    if s != sig {
        match m.target.pairs(inner, part) {
            Ok(pairs) => {
                m.tx.send_modify(|msg| msg.set_state(pairs, snap.index));
            }
            Err(e) => {
                m.tx.send_modify(|msg| msg.set_failure(Arc::new(e)));
                return;
            }
        }
    }
    m.known = Some((snap.index, s));
}

/// A group's loop: blocking queries following Consul's index rules, results fanned out.
async fn run(inner: Arc<Inner>, gid: u64, query: Query) {
    let pool = &inner.pool;
    let mut index = 0u64;
    let mut failures = 0u32;
    let mut backoff = Backoff::default();
    // A new group's queries wait briefly at first: a group merged away soon after it started
    // cancels its query, and Consul keeps a cancelled query's connection until its wait ends.
    let mut wait = FIRST_WAIT;
    // After a failure the next query is a plain read: an agent that came back with an empty
    // state (its index lower than ours) answers it at once with the lower index, while a
    // blocking query above its index would wait for a change of the watched keys or the
    // whole `wait`.
    let mut probe = false;
    loop {
        // What the watches had seen before this query was sent: an answer below it means
        // the index went backwards, also when this group's own index does not show it (a
        // group that began, or failed, before its first answer knows only the watches'
        // reads).
        let Some(floor) = pool.floor(gid) else {
            return;
        };
        let started = std::time::Instant::now();
        let blocking_on = if std::mem::take(&mut probe) { 0 } else { index };
        let r = tokio::select! {
            _ = inner.life.closed() => return,
            r = pool.blocking(&inner, &query, blocking_on, wait) => r,
        };
        match r {
            Ok(snap) => {
                failures = 0;
                backoff.reset();
                let got = snap.index;
                let seen = index.max(floor);
                if got < seen {
                    tracing::debug!(
                        backend = crate::BACKEND,
                        index = seen,
                        got,
                        "X-Consul-Index went backwards: index reset"
                    );
                }
                if !pool.deliver(&inner, gid, snap, got < seen) {
                    return;
                }
                if got == index && index > 0 && started.elapsed() < wait / 2 {
                    tokio::time::sleep(UNCHANGED_PAUSE).await;
                }
                index = next_index(seen, got);
                wait = (wait * 2).min(if pool.size == 1 { SOLO_WAIT } else { WAIT });
            }
            Err(e) => {
                failures += 1;
                probe = true;
                tracing::debug!(backend = crate::BACKEND, failures, error = %e, "watch query failed, retrying");
                if !pool.fail(gid, e) {
                    return;
                }
                if failures > 1 {
                    tokio::select! {
                        _ = inner.life.closed() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }
}

/// A copy of a group's error for one watch (kind and message kept; sources are not `Clone`).
pub(crate) fn share(e: &Error) -> Error {
    match e {
        Error::Unreachable {
            endpoint, message, ..
        } => Error::Unreachable {
            endpoint: endpoint.clone(),
            message: message.clone(),
            source: None,
        },
        Error::Timeout { operation, after } => Error::Timeout {
            operation: operation.clone(),
            after: *after,
        },
        Error::Unauthorized { message, .. } => Error::Unauthorized {
            message: message.clone(),
            source: None,
        },
        Error::Closed => Error::Closed,
        Error::Config { message } => Error::config(message.clone()),
        other => Error::Backend {
            retryable: other.is_transient(),
            backend: crate::BACKEND,
            message: other.to_string(),
            source: None,
        },
    }
}
