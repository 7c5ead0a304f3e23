//! The `Store` trait every driver implements.

use async_trait::async_trait;

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::events::{Cursor, EventStream};
use crate::lock::Lock;
use crate::pair::{KvPair, LockOptions, PutOptions};
use crate::txn::{Txn, TxnResult};
use crate::watch::{TreeWatchStream, WatchStream};

/// One async API over every backend. The semantics every driver must follow are written in
/// the [crate docs](crate); the conformance suite (`compat-tests`) checks them.
///
/// Keys and prefixes are normalized by [`normalize_key`](crate::normalize_key) /
/// [`normalize_prefix`](crate::normalize_prefix); an invalid one is [`Error::InvalidKey`].
#[async_trait]
pub trait Store: Send + Sync {
    /// Short backend name (`"sled"`, `"etcd"`, ...).
    fn backend(&self) -> &'static str;

    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Writes `value` at `key` (creating or replacing it) and returns the stored pair.
    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> Result<KvPair>;

    /// Reads `key`; a missing key is [`Error::NotFound`].
    async fn get(&self, key: &str) -> Result<KvPair>;

    /// Deletes `key`; a missing key is [`Error::NotFound`].
    async fn delete(&self, key: &str) -> Result<()>;

    /// True if `key` exists.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// Watches one key: the first item is its current state, then one per change.
    async fn watch(&self, key: &str) -> Result<WatchStream>;

    /// Watches the subtree of `prefix`: snapshots of the whole subtree, in key order.
    async fn watch_tree(&self, prefix: &str) -> Result<TreeWatchStream>;

    /// The typed, resumable change stream of the subtree of `prefix` (every key below it):
    /// [`WatchEvent::Put`](crate::WatchEvent::Put) and
    /// [`WatchEvent::Delete`](crate::WatchEvent::Delete) items (an expiry is a delete), each
    /// with a [`Cursor`] to persist. Without `from`, the first item is a
    /// [`WatchEvent::Resync`](crate::WatchEvent::Resync) of the current subtree; with `from`
    /// (a cursor of an earlier stream of this store, also of another process), the changes
    /// after it — or a `Resync` first where the backend cannot replay them. A `Resync` also
    /// replaces events whenever the backend cannot prove there was no gap; nothing is ever
    /// skipped silently. The default implementation is [`Error::Unsupported`].
    async fn watch_events(&self, prefix: &str, from: Option<Cursor>) -> Result<EventStream> {
        let _ = (prefix, from);
        Err(Error::unsupported("watch_events", self.backend()))
    }

    /// Waits until the lock at `key` is free, takes it and stores `options.value` there.
    /// Dropping the returned future abandons the attempt and cleans up.
    async fn new_lock(&self, key: &str, options: LockOptions) -> Result<Lock>;

    /// Every pair in the subtree of `prefix`, in key order (`prefix` itself excluded).
    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>>;

    /// Deletes every key in the subtree of `prefix` (`prefix` itself is kept).
    async fn delete_tree(&self, prefix: &str) -> Result<()>;

    /// Compare-and-swap write: `previous = None` creates only if absent
    /// ([`KeyExists`](crate::Error::KeyExists) otherwise); `Some(p)` writes only if the stored
    /// version is `p.version` ([`KeyModified`](crate::Error::KeyModified), or
    /// [`NotFound`](crate::Error::NotFound) if the key is gone). Returns the new pair.
    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair>;

    /// Compare-and-delete: deletes only if the stored version is `previous.version`
    /// ([`KeyModified`](crate::Error::KeyModified), or [`NotFound`](crate::Error::NotFound)).
    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()>;

    /// Applies a transaction all-or-nothing; results follow the order of `txn.ops`.
    async fn txn(&self, txn: Txn) -> Result<Vec<TxnResult>>;

    /// Stops background work (watches end, held locks are released) and closes connections.
    /// Later calls return [`Error::Closed`].
    async fn close(&self) -> Result<()>;
}
