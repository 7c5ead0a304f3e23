//! The kv contract on a real Consul agent (one agent for the whole file, one prefix per check).

use std::time::{Duration, Instant};

use futures::StreamExt;
use kv_consul::{ConsulConfig, ConsulStore};
use kv_core::{Error, LockOptions, PutOptions, Store, Txn, TxnResult};
use kv_testkit::consul::{Consul, Options};

async fn next<T>(s: &mut (impl futures::Stream<Item = kv_core::Result<T>> + Unpin)) -> T {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), s.next()).await {
            Ok(Some(Ok(v))) => return v,
            Ok(Some(Err(e))) => eprintln!("watch error item: {e}"),
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("no watch item within 30 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract() {
    let Some(consul) = Consul::start(Options::default()).await else {
        return;
    };
    let url = format!("consul://{}/contract", consul.addr());
    let s = ConsulStore::from_url(&url).await.unwrap();
    let caps = s.capabilities();
    assert_eq!(caps.max_txn_ops, 64);
    assert_eq!(caps.max_value_size, kv_consul::MAX_VALUE_SIZE);
    assert_eq!(caps.min_ttl, Duration::from_secs(20));

    // put / get / exists / delete
    let p = s.put("/a/b/", b"v1", PutOptions::default()).await.unwrap();
    assert_eq!(p.key, "a/b");
    assert!(p.version > 0);
    let g = s.get("a/b").await.unwrap();
    assert_eq!(g, p);
    assert!(!s.exists("a").await.unwrap());
    let p2 = s.put("a/b", b"v2", PutOptions::default()).await.unwrap();
    assert!(p2.version > p.version);
    // rewriting the same value is still a new version (Consul skips no-op writes)
    let same = s.put("a/b", b"v2", PutOptions::default()).await.unwrap();
    assert!(same.version > p2.version);
    assert_eq!(s.get("a/b").await.unwrap(), same);
    assert!(matches!(s.get("nope").await, Err(Error::NotFound { .. })));
    assert!(matches!(
        s.delete("nope").await,
        Err(Error::NotFound { .. })
    ));
    s.delete("a/b").await.unwrap();
    assert!(!s.exists("a/b").await.unwrap());
    let p3 = s.put("a/b", b"", PutOptions::default()).await.unwrap();
    assert!(p3.version > p2.version);
    assert_eq!(s.get("a/b").await.unwrap().value, b"");
    // odd characters
    let k = "sp ace/ünï/%41?#&=+";
    s.put(k, b"x", PutOptions::default()).await.unwrap();
    assert_eq!(s.get(k).await.unwrap().key, k);
    assert!(matches!(s.get("a//b").await, Err(Error::InvalidKey { .. })));
    let big = vec![7u8; kv_consul::MAX_VALUE_SIZE + 1];
    assert!(matches!(
        s.put("big", &big, PutOptions::default()).await,
        Err(Error::ValueTooLarge { .. })
    ));
    let long_key = format!("big/{}", "k".repeat(1000));
    s.put(
        &long_key,
        &big[..kv_consul::MAX_VALUE_SIZE],
        PutOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        s.get(&long_key).await.unwrap().value.len(),
        kv_consul::MAX_VALUE_SIZE
    );

    // failover: a dead first agent is skipped; namespaces are isolated
    let dead = kv_testkit::free_port();
    let fo = ConsulStore::from_url(&format!(
        "consul://127.0.0.1:{dead},{}/contract",
        consul.addr()
    ))
    .await
    .unwrap();
    assert_eq!(fo.get("a/b").await.unwrap(), s.get("a/b").await.unwrap());
    let other = ConsulStore::from_url(&format!("consul://{}/contractx", consul.addr()))
        .await
        .unwrap();
    assert!(!other.exists("a/b").await.unwrap());
    assert!(other.list("").await.unwrap().is_empty());
    let all_dead = ConsulStore::from_url(&format!("consul://127.0.0.1:{dead}/x")).await;
    assert!(
        matches!(all_dead, Err(Error::Unreachable { .. })),
        "{:?}",
        all_dead.err()
    );

    // list / delete_tree: subtree semantics
    for k in ["t/x", "t/y/z", "t", "tx", "tx/1"] {
        s.put(k, k.as_bytes(), PutOptions::default()).await.unwrap();
    }
    let l: Vec<String> = s
        .list("t")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(l, vec!["t/x", "t/y/z"]);
    assert!(s.list("empty").await.unwrap().is_empty());
    s.delete_tree("t").await.unwrap();
    assert!(s.exists("t").await.unwrap());
    assert!(s.exists("tx/1").await.unwrap());
    assert!(s.list("t").await.unwrap().is_empty());
    s.delete_tree("nothing/here").await.unwrap();

    // atomic ops
    let c = s
        .atomic_put("c", b"1", None, PutOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        s.atomic_put("c", b"1", None, PutOptions::default()).await,
        Err(Error::KeyExists { .. })
    ));
    let c2 = s
        .atomic_put("c", b"2", Some(&c), PutOptions::default())
        .await
        .unwrap();
    match s
        .atomic_put("c", b"3", Some(&c), PutOptions::default())
        .await
    {
        Err(Error::KeyModified {
            expected, actual, ..
        }) => {
            assert_eq!(expected, c.version);
            assert_eq!(actual, c2.version);
        }
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        s.atomic_delete("c", &c).await,
        Err(Error::KeyModified { .. })
    ));
    s.atomic_delete("c", &c2).await.unwrap();
    assert!(matches!(
        s.atomic_delete("c", &c2).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.atomic_put("c", b"4", Some(&c2), PutOptions::default())
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.atomic_put("other", b"4", Some(&c2), PutOptions::default())
            .await,
        Err(Error::InvalidArgument { .. })
    ));

    // txn
    let a = s.put("tx/a", b"a", PutOptions::default()).await.unwrap();
    let r = s
        .txn(
            Txn::new()
                .when_version("tx/a", a.version)
                .when_absent("tx/none")
                .when_present("tx/1")
                .put("tx/a", b"a2".to_vec())
                .delete("tx/1")
                .delete("tx/missing")
                .get("tx")
                .get("tx/none"),
        )
        .await
        .unwrap();
    assert!(matches!(&r[0], TxnResult::Put(p) if p.version > a.version && p.value == b"a2"));
    assert_eq!(r[1], TxnResult::Delete);
    assert!(matches!(&r[3], TxnResult::Get(Some(p)) if p.key == "tx" && p.value == b"tx"));
    assert_eq!(r[4], TxnResult::Get(None));
    assert!(!s.exists("tx/1").await.unwrap());
    match s
        .txn(
            Txn::new()
                .when_absent("tx/none")
                .when_version("tx/a", a.version)
                .put("tx/b", b"b".to_vec()),
        )
        .await
    {
        Err(Error::CompareFailed { index: 1, .. }) => {}
        r => panic!("{r:?}"),
    }
    assert!(!s.exists("tx/b").await.unwrap());
    let too_big = (0..65).fold(Txn::new(), |t, i| t.put(format!("m/{i}"), b"x".to_vec()));
    assert!(matches!(
        s.txn(too_big).await,
        Err(Error::InvalidArgument { .. })
    ));
    let max = (0..64).fold(Txn::new(), |t, i| t.put(format!("m/{i}"), b"x".to_vec()));
    assert_eq!(s.txn(max).await.unwrap().len(), 64);

    // TTL limits
    assert!(matches!(
        s.put("ttl", b"x", PutOptions::with_ttl(Duration::from_secs(5)))
            .await,
        Err(Error::Unsupported { .. })
    ));

    // watch on a missing key, then changes
    let mut w = s.watch("w/k").await.unwrap();
    assert_eq!(next(&mut w).await, None);
    let v1 = s.put("w/k", b"1", PutOptions::default()).await.unwrap();
    assert_eq!(next(&mut w).await, Some(v1));
    s.put("w/other", b"1", PutOptions::default()).await.unwrap();
    let v2 = s.put("w/k", b"2", PutOptions::default()).await.unwrap();
    assert_eq!(next(&mut w).await, Some(v2));
    s.delete("w/k").await.unwrap();
    assert_eq!(next(&mut w).await, None);

    let mut wt = s.watch_tree("wt").await.unwrap();
    assert!(next(&mut wt).await.is_empty());
    let x = s.put("wt/x", b"1", PutOptions::default()).await.unwrap();
    assert_eq!(next(&mut wt).await, vec![x.clone()]);
    s.put("wtx", b"outside", PutOptions::default())
        .await
        .unwrap();
    let x2 = s.put("wt/x", b"2", PutOptions::default()).await.unwrap();
    assert_eq!(next(&mut wt).await, vec![x2]);
    s.delete("wt/x").await.unwrap();
    assert!(next(&mut wt).await.is_empty());

    // locks
    let l = s
        .new_lock("lk", LockOptions::with_value(b"me".to_vec()))
        .await
        .unwrap();
    assert_eq!(s.get("lk").await.unwrap().value, b"me");
    let s2 = ConsulStore::connect(ConsulConfig::new([consul.addr()]).with_namespace("contract"))
        .await
        .unwrap();
    let waiter = tokio::spawn(async move {
        let l2 = s2
            .new_lock("lk", LockOptions::with_value(b"you".to_vec()))
            .await
            .unwrap();
        let v = s2.get("lk").await.unwrap().value;
        l2.unlock().await.unwrap();
        v
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    let t0 = Instant::now();
    l.unlock().await.unwrap();
    assert_eq!(waiter.await.unwrap(), b"you");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(!s.exists("lk").await.unwrap());
    assert!(matches!(
        s.new_lock("lk", LockOptions::default().ttl(Duration::from_secs(2)))
            .await,
        Err(Error::Unsupported { .. })
    ));
    // a lock whose key is deleted is lost
    let l = s.new_lock("lk2", LockOptions::default()).await.unwrap();
    let sig = l.lost_signal();
    s.delete("lk2").await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(20), sig.wait())
        .await
        .unwrap();
    assert!(matches!(e, Error::LockLost { .. }));
    assert!(matches!(l.unlock().await, Err(Error::LockLost { .. })));
    // cancelled wait leaves nothing behind
    let held = s.new_lock("lk3", LockOptions::default()).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_millis(500),
        s.new_lock("lk3", LockOptions::default()),
    )
    .await;
    assert!(r.is_err());
    held.unlock().await.unwrap();
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        s.new_lock("lk3", LockOptions::default()),
    )
    .await
    .unwrap()
    .unwrap();
    // close: watches end with Closed, locks are released, calls say Closed
    let mut w = s.watch("w/k").await.unwrap();
    assert_eq!(next(&mut w).await, None);
    let sig = again.lost_signal();
    s.close().await.unwrap();
    s.close().await.unwrap();
    assert!(matches!(s.get("x").await, Err(Error::Closed)));
    let mut saw_closed = false;
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        if matches!(item, Err(Error::Closed)) {
            saw_closed = true;
        }
    }
    assert!(saw_closed);
    assert!(sig.is_lost());
    let s3 = ConsulStore::from_url(&url).await.unwrap();
    assert!(!s3.exists("lk3").await.unwrap());
}
