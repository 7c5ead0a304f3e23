//! What the watch engine reports to: snapshot sinks (`watch`, `watch_tree`) and the typed,
//! resumable event sink (`watch_events`).

use std::collections::BTreeMap;

use super::{Event, Scope};
use crate::error::Error;
use crate::events::{Cursor, WatchEvent};
use crate::pair::KvPair;
use crate::watch::{EventSender, KeyWatcher, TreeWatcher};

/// What a watch knows of its scope: one optional pair for a key watch (no map to allocate),
/// the pairs by key for a subtree.
pub(super) enum State {
    Key(Option<KvPair>),
    Tree(BTreeMap<String, KvPair>),
}

impl State {
    /// The in-scope pairs of `pairs`.
    pub(super) fn of(scope: &Scope, pairs: Vec<KvPair>) -> State {
        let mut pairs = pairs.into_iter().filter(|p| scope.contains(&p.key));
        match scope {
            Scope::Key(_) => State::Key(pairs.next()),
            Scope::Tree(_) => State::Tree(pairs.map(|p| (p.key.clone(), p)).collect()),
        }
    }

    fn get(&self, key: &str) -> Option<&KvPair> {
        match self {
            State::Key(p) => p.as_ref().filter(|p| p.key == key),
            State::Tree(m) => m.get(key),
        }
    }

    fn insert(&mut self, pair: KvPair) {
        match self {
            State::Key(p) => *p = Some(pair),
            State::Tree(m) => {
                m.insert(pair.key.clone(), pair);
            }
        }
    }

    fn remove(&mut self, key: &str) {
        match self {
            State::Key(p) => *p = None,
            State::Tree(m) => {
                m.remove(key);
            }
        }
    }

    /// The pairs in key order.
    fn iter(&self) -> Box<dyn Iterator<Item = &KvPair> + '_> {
        match self {
            State::Key(p) => Box::new(p.iter()),
            State::Tree(m) => Box::new(m.values()),
        }
    }
}

/// What the engine reports to: states (`watch`, `watch_tree`) or typed events. Each method
/// returns `false` once the caller dropped the stream.
pub(super) trait Sink: Send + Sync + 'static {
    /// The state was (re-)read at `cursor`.
    fn reset(&mut self, state: &State, scope: &Scope, cursor: u64) -> bool;
    /// Applies in-scope `events` (up to `cursor`) to `state` and reports them.
    fn events(&mut self, state: &mut State, scope: &Scope, events: Vec<Event>, cursor: u64)
        -> bool;
    /// `new` replaces `state` at `cursor`.
    fn replace(&mut self, state: &mut State, scope: &Scope, new: State, cursor: u64) -> bool;
    fn error(&mut self, error: Error) -> bool;
    fn closed(&self) -> impl std::future::Future<Output = ()> + Send;
    /// True (once) when the reader fell too far behind and must get a fresh snapshot.
    fn needs_resync(&mut self) -> bool {
        false
    }
}

/// Applies one event to a state map.
fn apply(state: &mut State, ev: Event) {
    match ev {
        Event::Put(p) => {
            state.insert(p);
        }
        Event::Delete { key, .. } => {
            state.remove(&key);
        }
    }
}

/// The snapshot sinks: one state after each run of events with one version (one snapshot per
/// revision); the queue drops consecutive equal states.
trait Snapshots: Send + Sync + 'static {
    fn emit_state(&mut self, state: &State, scope: &Scope) -> bool;
    fn sink_error(&mut self, error: Error) -> bool;
    fn sink_closed(&self) -> impl std::future::Future<Output = ()> + Send;
}

impl Snapshots for KeyWatcher {
    fn emit_state(&mut self, state: &State, scope: &Scope) -> bool {
        self.emit(state.get(scope.name()).cloned())
    }
    fn sink_error(&mut self, error: Error) -> bool {
        self.error(error)
    }
    fn sink_closed(&self) -> impl std::future::Future<Output = ()> + Send {
        KeyWatcher::closed(self)
    }
}

impl Snapshots for TreeWatcher {
    fn emit_state(&mut self, state: &State, _: &Scope) -> bool {
        self.emit(state.iter().cloned().collect())
    }
    fn sink_error(&mut self, error: Error) -> bool {
        self.error(error)
    }
    fn sink_closed(&self) -> impl std::future::Future<Output = ()> + Send {
        TreeWatcher::closed(self)
    }
}

