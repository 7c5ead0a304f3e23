//! ZooKeeper-specific behaviour of the driver (the shared contract is in compat-tests).

use std::time::Duration;

use futures::StreamExt;
use kv_core::{Error, LockOptions, PutOptions, Store, Txn};
use kv_testkit::zookeeper::ZkServer;
use kv_zookeeper::{ZkConfig, ZkStore};

async fn store(ep: &str, ns: &str) -> ZkStore {
    ZkStore::connect(ZkConfig::new([ep]).with_namespace(ns))
        .await
        .unwrap()
}

/// The keys `list(prefix)` returns, in its order.
async fn keys(s: &ZkStore, prefix: &str) -> Vec<String> {
    s.list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect()
}

/// A permanent write over a TTL znode must turn it into a permanent znode: the server's TTL
/// sweep (every second on test servers) would otherwise remove the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_write_over_ttl_znode_survives_the_server_sweep() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let a = store(&ep, "/ttltype").await;
    let b = store(&ep, "/ttltype").await;
    let ttl = PutOptions::with_ttl(Duration::from_secs(1));
    // Same handle (type known from its own create), another handle (type read first), and
    // a znode re-created by another handle behind a cached type (czxid mismatch).
    a.put("same", b"t", ttl.clone()).await.unwrap();
    a.put("same", b"p", PutOptions::default()).await.unwrap();
    a.put("other", b"t", ttl.clone()).await.unwrap();
    b.put("other", b"p", PutOptions::default()).await.unwrap();
    a.put("recreated", b"p0", PutOptions::default())
        .await
        .unwrap();
    b.delete("recreated").await.unwrap();
    b.put("recreated", b"t", ttl.clone()).await.unwrap();
    a.put("recreated", b"p", PutOptions::default())
        .await
        .unwrap();
    // And a lock value (ephemeral znode) overwritten by a put stays after the lock's session.
    let l = b
        .new_lock("lockval", LockOptions::with_value("held"))
        .await
        .unwrap();
    a.put("lockval", b"p", PutOptions::default()).await.unwrap();
    let lost = l.lost_signal();
    tokio::time::timeout(Duration::from_secs(30), lost.wait())
        .await
        .expect("lock not lost on overwrite");
    b.close().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    for k in ["same", "other", "recreated", "lockval"] {
        assert_eq!(
            a.get(k).await.unwrap_or_else(|e| panic!("{k}: {e}")).value,
            b"p",
            "{k}"
        );
    }
    // A TTL key with nobody reading it is removed by the server sweep.
    a.put("gone", b"t", ttl).await.unwrap();
    let raw = a.client().unwrap();
    kv_testkit::wait_until(
        "server sweep of a TTL znode",
        Duration::from_secs(30),
        || async { matches!(raw.check_stat("/ttltype/gone").await, Ok(None)).then_some(()) },
    )
    .await;
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn znode_mapping() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let s = store(&ep, "/map/ns").await;
    // Characters ZooKeeper refuses in paths are escaped; '%' too.
    for k in ["emoji/🦀", "pct/100%", "pct/%41", "bmp/\u{e000}"] {
        let p = s.put(k, k.as_bytes(), PutOptions::default()).await.unwrap();
        assert_eq!(p.key, k);
        assert_eq!(s.get(k).await.unwrap().value, k.as_bytes());
    }
    assert_eq!(keys(&s, "pct").await, vec!["pct/%41", "pct/100%"]);
    // Parents are znodes without value; a deleted key with children keeps them.
    s.put("a/b/c", b"1", PutOptions::default()).await.unwrap();
    assert!(!s.exists("a/b").await.unwrap());
    s.put("a/b", b"2", PutOptions::default()).await.unwrap();
    let v1 = s.get("a/b").await.unwrap().version;
    s.delete("a/b").await.unwrap();
    assert!(!s.exists("a/b").await.unwrap());
    assert!(s.exists("a/b/c").await.unwrap());
    let v2 = s
        .put("a/b", b"3", PutOptions::default())
        .await
        .unwrap()
        .version;
    assert!(v2 > v1);
    s.delete("a/b/c").await.unwrap();
    let v3 = s
        .put("a/b/c", b"4", PutOptions::default())
        .await
        .unwrap()
        .version;
    assert!(v3 > v2);
    // The namespace root and raw layout.
    let raw = s.client().unwrap();
    let (data, _) = raw.get_data("/map/ns/a/b").await.unwrap();
    assert_eq!(data[0], 1, "value header");
    // Reserved names.
    match s.put(".kv-locks/x", b"", PutOptions::default()).await {
        Err(Error::InvalidKey { reason, .. }) => {
            assert!(reason.contains("\".kv-locks\" is reserved"), "{reason}")
        }
        r => panic!("expected InvalidKey, got {r:?}"),
    }
    assert!(matches!(
        s.list(".kv-locks").await,
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        s.txn(Txn::new().put(".kv-locks/y", b"v".to_vec())).await,
        Err(Error::InvalidKey { .. })
    ));
    let root = store(&ep, "").await;
    assert!(matches!(
        root.get("zookeeper/config").await,
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        root.list("zookeeper").await,
        Err(Error::InvalidKey { .. })
    ));
    assert!(keys(&root, "")
        .await
        .iter()
        .all(|k| !k.starts_with("zookeeper")));
    // A lock key's contenders are invisible.
    let l = s
        .new_lock("locks/one", LockOptions::with_value("me"))
        .await
        .unwrap();
    let listed = keys(&s, "").await;
    assert!(listed.contains(&"locks/one".to_string()));
    assert!(
        listed.iter().all(|k| !k.starts_with(".kv-locks")),
        "{listed:?}"
    );
    l.unlock().await.unwrap();
    assert!(!s.exists("locks/one").await.unwrap());
    // Whole-subtree delete keeps the prefix key.
    s.put("t", b"top", PutOptions::default()).await.unwrap();
    for k in ["t/1", "t/2/3/4", "t/2/5"] {
        s.put(k, b"x", PutOptions::default()).await.unwrap();
    }
    s.delete_tree("t").await.unwrap();
    assert!(s.list("t").await.unwrap().is_empty());
    assert_eq!(s.get("t").await.unwrap().value, b"top");
    s.close().await.unwrap();
    root.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_watch_sees_deep_value_changes_and_txn() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let s = store(&server.endpoint(), "/tw").await;
    s.put("p/x/y", b"1", PutOptions::default()).await.unwrap();
    let mut t = s.watch_tree("p").await.unwrap();
    assert_eq!(t.next().await.unwrap().unwrap().len(), 1);
    let p = s.put("p/x/y", b"2", PutOptions::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let snap = tokio::time::timeout_at(deadline, t.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if snap.len() == 1 && snap[0].version == p.version {
            break;
        }
    }
    // Transaction against an absent key, then the same compare fails.
    let txn = || Txn::new().when_absent("p/new").put("p/new", b"n".to_vec());
    s.txn(txn()).await.unwrap();
    assert!(matches!(
        s.txn(txn()).await,
        Err(Error::CompareFailed { index: 0, .. })
    ));
    s.close().await.unwrap();
}
