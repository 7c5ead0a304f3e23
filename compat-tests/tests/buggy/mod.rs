//! The deliberately broken stores of the suite's self-test (`tests/meta.rs`): sled with one
//! known contract violation each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use kv_core::{
    async_trait, Capabilities, Compare, CompareFailure, Cursor, Error, EventStream, KvPair, Lock,
    LockOptions, PutOptions, Result, Store, TreeWatchStream, Txn, TxnResult, WatchEvent,
    WatchStream,
};

/// A known contract violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    None,
    /// put always returns version 1.
    ConstantVersion,
    /// list also returns the prefix key itself.
    ListIncludesPrefix,
    /// delete of a missing key is Ok.
    DeleteMissingOk,
    /// atomic_delete with a stale pair reports NotFound (libkv's etcd v3 bug).
    StaleDeleteNotFound,
    /// Claims no TTL/watch/lock/txn support but accepts the calls.
    SilentUnsupported,
    /// Claims no TTL/watch/lock/txn support and rejects the calls correctly.
    HonestUnsupported,
    /// Keys are not normalized in returned pairs.
    RawKeys,
    /// atomic_put with a previous pair ignores it (a plain put).
    CasIgnoresPrevious,
    /// Create-only atomic_put overwrites an existing key.
    CreateOnlyOverwrites,
    /// list returns the keys in reverse order.
    ListUnsorted,
    /// delete_tree also removes the prefix key itself.
    DeleteTreeIncludesPrefix,
    /// The first watch item is `None` even when the key exists.
    WatchFirstNone,
    /// Tree snapshots are in reverse key order.
    TreeUnsorted,
    /// The lock value is not stored (the holder's value is replaced).
    LockValueIgnored,
    /// close does nothing: calls keep working afterwards.
    CloseNoop,
    /// A write without TTL keeps the TTL of an earlier write of the key.
    TtlKeptOnRewrite,
    /// KeyModified from atomic_delete has `expected` and `actual` swapped.
    KeyModifiedSwapped,
    /// txn drops `Compare::Held` guards (a stale holder's guarded write lands).
    TxnIgnoresHeld,
    /// Every lock's fencing token is 1.
    ConstantToken,
    /// Locks do not exclude: each `new_lock` takes a key of its own under the asked one.
    LockNotExclusive,
    /// A failed guard is reported as an ordinary CompareFailed, not FencingFailed.
    FencingAsCompareFailed,
    /// watch_events drops every Delete event.
    EventsDropDeletes,
    /// watch_events ignores a resume cursor: it follows from now, without a Resync.
    EventsResumeFromNow,
}

pub struct Buggy {
    inner: Arc<dyn Store>,
    bug: Bug,
    /// The last TTL written per key (for [`Bug::TtlKeptOnRewrite`]).
    ttls: Mutex<HashMap<String, Duration>>,
}

impl Buggy {
    pub fn new(inner: Arc<dyn Store>, bug: Bug) -> Self {
        Buggy {
            inner,
            bug,
            ttls: Mutex::new(HashMap::new()),
        }
    }

    /// The options a write really uses (or the honest Unsupported for a TTL): a TTL is
    /// dropped silently with [`Bug::SilentUnsupported`] and sticks with [`Bug::TtlKeptOnRewrite`].
    fn write_options(&self, key: &str, mut options: PutOptions) -> Result<PutOptions> {
        if self.bug == Bug::HonestUnsupported && options.ttl.is_some() {
            return Err(Error::unsupported("TTL", "buggy"));
        }
        if self.bug == Bug::SilentUnsupported {
            return Ok(PutOptions::default());
        }
        if self.bug == Bug::TtlKeptOnRewrite {
            let mut ttls = self.ttls.lock().unwrap();
            match options.ttl {
                Some(t) => {
                    ttls.insert(key.to_string(), t);
                }
                None => options.ttl = ttls.get(key).copied(),
            }
        }
        Ok(options)
    }
}

fn lacks(bug: Bug) -> bool {
    matches!(bug, Bug::SilentUnsupported | Bug::HonestUnsupported)
}

/// A real lock behind a lock handle with a wrong token ([`Bug::ConstantToken`]).
struct Wrapped(Lock);

