//! Tests of the suite itself: scenarios must fail against a store with a known contract
//! violation, and the unsupported checks must tell `Unsupported` from anything else.
//! The store under the bugs is sled (only its basic calls are used here).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use compat_tests::{check_unsupported, scenarios, Cap, Ctx, Opener};
use kv_core::{
    async_trait, Capabilities, Error, KvPair, Lock, LockOptions, PutOptions, Result, Store,
    TreeWatchStream, Txn, TxnResult, WatchStream,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
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
}

struct Buggy {
    inner: Arc<dyn Store>,
    bug: Bug,
    /// The last TTL written per key (for [`Bug::TtlKeptOnRewrite`]).
    ttls: Mutex<HashMap<String, Duration>>,
}

impl Buggy {
    fn new(inner: Arc<dyn Store>, bug: Bug) -> Self {
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
        self.inner.new_lock(key, options).await
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
    async fn txn(&self, txn: Txn) -> Result<Vec<TxnResult>> {
        if self.bug == Bug::HonestUnsupported {
            return Err(Error::unsupported("txn", "buggy"));
        }
        self.inner.txn(txn).await
    }
    async fn close(&self) -> Result<()> {
        if self.bug == Bug::CloseNoop {
            return Ok(());
        }
        self.inner.close().await
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    url: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sled://{}", dir.path().join("db").display());
    Fixture { _dir: dir, url }
}

async fn run(fx: &Fixture, bug: Bug, scenario: &str) -> std::result::Result<(), String> {
    let inner = kv::open(&fx.url).await.expect("open sled");
    let store = Buggy::new(inner, bug);
    let url = fx.url.clone();
    let opener: Opener = Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let inner = kv::open(&url).await?;
            Ok(Arc::new(Buggy::new(inner, bug)) as Arc<dyn Store>)
        })
    });
    let ctx = Ctx::new(scenario, "meta", store.capabilities(), opener);
    let sc = scenarios()
        .into_iter()
        .find(|s| s.name == scenario)
        .unwrap_or_else(|| panic!("no scenario {scenario}"));
    let r = (sc.run)(&store, &ctx).await.map_err(|f| f.message);
    ctx.close_others().await;
    r
}

