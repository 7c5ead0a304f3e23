//! The typed, resumable event stream of [`Store::watch_events`](crate::Store::watch_events).

use std::pin::Pin;

use futures::Stream;

use crate::error::{Error, Result};
use crate::pair::KvPair;

/// A position in a backend's change history (etcd revision, Consul index, ZooKeeper zxid, the
/// embedded stores' version counter). Persist it (it prints and parses as a number) and pass it
/// back to [`Store::watch_events`](crate::Store::watch_events) to resume after it, also from
/// another process. Cursors of different stores are not comparable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor(u64);

impl Cursor {
    /// A cursor from its number (as printed by `Display`).
    pub const fn new(position: u64) -> Self {
        Cursor(position)
    }

    /// The number inside.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for Cursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        s.trim()
            .parse()
            .map(Cursor)
            .map_err(|_| Error::invalid_argument(format!("{s:?} is not a watch cursor (a number)")))
    }
}

/// One item of an [`EventStream`].
///
/// Resuming from any item's [`cursor`](WatchEvent::cursor) never misses a change. Events of one
/// multi-key write (a transaction) arrive together; resuming from the cursor of one that is not
/// the last of them delivers the whole write again (each event is an idempotent state change).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A key of the subtree was created or written.
    Put {
        /// The key's new pair.
        pair: KvPair,
        /// Resume after this event with this cursor.
        cursor: Cursor,
    },
    /// A key of the subtree was deleted or expired.
    Delete {
        /// The deleted key.
        key: String,
        /// The delete's revision where the backend has one, else the cursor's number.
        version: u64,
        /// Resume after this event with this cursor.
        cursor: Cursor,
    },
    /// The whole subtree as it is now: the first item of a stream started without a cursor,
    /// and the item that replaces the missed events whenever the backend cannot prove there
    /// was no gap (history compacted, session lost, index reset, a resumed cursor the backend
    /// cannot replay from, a reader too slow for the queue). Replace your state with it.
    Resync {
        /// Every pair of the subtree, in key order.
        pairs: Vec<KvPair>,
        /// Resume after this snapshot with this cursor.
        cursor: Cursor,
    },
}

impl WatchEvent {
    /// The cursor to persist after handling this item.
    pub fn cursor(&self) -> Cursor {
        match self {
            WatchEvent::Put { cursor, .. }
            | WatchEvent::Delete { cursor, .. }
            | WatchEvent::Resync { cursor, .. } => *cursor,
        }
    }

    /// The key of a `Put` or `Delete`; `None` for `Resync`.
    pub fn key(&self) -> Option<&str> {
        match self {
            WatchEvent::Put { pair, .. } => Some(&pair.key),
            WatchEvent::Delete { key, .. } => Some(key),
            WatchEvent::Resync { .. } => None,
        }
    }
}

/// Stream returned by [`Store::watch_events`](crate::Store::watch_events). Errors arrive as
/// `Err` items (the stream goes on after a transient one); it ends after a final `Err`
/// ([`Error::Closed`] when the store closes). Dropping it stops the watch.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_as_text() {
        let c = Cursor::new(42);
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        assert!(matches!(
            "x".parse::<Cursor>(),
            Err(Error::InvalidArgument { .. })
        ));
        let e = WatchEvent::Delete {
            key: "k".into(),
            version: 7,
            cursor: c,
        };
        assert_eq!((e.cursor(), e.key()), (c, Some("k")));
    }
}
