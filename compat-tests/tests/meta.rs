//! Tests of the suite itself: scenarios must fail against a store with a known contract
//! violation, and the unsupported checks must tell `Unsupported` from anything else.
//! The store under the bugs is sled (only its basic calls are used here).

use std::sync::Arc;

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
}

struct Buggy {
    inner: Arc<dyn Store>,
    bug: Bug,
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
        if self.bug == Bug::HonestUnsupported && options.ttl.is_some() {
            return Err(Error::unsupported("TTL", "buggy"));
        }
        let options = if self.bug == Bug::SilentUnsupported {
            PutOptions::default()
        } else {
            options
        };
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
            _ => self.inner.watch(key).await,
        }
    }
    async fn watch_tree(&self, prefix: &str) -> Result<TreeWatchStream> {
        match self.bug {
            Bug::HonestUnsupported => Err(Error::unsupported("watch_tree", "buggy")),
            Bug::SilentUnsupported => Ok(Box::pin(futures::stream::empty())),
            _ => self.inner.watch_tree(prefix).await,
        }
    }
    async fn new_lock(&self, key: &str, options: LockOptions) -> Result<Lock> {
        if self.bug == Bug::HonestUnsupported {
            return Err(Error::unsupported("lock", "buggy"));
        }
        self.inner.new_lock(key, options).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        let mut v = self.inner.list(prefix).await?;
        if self.bug == Bug::ListIncludesPrefix {
            if let Ok(p) = self.inner.get(prefix).await {
                v.insert(0, p);
            }
        }
        Ok(v)
    }
    async fn delete_tree(&self, prefix: &str) -> Result<()> {
        self.inner.delete_tree(prefix).await
    }
    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair> {
        if self.bug == Bug::HonestUnsupported && options.ttl.is_some() {
            return Err(Error::unsupported("TTL", "buggy"));
        }
        let options = if self.bug == Bug::SilentUnsupported {
            PutOptions::default()
        } else {
            options
        };
        self.inner.atomic_put(key, value, previous, options).await
    }
    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        match self.inner.atomic_delete(key, previous).await {
            Err(Error::KeyModified { key, .. }) if self.bug == Bug::StaleDeleteNotFound => {
                Err(Error::NotFound { key })
            }
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
    let store = Buggy { inner, bug };
    let url = fx.url.clone();
    let opener: Opener = Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let inner = kv::open(&url).await?;
            Ok(Arc::new(Buggy { inner, bug }) as Arc<dyn Store>)
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
    let store = Buggy { inner, bug };
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