#[async_trait]
impl kv_core::LockRelease for Wrapped {
    async fn release(self: Box<Self>) -> Result<()> {
        match self.0.unlock().await {
            Ok(()) | Err(Error::LockLost { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Store for Buggy {
    fn backend(&self) -> &'static str {
        "buggy"
    }
    fn capabilities(&self) -> Capabilities {
        let mut c = self.inner.capabilities();
        if lacks(self.bug) {
            c.ttl = false;
            c.watch = false;
            c.watch_tree = false;
            c.lock = false;
            c.txn = false;
        }
        c
    }
    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> Result<KvPair> {
        let options = self.write_options(key, options)?;
        let mut p = self.inner.put(key, value, options).await?;
        match self.bug {
            Bug::ConstantVersion => p.version = 1,
            Bug::RawKeys => p.key = key.to_string(),
            _ => {}
        }
        Ok(p)
    }
    async fn get(&self, key: &str) -> Result<KvPair> {
        let mut p = self.inner.get(key).await?;
        if self.bug == Bug::RawKeys {
            p.key = key.to_string();
        }
        Ok(p)
    }
    async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(key).await {
            Err(Error::NotFound { .. }) if self.bug == Bug::DeleteMissingOk => Ok(()),
            r => r,
        }
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key).await
    }
    async fn watch(&self, key: &str) -> Result<WatchStream> {
        match self.bug {
            Bug::HonestUnsupported => Err(Error::unsupported("watch", "buggy")),
            Bug::SilentUnsupported => Ok(Box::pin(futures::stream::empty())),
            Bug::WatchFirstNone => {
                let mut first = true;
                Ok(Box::pin(self.inner.watch(key).await?.map(move |item| {
                    if std::mem::take(&mut first) {
                        Ok(None)
                    } else {
                        item
                    }
                })))
            }
            _ => self.inner.watch(key).await,
        }
    }
    async fn watch_events(&self, prefix: &str, from: Option<Cursor>) -> Result<EventStream> {
        match self.bug {
            Bug::HonestUnsupported => Err(Error::unsupported("watch_events", "buggy")),
            Bug::SilentUnsupported => Ok(Box::pin(futures::stream::empty())),
            Bug::EventsDropDeletes => Ok(Box::pin(
                self.inner
                    .watch_events(prefix, from)
                    .await?
                    .filter(|i| std::future::ready(!matches!(i, Ok(WatchEvent::Delete { .. })))),
            )),
            Bug::EventsResumeFromNow if from.is_some() => Ok(Box::pin(
                self.inner.watch_events(prefix, None).await?.skip(1),
            )),
            _ => self.inner.watch_events(prefix, from).await,
        }
    }

    async fn watch_tree(&self, prefix: &str) -> Result<TreeWatchStream> {
        match self.bug {
            Bug::HonestUnsupported => Err(Error::unsupported("watch_tree", "buggy")),
            Bug::SilentUnsupported => Ok(Box::pin(futures::stream::empty())),
            Bug::TreeUnsorted => Ok(Box::pin(self.inner.watch_tree(prefix).await?.map(|snap| {
                snap.map(|mut s| {
                    s.reverse();
                    s
                })
            }))),
            _ => self.inner.watch_tree(prefix).await,
        }
    }
    async fn new_lock(&self, key: &str, options: LockOptions) -> Result<Lock> {
        if self.bug == Bug::HonestUnsupported {
            return Err(Error::unsupported("lock", "buggy"));
        }
        let options = if self.bug == Bug::LockValueIgnored {
            LockOptions {
                value: b"not the holder's value".to_vec(),
                ..options
            }
        } else {
            options
        };
        let lock = if self.bug == Bug::LockNotExclusive {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            let own = format!("{key}/{}", N.fetch_add(1, Ordering::Relaxed));
            self.inner.new_lock(&own, options).await?
        } else {
            self.inner.new_lock(key, options).await?
        };
        if self.bug == Bug::ConstantToken {
            let (key, value, lost) = (
                lock.key().to_string(),
                lock.value().to_vec(),
                lock.lost_signal(),
            );
            return Ok(Lock::new(key, value, 1, lost, Box::new(Wrapped(lock))));
        }
        Ok(lock)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        let mut v = self.inner.list(prefix).await?;
        match self.bug {
            Bug::ListIncludesPrefix => {
                if let Ok(p) = self.inner.get(prefix).await {
                    v.insert(0, p);
                }
            }
            Bug::ListUnsorted => v.reverse(),
            _ => {}
        }
        Ok(v)
    }
    async fn delete_tree(&self, prefix: &str) -> Result<()> {
        self.inner.delete_tree(prefix).await?;
        if self.bug == Bug::DeleteTreeIncludesPrefix {
            match self.inner.delete(prefix).await {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair> {
        let options = self.write_options(key, options)?;
        match (self.bug, previous) {
            (Bug::CasIgnoresPrevious, Some(_)) | (Bug::CreateOnlyOverwrites, None) => {
                self.inner.put(key, value, options).await
            }
            _ => self.inner.atomic_put(key, value, previous, options).await,
        }
    }
    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        match self.inner.atomic_delete(key, previous).await {
            Err(Error::KeyModified { key, .. }) if self.bug == Bug::StaleDeleteNotFound => {
                Err(Error::NotFound { key })
            }
            Err(Error::KeyModified {
                key,
                expected,
                actual,
            }) if self.bug == Bug::KeyModifiedSwapped => Err(Error::KeyModified {
                key,
                expected: actual,
                actual: expected,
            }),
            r => r,
        }
    }
    async fn txn(&self, mut txn: Txn) -> Result<Vec<TxnResult>> {
        if self.bug == Bug::HonestUnsupported {
            return Err(Error::unsupported("txn", "buggy"));
        }
        if self.bug == Bug::TxnIgnoresHeld {
            txn.compares.retain(|c| !matches!(c, Compare::Held { .. }));
        }
        match self.inner.txn(txn).await {
            Err(Error::FencingFailed {
                index, key, token, ..
            }) if self.bug == Bug::FencingAsCompareFailed => Err(Error::CompareFailed {
                index,
                key,
                reason: CompareFailure::VersionMismatch {
                    expected: token,
                    actual: None,
                },
            }),
            r => r,
        }
    }
    async fn close(&self) -> Result<()> {
        if self.bug == Bug::CloseNoop {
            return Ok(());
        }
        self.inner.close().await
    }
}
