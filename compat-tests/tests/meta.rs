//! Tests of the suite itself: scenarios must fail against a store with a known contract
//! violation, and the unsupported checks must tell `Unsupported` from anything else.
//! The store under the bugs is sled (only its basic calls are used here).

use std::sync::Arc;
use std::time::Duration;

use compat_tests::{check_unsupported, scenarios, Cap, Ctx, Opener};
use kv_core::{Capabilities, Error, Result, Store};

mod buggy;
use buggy::{Bug, Buggy};

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
        "fencing::guarded_write",
        "fencing::token_increases",
        "election::failover_on_loss",
        "events::order_and_deletes",
        "events::no_gaps",
        "events::resume_from_cursor",
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
        (
            Bug::TxnIgnoresHeld,
            "fencing::guarded_write",
            "FencingFailed",
        ),
        (
            Bug::FencingAsCompareFailed,
            "fencing::guarded_write",
            "FencingFailed",
        ),
        (
            Bug::ConstantToken,
            "fencing::token_increases",
            "must equal Lock::fencing_token",
        ),
        (
            Bug::EventsDropDeletes,
            "events::order_and_deletes",
            "waiting for the event for",
        ),
        (Bug::EventsDropDeletes, "events::no_gaps", "never rebuilt"),
        (
            Bug::EventsResumeFromNow,
            "events::resume_from_cursor",
            "never rebuilt",
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

/// The lock checker of the fault runs (`kv_testkit::lockcheck`) passes a correct store and
/// fails stores whose locks do not exclude or whose tokens repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_checker_catches_broken_locks() {
    use kv_testkit::lockcheck::{check, run_lock_clients, LockWorkload};
    let fx = fixture();
    for (bug, expect) in [
        (Bug::None, None),
        (Bug::LockNotExclusive, Some("exclusion")),
        (Bug::ConstantToken, Some("granted twice")),
    ] {
        let inner = kv::open(&fx.url).await.expect("open sled");
        let store: Arc<dyn Store> = Arc::new(Buggy::new(inner, bug));
        let w = LockWorkload {
            lock_key: format!("lockcheck-{bug:?}/lock"),
            data_key: format!("lockcheck-{bug:?}/data"),
            duration: Duration::from_secs(2),
            ttl: Duration::from_secs(5),
            op_timeout: Duration::from_secs(10),
            writes: (1, 3),
            gap_ms: (1, 5),
            seed: 7,
            holder: Default::default(),
        };
        let clients = vec![store.clone(); 4];
        let (acqs, tally) = run_lock_clients(clients, &w, std::time::Instant::now()).await;
        let summary = check(&acqs, tally);
        println!("{bug:?}: {summary:?}");
        assert!(
            summary.acquisitions >= 20,
            "{bug:?}: too few acquisitions: {summary:?}"
        );
        match expect {
            None => {
                assert!(summary.violations.is_empty(), "{bug:?}: {summary:?}");
                assert!(
                    summary.accepted >= 20,
                    "too few guarded writes: {summary:?}"
                );
            }
            Some(word) => assert!(
                summary.violations.iter().any(|v| v.contains(word)),
                "{bug:?}: no {word:?} violation found: {:?}",
                summary.violations
            ),
        }
        store.close().await.unwrap();
    }
}
