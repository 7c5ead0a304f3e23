//! Driver checks against a real etcd started by the test (the full contract is checked by
//! the conformance suite in compat-tests): etcd-specific mapping details.

use std::time::Duration;

use futures::StreamExt;
use kv_core::{Error, KvPair, LockOptions, PutOptions, Store, Txn, TxnResult};
use kv_etcd::{EtcdConfig, EtcdStore};
use kv_testkit::etcd::EtcdServer;
use kv_testkit::wait_until;

const DEADLINE: Duration = Duration::from_secs(20);

/// The keys `list(prefix)` returns, in order.
async fn keys(s: &EtcdStore, prefix: &str) -> Vec<String> {
    s.list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect()
}

async fn store(server: &EtcdServer, ns: &str) -> EtcdStore {
    EtcdStore::from_url(&format!("etcd://{}/{ns}", server.endpoint()))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_details() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let s = store(&server, "basics").await;

    // Versions are mod revisions: never reused across delete and re-create.
    let a = s.put("a/b", b"1", PutOptions::default()).await.unwrap();
    let a2 = s.put("/a/b/", b"2", PutOptions::default()).await.unwrap();
    assert!(a2.version > a.version);
    s.delete("a/b").await.unwrap();
    assert!(s.get("a/b").await.unwrap_err().is_not_found());
    let a3 = s.put("a/b", b"3", PutOptions::default()).await.unwrap();
    assert!(a3.version > a2.version);

    // Prefix ranges do not leak to siblings; results sorted; the prefix itself excluded.
    s.put("foo", b"x", PutOptions::default()).await.unwrap();
    s.put("foobar", b"x", PutOptions::default()).await.unwrap();
    s.put("foo/z", b"x", PutOptions::default()).await.unwrap();
    s.put("foo/a", b"x", PutOptions::default()).await.unwrap();
    assert_eq!(keys(&s, "foo").await, vec!["foo/a", "foo/z"]);

    // Stale version on atomic_delete is KeyModified, a gone key NotFound.
    match s.atomic_delete("a/b", &a2).await {
        Err(Error::KeyModified {
            expected, actual, ..
        }) => {
            assert_eq!(expected, a2.version);
            assert_eq!(actual, a3.version);
        }
        other => panic!("{other:?}"),
    }
    s.atomic_delete("a/b", &a3).await.unwrap();
    assert!(s
        .atomic_delete("a/b", &a3)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(matches!(
        s.atomic_put("a/b", b"x", Some(&a3), PutOptions::default())
            .await,
        Err(Error::NotFound { .. })
    ));
    let c = s
        .atomic_put("a/b", b"c", None, PutOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        s.atomic_put("a/b", b"d", None, PutOptions::default()).await,
        Err(Error::KeyExists { .. })
    ));
    let wrong = KvPair::new("other", "x", c.version);
    assert!(matches!(
        s.atomic_put("a/b", b"d", Some(&wrong), PutOptions::default())
            .await,
        Err(Error::InvalidArgument { .. })
    ));

    // Transactions: first failing compare reported, nothing applied.
    let t = Txn::new()
        .when_version("a/b", c.version)
        .when_absent("foo")
        .put("t/1", b"1".to_vec());
    match s.txn(t).await {
        Err(Error::CompareFailed { index: 1, key, .. }) => assert_eq!(key, "foo"),
        other => panic!("{other:?}"),
    }
    assert!(!s.exists("t/1").await.unwrap());
    let t = Txn::new()
        .when_version("a/b", c.version)
        .when_present("foo")
        .put("t/1", b"1".to_vec())
        .delete("foobar")
        .delete("missing")
        .get("foo");
    let r = s.txn(t).await.unwrap();
    let TxnResult::Put(p) = &r[0] else {
        panic!("{r:?}")
    };
    assert_eq!(s.get("t/1").await.unwrap().version, p.version);
    assert_eq!(r[1], TxnResult::Delete);
    assert!(matches!(&r[3], TxnResult::Get(Some(p)) if p.key == "foo"));

    // TTL: below 2 s unsupported; 2 s expires.
    assert!(matches!(
        s.put("ttl", b"x", PutOptions::with_ttl(Duration::from_secs(1)))
            .await,
        Err(Error::Unsupported { .. })
    ));
    s.put("ttl", b"x", PutOptions::with_ttl(Duration::from_secs(2)))
        .await
        .unwrap();
    wait_until("ttl key expiry", DEADLINE, || async {
        (!s.exists("ttl").await.unwrap()).then_some(())
    })
    .await;

    // Size limits are checked before sending.
    let big = vec![0u8; kv_etcd::MAX_VALUE_SIZE + 1];
    assert!(matches!(
        s.put("big", &big, PutOptions::default()).await,
        Err(Error::ValueTooLarge { .. })
    ));
    let ok = vec![7u8; kv_etcd::MAX_VALUE_SIZE];
    assert_eq!(
        s.put("big", &ok, PutOptions::default())
            .await
            .unwrap()
            .value
            .len(),
        ok.len()
    );
    assert_eq!(s.get("big").await.unwrap().value, ok);
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_and_lock_bookkeeping_stay_private() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let root = EtcdStore::connect(EtcdConfig::new([server.endpoint()]))
        .await
        .unwrap();
    let ns = store(&server, "ns").await;
    ns.put("k", b"v", PutOptions::default()).await.unwrap();
    assert_eq!(root.get("ns/k").await.unwrap().value, b"v");
    assert!(ns.get("ns/k").await.unwrap_err().is_not_found());

    let lock_root = root
        .new_lock("l", LockOptions::with_value("me"))
        .await
        .unwrap();
    let lock_ns = ns
        .new_lock("l", LockOptions::with_value("me"))
        .await
        .unwrap();
    assert_eq!(keys(&root, "").await, vec!["l", "ns/k", "ns/l"]);
    assert_eq!(keys(&ns, "").await, vec!["k", "l"]);
    lock_root.unlock().await.unwrap();
    lock_ns.unlock().await.unwrap();
    assert_eq!(keys(&root, "").await, vec!["ns/k"]);
    // Nothing of the lock recipe is left behind either.
    let raw = server.ctl(&["get", "", "--prefix", "--keys-only"]);
    let raw: Vec<&str> = raw.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(raw, vec!["ns/k"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_every_change_and_tree_batches_per_revision() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let s = store(&server, "w").await;
    let mut w = s.watch("k").await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap(), None);
    let mut t = s.watch_tree("d").await.unwrap();
    assert_eq!(t.next().await.unwrap().unwrap(), vec![]);
    let mut versions = Vec::new();
    for i in 0..5 {
        versions.push(
            s.put("k", format!("{i}").as_bytes(), PutOptions::default())
                .await
                .unwrap()
                .version,
        );
    }
    s.delete("k").await.unwrap();
    for v in &versions {
        let got = tokio::time::timeout(DEADLINE, w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.unwrap().version, *v);
    }
    assert_eq!(
        tokio::time::timeout(DEADLINE, w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        None
    );

    // One transaction writing two keys = one snapshot.
    s.txn(
        Txn::new()
            .put("d/a", b"1".to_vec())
            .put("d/b", b"2".to_vec()),
    )
    .await
    .unwrap();
    let snap = tokio::time::timeout(DEADLINE, t.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        snap.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
        vec!["d/a", "d/b"]
    );
    s.put("d/a", b"3", PutOptions::default()).await.unwrap();
    let snap = tokio::time::timeout(DEADLINE, t.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(snap[0].value, b"3");
    s.put("dx", b"3", PutOptions::default()).await.unwrap();
    s.delete_tree("d").await.unwrap();
    let snap = tokio::time::timeout(DEADLINE, t.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(snap, vec![]);

    // The key watch still follows the key after the delete (compaction: see below).
    let rev = s
        .put("k", b"before", PutOptions::default())
        .await
        .unwrap()
        .version;
    let got = tokio::time::timeout(DEADLINE, w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.unwrap().version, rev);

    // Close ends streams with a final Closed item.
    s.close().await.unwrap();
    let mut saw_closed = false;
    while let Some(item) = tokio::time::timeout(DEADLINE, w.next()).await.unwrap() {
        if matches!(item, Err(Error::Closed)) {
            saw_closed = true;
        }
    }
    assert!(saw_closed);
    assert!(matches!(s.get("k").await, Err(Error::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_compaction() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let s = store(&server, "c").await;
    let mut w = s.watch("k").await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap(), None);
    // Compact past many revisions while the watch is connected; it keeps delivering.
    let mut last = 0;
    for i in 0..20 {
        last = s
            .put("k", format!("{i}").as_bytes(), PutOptions::default())
            .await
            .unwrap()
            .version;
    }
    server.ctl(&["compact", &last.to_string()]);
    let final_v = s
        .put("k", b"final", PutOptions::default())
        .await
        .unwrap()
        .version;
    let start = std::time::Instant::now();
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "final state not delivered after compaction"
        );
        match tokio::time::timeout(DEADLINE, w.next())
            .await
            .expect("watch item")
        {
            Some(Ok(Some(p))) if p.version == final_v => break,
            Some(_) => {}
            None => panic!("watch ended silently"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_lease_mode_overwrite_and_abandoned_attempts() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let s = store(&server, "locks").await;
    let other = store(&server, "locks").await;

    // keep_alive = false: the lock ends about ttl after acquisition, and a waiter gets it.
    let started = std::time::Instant::now();
    let lease_lock = s
        .new_lock(
            "lease",
            LockOptions::with_value("a")
                .ttl(Duration::from_secs(2))
                .keep_alive(false),
        )
        .await
        .unwrap();
    let lost = lease_lock.lost_signal();
    let waiter = tokio::time::timeout(
        DEADLINE,
        other.new_lock("lease", LockOptions::with_value("b")),
    )
    .await
    .expect("waiter acquires after the lease ends")
    .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    assert!(lost.is_lost());
    assert_eq!(s.get("lease").await.unwrap().value, b"b");
    waiter.unlock().await.unwrap();
    assert!(matches!(
        lease_lock.unlock().await,
        Err(Error::LockLost { .. })
    ));

    // Overwritten by someone else: lost, and the other writer's value stays.
    let l = s
        .new_lock("ow", LockOptions::with_value("mine"))
        .await
        .unwrap();
    other
        .put("ow", b"theirs", PutOptions::default())
        .await
        .unwrap();
    let e = tokio::time::timeout(DEADLINE, l.lost_signal().wait())
        .await
        .unwrap();
    assert!(e.to_string().contains("overwritten"), "{e}");
    assert!(matches!(l.unlock().await, Err(Error::LockLost { .. })));
    assert_eq!(s.get("ow").await.unwrap().value, b"theirs");

    // Abandoned attempts (dropped futures) leave neither owner keys nor leases behind.
    let held = s.new_lock("ab", LockOptions::default()).await.unwrap();
    for _ in 0..3 {
        let r = tokio::time::timeout(
            Duration::from_millis(300),
            other.new_lock("ab", LockOptions::default()),
        )
        .await;
        assert!(r.is_err(), "acquired a held lock");
    }
    held.unlock().await.unwrap();
    s.delete("ow").await.unwrap();
    wait_until("no leases left", DEADLINE, || async {
        let out = server.ctl(&["lease", "list"]);
        out.starts_with("found 0 leases").then_some(())
    })
    .await;
    let raw = server.ctl(&["get", "", "--from-key", "--keys-only"]);
    assert!(raw.trim().is_empty(), "left behind: {raw:?}");
}
