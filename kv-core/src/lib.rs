//! # kv-core: the contract every kv backend follows
//!
//! This crate holds the [`Store`] trait, the pairs and options it takes, the one [`Error`]
//! type, the [`Capabilities`] description, and the shared rules (key validation, watch
//! queues, lock handles, URL parsing, timeouts) that the drivers call instead of copying.
//! It has no backend dependency. The semantics below are the same on every backend; the
//! `compat-tests` conformance suite runs them against each real server.
//!
//! ## Keys
//! `/`-separated paths, normalized by [`normalize_key`]: leading and trailing `/` are dropped
//! (`"/a/b/"` is `"a/b"`); empty, `.` and `..` segments, control characters, segments with
//! leading or trailing white space and keys over [`key::MAX_KEY_LEN`] bytes are rejected with
//! [`Error::InvalidKey`], which names the key and the rule. Pairs come back with the
//! normalized key. A parent path is not a key: after `put("a/b")`, `exists("a")` is `false`.
//! Each store may have a namespace: keys are relative to it and nothing outside it is visible.
//! A URL carries it in one of two ways, fixed per driver ([`raw::NamespaceIn`]): network
//! drivers take the URL path (`etcd://host/app`, `zk://host/app`, `consul://host/app`);
//! drivers whose path names a database file or an in-process store take the `namespace=`
//! option (`sled:///var/lib/db?namespace=app`, `memory://test?namespace=app`).
//!
//! ## Values and versions
//! Values are bytes, at most [`Capabilities::max_value_size`]; a larger value is rejected
//! with [`Error::ValueTooLarge`] (naming both sizes) before anything is sent.
//! [`KvPair::version`] is never 0 and strictly increases on every write of the key, also across
//! a delete and re-create, so a version is never reused for a key. Versions of different keys
//! are not comparable. Compare-and-swap calls compare it.
//!
//! ## Reads and writes
//! - `put` creates or replaces and returns the new pair. `PutOptions::ttl` expires the key
//!   that long after the write (every write sets the TTL anew; a write without TTL makes the
//!   key permanent). An expired key is absent for every call and a watch reports its deletion.
//!   A TTL below [`Capabilities::min_ttl`] is [`Error::Unsupported`], never rounded silently.
//! - `get` of a missing key is [`Error::NotFound`]; `exists` returns `false`.
//! - `delete` of a missing key is [`Error::NotFound`]; deleting a key does not touch keys below it.
//! - `list(prefix)` returns the whole subtree (every key starting with `prefix/`) in bytewise
//!   key order, `prefix` itself excluded; an empty subtree is `Ok(vec![])`. The empty prefix is
//!   the whole namespace.
//! - `delete_tree(prefix)` deletes that same subtree (`prefix` itself is kept); an empty
//!   subtree is `Ok(())`.
//! - `atomic_put(key, value, None, _)` creates only if absent, else [`Error::KeyExists`];
//!   `atomic_put(key, value, Some(prev), _)` writes only if the stored version is
//!   `prev.version`, else [`Error::KeyModified`] (or [`Error::NotFound`] if the key is gone).
//!   `atomic_delete(key, prev)` follows the same rules. A `prev` for another key is
//!   [`Error::InvalidArgument`].
//! - `txn` checks [`Compare`]s (version equals, absent, present) and applies [`TxnOp`]s (put,
//!   delete, get) all-or-nothing. A failed compare is [`Error::CompareFailed`] naming the first
//!   failing compare; nothing is applied. A transaction may write each key once and may not read
//!   a key it writes; its size is limited by [`Capabilities::max_txn_ops`]. A delete of a
//!   missing key inside a transaction is not an error.
//!
//! ## Read consistency
//! By default every read — `get`, `exists`, `list`, the first item of a `watch`/`watch_tree`,
//! the gets of a `txn` — is **linearizable** on every backend: it reflects every write that was
//! acknowledged (to any client, through any member) before the read was called, and a read
//! never returns an older state than an earlier read. The store-level URL option
//! `consistency=stale` ([`Consistency::Stale`], parsed the same way by every driver; the
//! default is `consistency=linearizable`) opts into cheaper reads that the server the client
//! talks to answers from its own copy: they may miss recent writes of other clients (each
//! driver's crate docs say exactly what can go stale). Writes, compare-and-swap, transactions
//! with compares or writes, and locks are never stale: the server checks their conditions.
//! Any other value of the option is [`Error::Config`] naming the allowed values.
//!
//! ## Watches
//! - `watch(key)` returns a stream whose first item is the key's current state (`Some(pair)`
//!   or `None` when absent, so a missing key can be watched), then one item per change;
//!   a delete or expiry is an explicit `None` item. Consecutive items always differ.
//! - `watch_tree(prefix)` yields snapshots of the subtree (as `list` returns it): first the
//!   current one, then one after each change, including a value change of an existing child.
//! - Where the backend coalesces rapid changes ([`Capabilities::watch_every_change`] is
//!   `false`), intermediate states may be skipped, but the latest state always arrives.
//! - Errors arrive as `Err` items, never as a silent end. After a lost connection the driver
//!   resumes by itself (reporting the outage as an `Err` item if it lasts) and delivers the
//!   current state if it changed meanwhile. A stream ends only after a final `Err` item
//!   (e.g. [`Error::Closed`] when the store is closed).
//! - Dropping the stream stops the watch and frees its resources; a slow reader never
//!   blocks writers (its queue keeps the latest states).
//!
//! - `watch_events(prefix, from)` is the typed, resumable form of `watch_tree`: one
//!   [`WatchEvent::Put`] / [`WatchEvent::Delete`] per change of a key below `prefix` (an expiry
//!   is a `Delete`; where the backend coalesces, intermediate writes of one key may be skipped),
//!   each with a [`Cursor`] (etcd revision, Consul index, ZooKeeper zxid, the embedded stores'
//!   counter). Without `from` the first item is a [`WatchEvent::Resync`] of the subtree; with a
//!   saved cursor the stream resumes after it, also in another process: the missed changes as
//!   events where the backend keeps history (etcd, until compaction), otherwise a `Resync`.
//!   A `Resync` replaces events whenever the backend cannot prove there was no gap (lost
//!   history, a lost session, an index reset, a reader too slow for its queue): a reader
//!   applying the items always ends with the subtree's true state. Cursors never go back
//!   except at a `Resync`.
//!
//! ## Locks
//! - `new_lock(key, options)` waits until no one holds the lock, takes it, and stores
//!   `options.value` at `key` (readable by anyone with `get`/`list`/`watch`). Dropping the
//!   future abandons the attempt and removes what it created. Bound the wait with
//!   `tokio::time::timeout` if needed. A plain value at `key` (written by `put`, held by no
//!   lock) does not block: the lock's value replaces it.
//! - While held, the lock renews itself (unless `keep_alive` is `false`, making it a lease
//!   that ends `ttl` after acquisition). If the holder goes silent (crash, network loss) the
//!   lock frees itself within about `ttl` (backend precision applies).
//! - The lock is lost when its TTL passes without renewal, when its key is deleted or
//!   overwritten by someone else, when the backend session behind it ends, or when the store
//!   is closed. Its [`LostSignal`] then fires, and the driver gives up whatever it still holds.
//! - [`Lock::unlock`] (or dropping the [`Lock`]) releases it: the key and its value are
//!   removed and the next waiter proceeds. Unlocking a lost lock reports [`Error::LockLost`].
//! - Locks are not re-entrant: a second `new_lock` on the same key waits, also from the same handle.
//! - [`Lock::fencing_token`] is the lock key's version written by this acquisition; by the
//!   version rule above it strictly increases with every acquisition of that key, by anyone.
//!   [`Txn::when_held`] guards a transaction with it: the transaction applies only while the
//!   lock key still has exactly that version, and otherwise fails with
//!   [`Error::FencingFailed`] (not `CompareFailed`), applying nothing. A holder paused past
//!   its TTL thus cannot overwrite its successor's work.
//!
//! ## Recipes
//! Built on the trait alone, so they work on every backend:
//! - [`election`]: `Candidate::new(store, key, node, ttl).campaign()` → a [`election::Leadership`]
//!   with a `term` (its fencing token), `lost()` and `resign()`; `Candidate::run()` re-campaigns
//!   in a loop; [`election::observe`] follows the current leader.
//! - [`discovery`]: [`discovery::register`] keeps an instance alive with TTL writes;
//!   [`discovery::instances`] and [`discovery::watch_instances`] read and follow the set.
//!
//! ## Writing a driver
//! Drivers implement [`raw::Driver`] and are wrapped in [`raw::Checked`], the one layer that
//! applies the rules above that do not depend on the backend; see [`raw`].
//!
//! ## Errors, timeouts, capabilities
//! Every call returns [`Error`], a `#[non_exhaustive]` enum of matchable kinds. Every call
//! that talks to a server is bounded by the store's timeout ([`retry::DEFAULT_TIMEOUT`] unless
//! configured; URL option `timeout=`), giving [`Error::Timeout`] instead of a hang; lock waits
//! are the one exception (see above). A backend that cannot do something returns
//! [`Error::Unsupported`] — never `Ok`, never a silently dropped option. After
//! [`Store::close`], calls return [`Error::Closed`].

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod capabilities;
pub mod consistency;
pub mod discovery;
pub mod election;
pub mod error;
pub mod events;
pub mod key;
pub mod lock;
pub mod pair;
pub mod raw;
pub mod retry;
pub mod store;
pub mod txn;
pub mod url;
pub mod watch;

pub use async_trait::async_trait;
pub use capabilities::Capabilities;
pub use consistency::Consistency;
pub use error::{BoxError, CompareFailure, Error, Result};
pub use events::{Cursor, EventStream, WatchEvent};
pub use key::{normalize_key, normalize_prefix};
pub use lock::{Lock, LockRelease, LostSignal};
pub use pair::{KvPair, LockOptions, PutOptions};
pub use store::Store;
pub use txn::{Compare, Txn, TxnOp, TxnResult};
pub use url::ConnectUrl;
pub use watch::{TreeWatchStream, WatchStream};