impl<T: Snapshots> Sink for T {
    fn reset(&mut self, state: &State, scope: &Scope, _: u64) -> bool {
        self.emit_state(state, scope)
    }

    fn events(&mut self, state: &mut State, scope: &Scope, events: Vec<Event>, _: u64) -> bool {
        let mut pending: Option<u64> = None;
        for ev in events {
            if pending.is_some_and(|v| v != ev.version()) && !self.emit_state(state, scope) {
                return false;
            }
            pending = Some(ev.version());
            apply(state, ev);
        }
        pending.is_none() || self.emit_state(state, scope)
    }

    fn replace(&mut self, state: &mut State, scope: &Scope, new: State, _: u64) -> bool {
        *state = new;
        self.emit_state(state, scope)
    }

    fn error(&mut self, error: Error) -> bool {
        self.sink_error(error)
    }

    fn closed(&self) -> impl std::future::Future<Output = ()> + Send {
        self.sink_closed()
    }
}

/// The typed sink of [`watch_events`], with the last cursor it reported: reported cursors
/// never go back (a feed's own cursor may, e.g. ZooKeeper's highest version after a delete).
pub(super) struct Typed(pub(super) EventSender<WatchEvent>, pub(super) u64);

impl Typed {
    /// Sends events; all but the last of each revision carry the cursor before it, so that
    /// resuming from any of them replays the whole revision.
    fn send_all(&mut self, events: Vec<Event>, cursor: u64) -> bool {
        let n = events.len();
        for (i, ev) in events.into_iter().enumerate() {
            let v = ev.version();
            let last_of_rev = i + 1 == n;
            let c = match (last_of_rev, v) {
                (true, _) => cursor.max(v),
                (false, 0) => cursor.saturating_sub(1),
                (false, v) => v.saturating_sub(1),
            };
            self.1 = self.1.max(c);
            let cursor = Cursor::new(self.1);
            let item = match ev {
                Event::Put(pair) => WatchEvent::Put { pair, cursor },
                Event::Delete { key, version } => WatchEvent::Delete {
                    key,
                    version,
                    cursor,
                },
            };
            if !self.0.send(Ok(item)) {
                return false;
            }
        }
        true
    }
}

/// Groups `events` so that `send_all` can tell the last event of each revision.
fn by_revision(events: Vec<Event>) -> Vec<Vec<Event>> {
    let mut out: Vec<Vec<Event>> = Vec::new();
    for ev in events {
        match out.last_mut() {
            Some(run) if run[0].version() == ev.version() => run.push(ev),
            _ => out.push(vec![ev]),
        }
    }
    out
}

impl Sink for Typed {
    fn reset(&mut self, state: &State, _: &Scope, cursor: u64) -> bool {
        // A snapshot may go back (an index reset): it replaces everything before it.
        self.1 = cursor;
        self.0.send(Ok(WatchEvent::Resync {
            pairs: state.iter().cloned().collect(),
            cursor: Cursor::new(cursor),
        }))
    }

    fn events(&mut self, state: &mut State, _: &Scope, events: Vec<Event>, cursor: u64) -> bool {
        for ev in &events {
            apply(state, ev.clone());
        }
        let runs = by_revision(events);
        let last = runs.len().saturating_sub(1);
        for (i, run) in runs.into_iter().enumerate() {
            let c = if i == last { cursor } else { run[0].version() };
            if !self.send_all(run, c) {
                return false;
            }
        }
        true
    }

    fn replace(&mut self, state: &mut State, _: &Scope, new: State, cursor: u64) -> bool {
        // The changes between the two states, as events of one revision at `cursor`.
        let mut events = Vec::new();
        for p in new.iter() {
            if state.get(&p.key).map(|o| o.version) != Some(p.version) {
                events.push(Event::Put(p.clone()));
            }
        }
        for k in state.iter().map(|p| &p.key) {
            if new.get(k).is_none() {
                events.push(Event::Delete {
                    key: k.clone(),
                    version: cursor,
                });
            }
        }
        *state = new;
        self.send_all(events, cursor)
    }

    fn error(&mut self, error: Error) -> bool {
        self.0.send(Err(error))
    }

    fn closed(&self) -> impl std::future::Future<Output = ()> + Send {
        self.0.closed()
    }

    fn needs_resync(&mut self) -> bool {
        self.0.take_overflow()
    }
}
