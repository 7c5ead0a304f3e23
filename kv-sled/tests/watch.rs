//! Watch tests of the sled driver in one process (TTL expiry, subtrees, unread streams,
//! concurrent writers).

use std::time::{Duration, Instant};

use futures::StreamExt;
use kv_core::{Error, PutOptions, Store};
use kv_sled::{SledConfig, SledStore};

mod common;
use common::{dir, next, open, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_keys_vanish_at_expiry_and_watchers_see_it() {
    let d = dir("ttl");
    let s = open(d.path()).await;
    assert!(matches!(
        s.put("x", b"v", PutOptions::with_ttl(Duration::from_micros(10)))
            .await,
        Err(Error::Unsupported { .. })
    ));
    let ttl = Duration::from_millis(400);
    let mut w = s.watch("ttl/k").await.unwrap();
    assert_eq!(next(&mut w).await.unwrap(), None);
    let mut tw = s.watch_tree("ttl").await.unwrap();
    assert_eq!(next(&mut tw).await.unwrap(), vec![]);
    let written = Instant::now();
    let p = s
        .put("ttl/k", b"v", PutOptions::with_ttl(ttl))
        .await
        .unwrap();
    assert_eq!(next(&mut w).await.unwrap(), Some(p.clone()));
    assert_eq!(next(&mut tw).await.unwrap(), vec![p]);
    // Right after the expiry time the key is gone for every read.
    tokio::time::sleep_until((written + ttl + Duration::from_millis(2)).into()).await;
    assert!(matches!(s.get("ttl/k").await, Err(Error::NotFound { .. })));
    assert!(!s.exists("ttl/k").await.unwrap());
    assert_eq!(s.list("ttl").await.unwrap(), vec![]);
    assert_eq!(next(&mut w).await.unwrap(), None);
    assert_eq!(next(&mut tw).await.unwrap(), vec![]);

    // A write without TTL makes the key permanent again.
    s.put(
        "ttl/p",
        b"v",
        PutOptions::with_ttl(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    s.put("ttl/p", b"v", PutOptions::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.exists("ttl/p").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_tree_tracks_exactly_the_subtree() {
    let d = dir("tree");
    let s = open(d.path()).await;
    s.put("foo/a", b"1", PutOptions::default()).await.unwrap();
    let mut tw = s.watch_tree("foo").await.unwrap();
    let first = next(&mut tw).await.unwrap();
    assert_eq!(first.len(), 1);
    s.put("foobar", b"no", PutOptions::default()).await.unwrap();
    s.put("foo", b"no", PutOptions::default()).await.unwrap();
    let b = s.put("foo/b/c", b"2", PutOptions::default()).await.unwrap();
    let snap = next(&mut tw).await.unwrap();
    assert_eq!(
        snap.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
        vec!["foo/a", "foo/b/c"]
    );
    let a2 = s
        .put("foo/a", b"changed", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(next(&mut tw).await.unwrap(), vec![a2.clone(), b]);
    s.delete("foo/b/c").await.unwrap();
    assert_eq!(next(&mut tw).await.unwrap(), vec![a2]);

    // Every change of one key arrives, in order.
    let mut w = s.watch("foo/a").await.unwrap();
    next(&mut w).await.unwrap();
    let mut versions = vec![];
    for i in 0..50 {
        versions.push(
            s.put("foo/a", format!("{i}").as_bytes(), PutOptions::default())
                .await
                .unwrap()
                .version,
        );
    }
    for v in versions {
        assert_eq!(next(&mut w).await.unwrap().unwrap().version, v);
    }

    // close() ends streams with Err(Closed); later calls are Closed.
    s.close().await.unwrap();
    assert!(matches!(next(&mut w).await, Err(Error::Closed)));
    assert!(tokio::time::timeout(DEADLINE, w.next())
        .await
        .unwrap()
        .is_none());
    // The tree watch still holds unread snapshots of the 50 writes; the error comes last.
    loop {
        match next(&mut tw).await {
            Ok(snap) => assert_eq!(snap.len(), 1),
            Err(e) => {
                assert!(matches!(e, Error::Closed), "{e:?}");
                break;
            }
        }
    }
    assert!(tokio::time::timeout(DEADLINE, tw.next())
        .await
        .unwrap()
        .is_none());
    assert!(matches!(s.get("foo/a").await, Err(Error::Closed)));
    assert!(matches!(s.watch("foo/a").await, Err(Error::Closed)));
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_watch_streams_never_block_writers() {
    let d = dir("unread");
    let s = SledStore::connect(SledConfig::new(d.path()).with_flush(false))
        .await
        .unwrap();
    let _w = s.watch("u/k").await.unwrap();
    let _tw = s.watch_tree("u").await.unwrap();
    let start = Instant::now();
    let writes = async {
        for i in 0..5_000u32 {
            s.put("u/k", &i.to_be_bytes(), PutOptions::default())
                .await
                .unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), writes)
        .await
        .expect("5000 writes with an unread watch finish");
    eprintln!("5000 puts with unread watches: {:?}", start.elapsed());
    assert_eq!(
        s.get("u/k").await.unwrap().value,
        4_999u32.to_be_bytes().to_vec()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn unread_watch_on_a_single_thread_runtime() {
    // The same on a current-thread runtime, where a blocked writer would deadlock the test.
    let d = dir("unread1");
    let s = SledStore::connect(SledConfig::new(d.path()).with_flush(false))
        .await
        .unwrap();
    let _w = s.watch("u/k").await.unwrap();
    for i in 0..3_000u32 {
        s.put("u/k", &i.to_be_bytes(), PutOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(
        s.get("u/k").await.unwrap().value,
        2_999u32.to_be_bytes().to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_survive_concurrent_writers() {
    // Concurrent writers of one key lose compare-and-swaps (sled drops their event
    // reservations); the watch must keep going and end on the final version.
    let d = dir("conflict");
    let s = std::sync::Arc::new(
        SledStore::connect(SledConfig::new(d.path()).with_flush(false))
            .await
            .unwrap(),
    );
    let mut w = s.watch("c/k").await.unwrap();
    assert_eq!(next(&mut w).await.unwrap(), None);
    let mut tasks = vec![];
    for t in 0..4u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 0..200u32 {
                let v = s
                    .put("c/k", format!("{t}-{i}").as_bytes(), PutOptions::default())
                    .await
                    .unwrap()
                    .version;
                assert!(v > last);
                last = v;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let fin = s.get("c/k").await.unwrap();
    let mut prev = 0;
    loop {
        let p = next(&mut w).await.unwrap().unwrap();
        assert!(p.version > prev, "versions arrive in increasing order");
        prev = p.version;
        if p.version == fin.version {
            break;
        }
    }
    // A later write still arrives.
    let after = s.put("c/k", b"after", PutOptions::default()).await.unwrap();
    assert_eq!(next(&mut w).await.unwrap(), Some(after));
}