async fn unsupported(fx: &Fixture, bug: Bug, cap: Cap) -> std::result::Result<(), String> {
    let inner = kv::open(&fx.url).await.expect("open sled");
    let store = Buggy::new(inner, bug);
    let url = fx.url.clone();
    let opener: Opener = Arc::new(move || {
        let url = url.clone();
        Box::pin(async move { kv::open(&url).await })
    });
    let ctx = Ctx::new(
        &format!("unsupported {cap:?}"),
        "meta",
        store.capabilities(),
        opener,
    );
    check_unsupported(&store, &ctx, cap)
        .await
        .map_err(|f| f.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_pass_without_the_bug() {
    let fx = fixture();
    for sc in [
        "basic::versions_increase",
        "list::subtree_in_key_order",
        "basic::missing_key",
        "atomic::atomic_delete",
        "basic::key_normalization",
        "atomic::compare_and_swap",
        "atomic::create_only",
        "list::delete_tree_subtree",
        "watch::key_updates",
        "watch::tree_snapshots",
        "lock::lock_unlock_relock",
        "close::calls_fail_after_close",
        "ttl::rewrite_makes_permanent",
    ] {
        run(&fx, Bug::None, sc)
            .await
            .unwrap_or_else(|m| panic!("{sc} failed on the unmodified store: {m}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_catch_contract_violations() {
    let fx = fixture();
    let cases = [
        (
            Bug::ConstantVersion,
            "basic::versions_increase",
            "strictly increase",
        ),
        (
            Bug::ListIncludesPrefix,
            "list::subtree_in_key_order",
            "keys of list",
        ),
        (
            Bug::DeleteMissingOk,
            "basic::missing_key",
            "delete of a missing key",
        ),
        (
            Bug::StaleDeleteNotFound,
            "atomic::atomic_delete",
            "KeyModified",
        ),
        (Bug::RawKeys, "basic::key_normalization", "key returned by"),
        (
            Bug::CasIgnoresPrevious,
            "atomic::compare_and_swap",
            "KeyModified",
        ),
        (
            Bug::CreateOnlyOverwrites,
            "atomic::create_only",
            "KeyExists",
        ),
        (
            Bug::ListUnsorted,
            "list::subtree_in_key_order",
            "keys of list",
        ),
        (
            Bug::DeleteTreeIncludesPrefix,
            "list::delete_tree_subtree",
            "outside the subtree",
        ),
        (
            Bug::WatchFirstNone,
            "watch::key_updates",
            "first watch item",
        ),
        (Bug::TreeUnsorted, "watch::tree_snapshots", "first snapshot"),
        (
            Bug::LockValueIgnored,
            "lock::lock_unlock_relock",
            "Lock::value",
        ),
        (
            Bug::KeyModifiedSwapped,
            "atomic::atomic_delete",
            "KeyModified (key, expected, actual)",
        ),
        (
            Bug::TtlKeptOnRewrite,
            "ttl::rewrite_makes_permanent",
            "after its first TTL passed",
        ),
        (
            Bug::CloseNoop,
            "close::calls_fail_after_close",
            "after close",
        ),
    ];
    for (bug, sc, needle) in cases {
        match run(&fx, bug, sc).await {
            Ok(()) => panic!("{sc} passed against a store with bug {bug:?}"),
            Err(m) => assert!(
                m.contains(needle),
                "{sc} with {bug:?} failed for another reason: {m}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_checks_tell_unsupported_from_ok() {
    let fx = fixture();
    for cap in [Cap::Ttl, Cap::Watch, Cap::WatchTree, Cap::Lock, Cap::Txn] {
        unsupported(&fx, Bug::HonestUnsupported, cap)
            .await
            .unwrap_or_else(|m| panic!("{cap:?}: an honest Unsupported failed the check: {m}"));
        let r = unsupported(&fx, Bug::SilentUnsupported, cap).await;
        assert!(
            r.is_err(),
            "{cap:?}: a store accepting the call passed the unsupported check"
        );
    }
}

#[test]
fn registry_is_consistent() {
    let all = scenarios();
    let mut names: Vec<_> = all.iter().map(|s| s.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), all.len(), "duplicate scenario names");
    let none = Capabilities::default();
    for s in &all {
        let gated = s.missing(&none).is_some();
        assert_eq!(gated, !s.needs.is_empty(), "{}", s.name);
    }
}

/// The timing helpers fail when they should (a helper that always passes would hide bugs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_helpers_can_fail() {
    use compat_tests::{
        eventually, must_not_complete, throughout, wait_for_item, wait_for_state, Failure,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    let short = Duration::from_millis(200);
    let never = eventually("never", short, || async { Ok(None::<()>) }).await;
    assert!(never.is_err(), "eventually passed without the condition");
    assert!(
        must_not_complete("ready", short, async {}).await.is_err(),
        "must_not_complete passed for a future that completed"
    );
    let calls = AtomicUsize::new(0);
    let flips = throughout(Duration::from_millis(500), || async {
        if calls.fetch_add(1, Ordering::SeqCst) >= 2 {
            Err(Failure::new("changed"))
        } else {
            Ok(())
        }
    })
    .await;
    assert!(
        flips.is_err(),
        "throughout passed although the check failed inside the window"
    );
    let mut ended = futures::stream::empty::<Result<u8>>();
    assert!(wait_for_item(&mut ended, short, "an item").await.is_err());
    let mut errs = futures::stream::iter([Ok(1u8), Err(Error::Closed)]);
    assert!(
        wait_for_state(&mut errs, short, "2", |v| *v == 2)
            .await
            .is_err(),
        "wait_for_state passed on an Err item"
    );
}
