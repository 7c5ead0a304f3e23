//! Many watches on one handle: 2,000 get exactly the changes of their keys, and watches across a
//! restart of the database deliver every final state. (10,000 watches costing no thread each are
//! in `watch_threads.rs`, alone in their process.)

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::{select_all, StreamExt};
use kv_core::{Error, KvPair, PutOptions, Store};
use kv_sled::{SledConfig, SledStore};

mod common;
use common::{next, DEADLINE};

/// A deterministic xorshift sequence (the tests need no real randomness, only spread).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_watches_get_exactly_the_puts_of_their_keys() {
    // One at a time: the thread and RSS counts are the whole process's.
    let _slot = kv_testkit::cluster_slot().await;
    const W: usize = 2_000;
    let d = kv_testkit::temp_dir("sled-exact");
    let cfg = || SledConfig::new(d.path()).with_flush(false);
    let watcher = SledStore::connect(cfg()).await.unwrap();
    let writer = Arc::new(SledStore::connect(cfg()).await.unwrap());
    let key = |i: usize| format!("exact/{}/{i}", i % 16);
    let mut initial = HashMap::new();
    for i in (0..W).step_by(3) {
        let p = writer.put(&key(i), b"initial", PutOptions::default()).await;
        initial.insert(i, p.unwrap());
    }
    let mut streams = Vec::with_capacity(W);
    for i in 0..W {
        let mut w = watcher.watch(&key(i)).await.unwrap();
        let first = next(&mut w).await.expect("every first item is Ok");
        assert_eq!(first.as_ref(), initial.get(&i), "first item of {}", key(i));
        streams.push(w.map(move |item| (i, item)));
    }
    // 4 writers put 2,000 times to random keys, then each key gets a last marker put.
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
            let mut done = Vec::new();
            for n in 0..W / 4 {
                let i = rng.below(W);
                let v = format!("{t}-{n}");
                let p = writer
                    .put(&key(i), v.as_bytes(), PutOptions::default())
                    .await;
                done.push((i, p.unwrap()));
            }
            done
        }));
    }
    let mut expected: HashMap<usize, Vec<KvPair>> = HashMap::new();
    for t in tasks {
        for (i, p) in t.await.unwrap() {
            expected.entry(i).or_default().push(p);
        }
    }
    for i in 0..W {
        let p = writer.put(&key(i), b"last", PutOptions::default()).await;
        expected.entry(i).or_default().push(p.unwrap());
    }
    let total: usize = expected.values().map(Vec::len).sum();
    for puts in expected.values_mut() {
        puts.sort_by_key(|p| p.version);
    }
    // Each watch yields exactly its key's puts in version order, its marker last.
    let mut got: HashMap<usize, Vec<KvPair>> = HashMap::new();
    let mut all = select_all(streams);
    let mut ended = 0;
    let mut received = 0;
    while ended < W {
        let (i, item) = next(&mut all).await;
        let p = item.expect("no error item").expect("no delete was written");
        assert_eq!(p.key, key(i), "a watch saw another key's put");
        received += 1;
        ended += usize::from(p.value == b"last");
        got.entry(i).or_default().push(p);
    }
    assert_eq!(received, total, "every put arrives exactly once");
    for i in 0..W {
        assert_eq!(got.get(&i), expected.get(&i), "the puts of {}", key(i));
    }
    watcher.close().await.unwrap();
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_across_writer_and_database_restarts_see_every_final_state() {
    // One at a time: the thread and RSS counts are the whole process's.
    let _slot = kv_testkit::cluster_slot().await;
    const W: usize = 200;
    let d = kv_testkit::temp_dir("sled-restart");
    let cfg = || SledConfig::new(d.path()).with_flush(false);
    let key = |i: usize| format!("restart/{i}");
    let watcher = SledStore::connect(cfg()).await.unwrap();
    let mut streams = Vec::new();
    for i in 0..W {
        let mut w = watcher.watch(&key(i)).await.unwrap();
        assert_eq!(next(&mut w).await.unwrap(), None);
        streams.push(w);
    }
    let mut tree = watcher.watch_tree("restart").await.unwrap();
    assert_eq!(next(&mut tree).await.unwrap(), vec![]);
    // Five writer handles one after the other (each closed: a writer restart), random puts and
    // deletes; the watches keep going on their own handle.
    let mut rng = Rng(42);
    let mut last: Vec<Option<KvPair>> = vec![None; W];
    let mut changes = vec![0usize; W];
    let mut writer = None;
    for round in 0..5 {
        let w = SledStore::connect(cfg()).await.unwrap();
        let writer = writer.insert(w);
        for n in 0..400 {
            let i = rng.below(W);
            changes[i] += 1; // a put (new version) or a delete of a live key: always a change
            last[i] = if rng.below(4) == 0 && last[i].is_some() {
                writer.delete(&key(i)).await.unwrap();
                None
            } else {
                let v = format!("{round}-{n}");
                Some(
                    writer
                        .put(&key(i), v.as_bytes(), PutOptions::default())
                        .await
                        .unwrap(),
                )
            };
        }
        if round < 4 {
            writer.close().await.unwrap();
        }
    }
    // Each key watch shows exactly one item per change, the final state last.
    for (i, w) in streams.iter_mut().enumerate() {
        let mut seen = None;
        for _ in 0..changes[i] {
            seen = next(w).await.expect("no error item");
        }
        assert_eq!(seen, last[i], "final state of {}", key(i));
    }
    // The tree watch may coalesce unread snapshots; a last marker write makes its final
    // snapshot one it cannot have shown before.
    let writer = writer.unwrap();
    let end = writer.put("restart/end", b"", PutOptions::default()).await;
    writer.close().await.unwrap();
    let mut final_tree: Vec<KvPair> = last.iter().flatten().cloned().collect();
    final_tree.push(end.unwrap());
    final_tree.sort_by(|a, b| a.key.cmp(&b.key));
    while next(&mut tree).await.expect("no error item") != final_tree {}
    // The database restarts: its last handle closes (every stream ends with Err(Closed)) ...
    watcher.close().await.unwrap();
    assert!(matches!(next(&mut tree).await, Err(Error::Closed)));
    for w in streams.iter_mut() {
        assert!(matches!(next(w).await, Err(Error::Closed)));
        assert!(tokio::time::timeout(DEADLINE, w.next())
            .await
            .unwrap()
            .is_none());
    }
    // ... and opens again: new watches start at the final states and follow new writes.
    let watcher = SledStore::connect(cfg()).await.unwrap();
    let mut tree = watcher.watch_tree("restart").await.unwrap();
    assert_eq!(next(&mut tree).await.unwrap(), final_tree);
    for (i, want) in last.iter().enumerate() {
        let mut w = watcher.watch(&key(i)).await.unwrap();
        assert_eq!(
            &next(&mut w).await.unwrap(),
            want,
            "state of {} after restart",
            key(i)
        );
        if i % 20 == 0 {
            let p = watcher
                .put(&key(i), b"after", PutOptions::default())
                .await
                .unwrap();
            assert_eq!(next(&mut w).await.unwrap(), Some(p.clone()));
            assert!(next(&mut tree).await.unwrap().contains(&p));
        }
    }
    watcher.close().await.unwrap();
}
