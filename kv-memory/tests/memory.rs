//! The memory driver's own tests: URLs, sharing by name, TTL on tokio's clock, watches,
//! transactions, locks (fairness, loss, abandonment, close).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kv_core::{Error, LockOptions, PutOptions, Store, Txn};
use kv_memory::{MemoryConfig, MemoryStore, DRIVER};

const WAIT: Duration = Duration::from_secs(10);

async fn open(url: &str) -> MemoryStore {
    MemoryStore::from_url(url).await.expect(url)
}

#[test]
fn url_forms() {
    let c =
        MemoryConfig::from_url("memory://t1?timeout=2s&namespace=app/x&consistency=stale").unwrap();
    let want = MemoryConfig::new("t1")
        .with_namespace("app/x")
        .with_timeout(Duration::from_secs(2));
    assert_eq!(c, want);
    assert_eq!(MemoryConfig::from_url("memory://").unwrap().name(), "");
    assert_eq!(MemoryConfig::from_url("memory:///").unwrap().name(), "");
    for bad in [
        "memory://x?flush=false",
        "memory://x/path",
        "memory://u:secret@x",
        "memory://x?timeout=0s",
        "memory://x?consistency=eventual",
        "sled:///tmp/x",
    ] {
        match MemoryConfig::from_url(bad) {
            Err(Error::Config { message }) => assert!(!message.contains("secret"), "{message}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    match MemoryConfig::from_url("memory://x?flush=false") {
        Err(Error::Config { message }) => {
            assert!(message.contains("flush"), "{message}");
            assert!(message.contains("namespace, timeout"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        DRIVER.with_namespace("memory://t", "a/b"),
        "memory://t?namespace=a/b"
    );
}

#[tokio::test]
async fn bad_namespace_is_invalid_key() {
    let r = MemoryStore::from_url("memory://?namespace=a/../b").await;
    assert!(matches!(r, Err(Error::InvalidKey { .. })), "{r:?}");
}

#[tokio::test]
async fn named_stores_are_shared_until_the_last_handle_drops() {
    let a = open("memory://shared-test").await;
    let b = open("memory://shared-test?namespace=ns").await;
    b.put("k", b"1", PutOptions::default()).await.unwrap();
    assert_eq!(a.get("ns/k").await.unwrap().value, b"1");
    let private = open("memory://").await;
    assert!(!private.exists("ns/k").await.unwrap());
    assert!(!kv_memory::new_store().exists("ns/k").await.unwrap());
    drop(a);
    let c = open("memory://shared-test").await;
    assert!(c.exists("ns/k").await.unwrap(), "b still holds the store");
    drop((b, c));
    let d = open("memory://shared-test").await;
    assert!(
        !d.exists("ns/k").await.unwrap(),
        "a fresh store after the last drop"
    );
    assert_eq!(d.name(), "shared-test");
    let dbg = format!("{d:?}");
    assert!(
        dbg.contains("shared-test") && dbg.contains("closed: false"),
        "{dbg}"
    );
}

#[tokio::test]
async fn versions_grow_across_delete_and_recreate() {
    let s = kv_memory::new_store();
    let v1 = s
        .put("k", b"a", PutOptions::default())
        .await
        .unwrap()
        .version;
    s.delete("k").await.unwrap();
    let v2 = s
        .put("k", b"b", PutOptions::default())
        .await
        .unwrap()
        .version;
    assert!(v2 > v1 && v1 > 0);
    assert!(matches!(
        s.atomic_put("k", b"c", None, PutOptions::default()).await,
        Err(Error::KeyExists { .. })
    ));
    let p = s.get("k").await.unwrap();
    s.delete("k").await.unwrap();
    assert!(matches!(
        s.atomic_delete("k", &p).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn ttl_follows_the_paused_clock_and_watches_see_the_expiry() {
    let s = kv_memory::new_store();
    let mut w = s.watch("t").await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap(), None);
    let p = s
        .put("t", b"v", PutOptions::with_ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(w.next().await.unwrap().unwrap(), Some(p));
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(s.exists("t").await.unwrap());
    // Nothing else happens: the expiry timer alone must delete the key.
    let item = tokio::time::timeout(Duration::from_secs(5), w.next()).await;
    assert!(matches!(item, Ok(Some(Ok(None)))), "{item:?}");
    assert!(!s.exists("t").await.unwrap());
    // A rewrite without TTL makes the key permanent.
    s.put("u", b"1", PutOptions::with_ttl(Duration::from_millis(5)))
        .await
        .unwrap();
    s.put("u", b"2", PutOptions::default()).await.unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(s.get("u").await.unwrap().value, b"2");
}

#[tokio::test]
async fn txn_is_atomic_and_fencing_failures_are_typed() {
    let s = kv_memory::new_store();
    let mut tree = s.watch_tree("t").await.unwrap();
    assert!(tree.next().await.unwrap().unwrap().is_empty());
    let r = s
        .txn(
            Txn::new()
                .when_absent("t/a")
                .put("t/a", "1")
                .put("t/b", "2"),
        )
        .await
        .unwrap();
    assert_eq!(r.len(), 2);
    // Both writes arrive as one snapshot.
    assert_eq!(tree.next().await.unwrap().unwrap().len(), 2);
    let before = s.list("t").await.unwrap();
    let e = s
        .txn(Txn::new().when_version("t/a", 999).put("t/c", "3"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::CompareFailed { index: 0, .. }), "{e:?}");
    assert_eq!(s.list("t").await.unwrap(), before, "nothing applied");

    let lock = s.new_lock("l", LockOptions::default()).await.unwrap();
    s.txn(Txn::new().when_held(&lock).put("t/d", "4"))
        .await
        .unwrap();
    s.put("l", b"intruder", PutOptions::default())
        .await
        .unwrap();
    let e = s
        .txn(Txn::new().when_held(&lock).put("t/e", "5"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::FencingFailed {
                index: 0,
                actual: Some(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!s.exists("t/e").await.unwrap());
}

#[tokio::test]
async fn waiters_are_served_in_arrival_order() {
    let s = Arc::new(kv_memory::new_store());
    let holder = s.new_lock("q", LockOptions::default()).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let (s, order) = (s.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let l = s
                .new_lock("q", LockOptions::with_value(name))
                .await
                .unwrap();
            order.lock().unwrap().push(name);
            l.unlock().await.unwrap();
        }));
        // Current-thread runtime: let the waiter run until it queues.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
    holder.unlock().await.unwrap();
    for t in tasks {
        tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["a", "b", "c", "d"]);
    assert!(!s.exists("q").await.unwrap());
}

#[tokio::test]
async fn abandoned_attempt_leaves_the_queue() {
    let s = kv_memory::new_store();
    let holder = s.new_lock("q", LockOptions::default()).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_millis(20),
        s.new_lock("q", LockOptions::default()),
    )
    .await;
    assert!(r.is_err(), "the attempt must wait");
    holder.unlock().await.unwrap();
    let next = tokio::time::timeout(WAIT, s.new_lock("q", LockOptions::with_value("next")))
        .await
        .expect("the dropped attempt must not hold the queue")
        .unwrap();
    assert_eq!(s.get("q").await.unwrap().value, b"next");
    next.unlock().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn lease_is_lost_when_its_ttl_passes_keep_alive_is_not() {
    let s = kv_memory::new_store();
    let opts = LockOptions::with_value("lease").ttl(Duration::from_secs(5));
    let lease = s
        .new_lock("lease", opts.clone().keep_alive(false))
        .await
        .unwrap();
    let kept = s.new_lock("kept", opts).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(6), lease.lost_signal().wait())
        .await
        .expect("the lease is lost at its TTL");
    assert!(e.to_string().contains("expired"), "{e}");
    assert!(!s.exists("lease").await.unwrap());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(!kept.is_lost());
    assert!(matches!(lease.unlock().await, Err(Error::LockLost { .. })));
    kept.unlock().await.unwrap();
}

#[tokio::test]
async fn delete_by_someone_else_loses_the_lock_and_close_releases() {
    let a = open("memory://locks-test").await;
    let b = open("memory://locks-test").await;
    let l = a.new_lock("k", LockOptions::with_value("a")).await.unwrap();
    b.delete("k").await.unwrap();
    let e = tokio::time::timeout(WAIT, l.lost_signal().wait())
        .await
        .unwrap();
    assert!(e.to_string().contains("deleted"), "{e}");
    let l2 = b.new_lock("k", LockOptions::with_value("b")).await.unwrap();
    assert!(matches!(l.unlock().await, Err(Error::LockLost { .. })));
    assert_eq!(
        a.get("k").await.unwrap().value,
        b"b",
        "the old holder removed nothing"
    );
    let waiter = {
        let a = open("memory://locks-test").await;
        tokio::spawn(async move {
            let r = a
                .new_lock("k", LockOptions::with_value("c"))
                .await
                .map(|_| ());
            (r, a)
        })
    };
    b.close().await.unwrap();
    assert!(l2.is_lost());
    let (r, _a) = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
    r.unwrap();
    assert!(matches!(b.get("k").await, Err(Error::Closed)));
}

#[tokio::test]
async fn close_wakes_waiters_and_ends_watches() {
    let a = Arc::new(open("memory://close-test").await);
    let b = open("memory://close-test").await;
    let _held = b.new_lock("k", LockOptions::default()).await.unwrap();
    let mut w = a.watch("x").await.unwrap();
    w.next().await.unwrap().unwrap();
    let waiting = {
        let a = a.clone();
        tokio::spawn(async move { a.new_lock("k", LockOptions::default()).await })
    };
    tokio::task::yield_now().await;
    a.close().await.unwrap();
    let r = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    assert!(matches!(w.next().await, Some(Err(Error::Closed))));
    assert!(w.next().await.is_none());
    assert!(
        b.exists("k").await.unwrap(),
        "the other handle's lock stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_see_every_change_in_order() {
    let s = kv_memory::new_store();
    let mut w = s.watch("k").await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap(), None);
    let mut written = Vec::new();
    for i in 0..200 {
        let value = i.to_string();
        let p = s.put("k", value.as_bytes(), PutOptions::default()).await;
        written.push(Some(p.unwrap().version));
        if i % 50 == 49 {
            s.delete("k").await.unwrap();
            written.push(None);
        }
    }
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let item = tokio::time::timeout(WAIT, w.next()).await.unwrap();
        seen.push(item.unwrap().unwrap().map(|p| p.version));
    }
    assert_eq!(seen, written);
}
