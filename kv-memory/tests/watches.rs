//! Many watches on one memory-store handle: each gets exactly the changes of its key or
//! subtree (routed, not broadcast), a transaction is one snapshot, dropped watches stop.

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{select_all, StreamExt};
use kv_core::{KvPair, PutOptions, Store, Txn};
use kv_memory::{MemoryConfig, MemoryStore};

const WAIT: Duration = Duration::from_secs(20);

async fn next<T>(s: &mut (impl futures::Stream<Item = T> + Unpin)) -> T {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("watch item within the deadline")
        .expect("stream not ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_watches_get_exactly_their_changes() {
    const W: usize = 2_000;
    let cfg = || MemoryConfig::new("many-watches").with_namespace("ns");
    let watcher = MemoryStore::connect(cfg()).await.unwrap();
    let writer = MemoryStore::connect(cfg()).await.unwrap();
    let key = |i: usize| format!("m/{}/{i}", i % 10);
    let mut streams = Vec::with_capacity(W);
    for i in 0..W {
        let mut w = watcher.watch(&key(i)).await.unwrap();
        assert_eq!(
            next(&mut w).await.unwrap(),
            None,
            "first item of {}",
            key(i)
        );
        streams.push(w.map(move |item| (i, item)));
    }
    let mut tree = watcher.watch_tree("m/3").await.unwrap();
    assert_eq!(next(&mut tree).await.unwrap(), vec![]);
    // Random puts (xorshift), each key's puts recorded; then a last marker per key.
    let mut expected: HashMap<usize, Vec<KvPair>> = HashMap::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for n in 0..W {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % W as u64) as usize;
        let v = format!("{n}");
        let p = writer
            .put(&key(i), v.as_bytes(), PutOptions::default())
            .await;
        expected.entry(i).or_default().push(p.unwrap());
    }
    for i in 0..W {
        let p = writer.put(&key(i), b"last", PutOptions::default()).await;
        expected.entry(i).or_default().push(p.unwrap());
    }
    let mut got: HashMap<usize, Vec<KvPair>> = HashMap::new();
    let mut all = select_all(streams);
    let mut ended = 0;
    while ended < W {
        let (i, item) = next(&mut all).await;
        let p = item.expect("no error item").expect("no delete was written");
        assert_eq!(p.key, key(i), "a watch saw another key's put");
        ended += usize::from(p.value == b"last");
        got.entry(i).or_default().push(p);
    }
    assert_eq!(
        got, expected,
        "every put exactly once, in order, to its own watch only"
    );

    // The subtree watch: a transaction over its keys is one snapshot, others are not seen.
    while next(&mut tree)
        .await
        .unwrap()
        .iter()
        .filter(|p| p.value == b"last")
        .count()
        < W / 10
    {}
    writer
        .put("m/4/x", b"elsewhere", PutOptions::default())
        .await
        .unwrap();
    let txn = Txn::new()
        .put("m/3/a", "1")
        .put("m/3/b", "2")
        .delete("m/3/3");
    writer.txn(txn).await.unwrap();
    let snap = next(&mut tree).await.unwrap();
    assert_eq!(snap.len(), W / 10 + 1, "one snapshot: +a +b -3");
    assert!(snap.iter().any(|p| p.key == "m/3/a") && snap.iter().any(|p| p.key == "m/3/b"));
    assert!(!snap.iter().any(|p| p.key == "m/3/3"));

    // Dropped watches stop; the ones left still get their changes.
    drop(all);
    let mut one = watcher.watch(&key(7)).await.unwrap();
    next(&mut one).await.unwrap();
    let p = writer
        .put(&key(7), b"after", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(next(&mut one).await.unwrap(), Some(p));
    drop(writer);
    watcher.close().await.unwrap();
    assert!(next(&mut one).await.is_err(), "closing ends the stream");
}
