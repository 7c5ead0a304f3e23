//! Behaviour tests of the sled driver in one process.

use std::time::{Duration, Instant};

use kv_core::{Error, LockOptions, PutOptions, Store, Txn, TxnResult};
use kv_sled::{SledConfig, SledStore};

mod common;
use common::{dir, next, open, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_calls_follow_the_contract() {
    let d = dir("basic");
    let s = open(d.path()).await;
    let p1 = s.put("/a/b/", b"1", PutOptions::default()).await.unwrap();
    assert_eq!(p1.key, "a/b");
    assert!(p1.version > 0);
    let p2 = s.put("a/b", b"2", PutOptions::default()).await.unwrap();
    assert!(p2.version > p1.version);
    assert_eq!(s.get("a/b").await.unwrap(), p2);
    assert!(!s.exists("a").await.unwrap());
    assert!(matches!(s.get("a").await, Err(Error::NotFound { .. })));
    assert!(matches!(s.get("a//b").await, Err(Error::InvalidKey { .. })));

    s.put("a/c/d", b"3", PutOptions::default()).await.unwrap();
    s.put("ab", b"x", PutOptions::default()).await.unwrap();
    s.put("a", b"self", PutOptions::default()).await.unwrap();
    let keys: Vec<_> = s
        .list("a")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(keys, vec!["a/b", "a/c/d"]);
    assert_eq!(s.list("nothing").await.unwrap(), vec![]);

    // Delete and re-create: versions keep growing.
    s.delete("a/b").await.unwrap();
    assert!(matches!(s.delete("a/b").await, Err(Error::NotFound { .. })));
    let p3 = s.put("a/b", b"3", PutOptions::default()).await.unwrap();
    assert!(p3.version > p2.version);

    // Atomic calls.
    assert!(matches!(
        s.atomic_put("a/b", b"x", None, PutOptions::default()).await,
        Err(Error::KeyExists { .. })
    ));
    match s
        .atomic_put("a/b", b"x", Some(&p2), PutOptions::default())
        .await
    {
        Err(Error::KeyModified {
            expected, actual, ..
        }) => {
            assert_eq!(expected, p2.version);
            assert_eq!(actual, p3.version);
        }
        other => panic!("{other:?}"),
    }
    let other_key = kv_core::KvPair::new("ab", "x", p3.version);
    assert!(matches!(
        s.atomic_put("a/b", b"x", Some(&other_key), PutOptions::default())
            .await,
        Err(Error::InvalidArgument { .. })
    ));
    let p4 = s
        .atomic_put("a/b", b"4", Some(&p3), PutOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        s.atomic_delete("a/b", &p3).await,
        Err(Error::KeyModified { .. })
    ));
    s.atomic_delete("a/b", &p4).await.unwrap();
    assert!(matches!(
        s.atomic_delete("a/b", &p4).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.atomic_put("a/b", b"5", Some(&p4), PutOptions::default())
            .await,
        Err(Error::NotFound { .. })
    ));
    s.atomic_put("a/new", b"n", None, PutOptions::default())
        .await
        .unwrap();

    // Values over 16 MiB are rejected before writing.
    let big = vec![0u8; 16 * 1024 * 1024 + 1];
    assert!(matches!(
        s.put("big", &big, PutOptions::default()).await,
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(!s.exists("big").await.unwrap());

    // delete_tree keeps the prefix key and siblings.
    s.delete_tree("a").await.unwrap();
    assert_eq!(s.list("a").await.unwrap(), vec![]);
    assert_eq!(s.get("a").await.unwrap().value, b"self");
    assert_eq!(s.get("ab").await.unwrap().value, b"x");
    s.delete_tree("a").await.unwrap();

    assert_eq!(s.capabilities().max_value_size, 16 * 1024 * 1024);
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_all_or_nothing() {
    let d = dir("txn");
    let s = open(d.path()).await;
    let a = s.put("t/a", b"1", PutOptions::default()).await.unwrap();
    s.put("t/gone", b"g", PutOptions::default()).await.unwrap();
    let res = s
        .txn(
            Txn::new()
                .when_version("t/a", a.version)
                .when_absent("t/b")
                .put("t/a", b"2".to_vec())
                .put("t/b", b"3".to_vec())
                .delete("t/gone")
                .delete("t/never")
                .get("t/c"),
        )
        .await
        .unwrap();
    assert_eq!(res.len(), 5);
    let TxnResult::Put(na) = &res[0] else {
        panic!("{res:?}")
    };
    assert!(na.version > a.version);
    assert_eq!(s.get("t/a").await.unwrap(), *na);
    assert_eq!(res[2], TxnResult::Delete);
    assert_eq!(res[4], TxnResult::Get(None));
    assert!(!s.exists("t/gone").await.unwrap());

    // A failing compare applies nothing and names the first failing compare.
    let err = s
        .txn(
            Txn::new()
                .when_present("t/a")
                .when_version("t/a", a.version)
                .when_absent("t/b")
                .put("t/x", b"x".to_vec()),
        )
        .await
        .unwrap_err();
    match err {
        Error::CompareFailed { index, key, .. } => {
            assert_eq!(index, 1);
            assert_eq!(key, "t/a");
        }
        e => panic!("{e:?}"),
    }
    assert!(!s.exists("t/x").await.unwrap());
    assert!(matches!(
        s.txn(Txn::new().put("t/x", vec![]).get("t/x")).await,
        Err(Error::InvalidArgument { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_isolate_keys() {
    let d = dir("ns");
    let root = open(d.path()).await;
    let ns = SledStore::connect(SledConfig::new(d.path()).with_namespace("/app/one/"))
        .await
        .unwrap();
    ns.put("k", b"v", PutOptions::default()).await.unwrap();
    root.put("appx", b"outside", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(root.get("app/one/k").await.unwrap().value, b"v");
    let l = ns.list("").await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].key, "k");
    ns.delete_tree("").await.unwrap();
    assert!(!root.exists("app/one/k").await.unwrap());
    assert!(root.exists("appx").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_path_twice_shares_locks_and_watches() {
    let d = dir("twice");
    let a = open(d.path()).await;
    // A relative form of the same directory resolves to the same database.
    let b = std::sync::Arc::new(open(&d.path().join(".")).await);

    let mut w = b.watch("shared/key").await.unwrap();
    assert_eq!(next(&mut w).await.unwrap(), None);
    let p = a
        .put("shared/key", b"from a", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(next(&mut w).await.unwrap(), Some(p));

    let lock_a = a
        .new_lock("shared/lock", LockOptions::with_value("A"))
        .await
        .unwrap();
    assert_eq!(b.get("shared/lock").await.unwrap().value, b"A");
    let b2 = b.clone();
    let waiter = tokio::spawn(async move {
        b2.new_lock("shared/lock", LockOptions::with_value("B"))
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "B took a lock that A holds");
    lock_a.unlock().await.unwrap();
    let lock_b = tokio::time::timeout(DEADLINE, waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.get("shared/lock").await.unwrap().value, b"B");
    lock_b.unlock().await.unwrap();
    assert!(!a.exists("shared/lock").await.unwrap());

    // Closing one handle leaves the other working.
    a.close().await.unwrap();
    assert!(matches!(a.get("shared/key").await, Err(Error::Closed)));
    assert_eq!(b.get("shared/key").await.unwrap().value, b"from a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_lock_wait_leaves_nothing_behind() {
    let d = dir("abandon");
    let s = open(d.path()).await;
    let held = s.new_lock("l", LockOptions::with_value("1")).await.unwrap();
    let attempt = tokio::time::timeout(
        Duration::from_millis(200),
        s.new_lock("l", LockOptions::with_value("2")),
    )
    .await;
    assert!(attempt.is_err(), "a second lock on the same key must wait");
    held.unlock().await.unwrap();
    let again = tokio::time::timeout(DEADLINE, s.new_lock("l", LockOptions::with_value("3")))
        .await
        .expect("the lock is free after the abandoned attempt")
        .unwrap();
    assert_eq!(s.get("l").await.unwrap().value, b"3");
    drop(again);
    kv_testkit::wait_until("the dropped lock's key to be gone", DEADLINE, || async {
        (!s.exists("l").await.unwrap()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_lost_on_overwrite_expiry_and_close() {
    let d = dir("lost");
    let s = open(d.path()).await;

    let l = s.new_lock("l/over", LockOptions::default()).await.unwrap();
    s.put("l/over", b"intruder", PutOptions::default())
        .await
        .unwrap();
    let e = tokio::time::timeout(DEADLINE, l.lost_signal().wait())
        .await
        .unwrap();
    assert!(e.to_string().contains("overwritten"), "{e}");
    assert!(matches!(l.unlock().await, Err(Error::LockLost { .. })));
    assert_eq!(s.get("l/over").await.unwrap().value, b"intruder");

    // A lease (no keep-alive) expires by itself and frees the lock for the next holder.
    let t0 = Instant::now();
    let lease = s
        .new_lock(
            "l/lease",
            LockOptions::default()
                .ttl(Duration::from_millis(300))
                .keep_alive(false),
        )
        .await
        .unwrap();
    let next_holder = tokio::time::timeout(DEADLINE, s.new_lock("l/lease", LockOptions::default()))
        .await
        .unwrap()
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(lease.is_lost());
    // A renewed lock outlives its TTL.
    let renewed = s
        .new_lock(
            "l/renew",
            LockOptions::default().ttl(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    let v = s.get("l/renew").await.unwrap().version;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!renewed.is_lost());
    assert_eq!(s.get("l/renew").await.unwrap().version, v);

    s.close().await.unwrap();
    assert!(renewed.is_lost());
    assert!(next_holder.is_lost());
    let s2 = open(d.path()).await;
    assert!(!s2.exists("l/renew").await.unwrap());
    assert!(!s2.exists("l/lease").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_survive_restart_and_keep_growing() {
    let d = dir("restart");
    let s = open(d.path()).await;
    let mut max = 0;
    for i in 0..20 {
        max = s
            .put(&format!("r/{i}"), b"v", PutOptions::default())
            .await
            .unwrap()
            .version;
    }
    s.delete("r/0").await.unwrap();
    s.close().await.unwrap();
    drop(s);

    let s = open(d.path()).await;
    assert_eq!(s.get("r/19").await.unwrap().version, max);
    assert!(!s.exists("r/0").await.unwrap());
    let p = s.put("r/0", b"again", PutOptions::default()).await.unwrap();
    assert!(
        p.version > max,
        "{} after restart vs {max} before",
        p.version
    );
    let q = s.put("r/19", b"new", PutOptions::default()).await.unwrap();
    assert!(q.version > p.version);
}

#[tokio::test]
async fn bad_urls_and_configs_are_config_errors() {
    for url in ["sled://", "sled:///tmp/x?nope=1", "sled://example.com/x"] {
        assert!(
            matches!(SledStore::from_url(url).await, Err(Error::Config { .. })),
            "{url}"
        );
    }
    assert!(matches!(
        SledStore::connect(SledConfig::new("")).await,
        Err(Error::Config { .. })
    ));
    let d = dir("url");
    let s = SledStore::from_url(&format!(
        "sled://{}?namespace=n&flush=false&timeout=3s",
        d.path().display()
    ))
    .await
    .unwrap();
    s.put("k", b"v", PutOptions::default()).await.unwrap();
    let root = open(d.path()).await;
    assert!(root.exists("n/k").await.unwrap());
}
