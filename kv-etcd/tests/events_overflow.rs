//! A typed event stream whose reader falls more than a queue behind gets a `Resync`, and after
//! it only changes newer than the snapshot: the events the server had already sent for the old
//! position must not follow the snapshot (etcd replays from a revision, so a stale one would
//! step the reader's state back).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kv_core::{PutOptions, Store, WatchEvent};
use kv_etcd::EtcdStore;
use kv_testkit::etcd::EtcdServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_overflow_resync_no_older_event_follows() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let url = format!("etcd://{}/overflow", server.endpoint());
    let store = EtcdStore::from_url(&url).await.unwrap();
    let writer = EtcdStore::from_url(&url).await.unwrap();
    let mut ev = store.watch_events("p", None).await.unwrap();
    let first = ev.next().await.unwrap().unwrap();
    assert!(matches!(first, WatchEvent::Resync { .. }), "{first:?}");
    // Far more changes than the stream's queue holds, not read meanwhile.
    let n = kv_core::watch::WATCH_QUEUE * 3;
    for i in 0..n {
        writer
            .put(
                &format!("p/k{}", i % 40),
                format!("{i}").as_bytes(),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let last = writer
        .put("p/last", b"end", PutOptions::default())
        .await
        .unwrap();
    let mut model: BTreeMap<String, u64> = BTreeMap::new();
    let mut floor = 0;
    let mut resyncs = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while model.get("p/last") != Some(&last.version) {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, ev.next())
            .await
            .expect("the stream catches up within 60 s")
            .expect("stream not ended")
            .expect("no error item with a healthy server");
        match item {
            WatchEvent::Resync { pairs, cursor } => {
                resyncs += 1;
                floor = cursor.get();
                model = pairs.into_iter().map(|p| (p.key, p.version)).collect();
            }
            WatchEvent::Put { pair, .. } => {
                assert!(
                    pair.version > floor,
                    "a Put of version {} after a Resync at revision {floor}",
                    pair.version
                );
                model.insert(pair.key, pair.version);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(resyncs >= 1, "the overflow was reported as a Resync");
    let truth: BTreeMap<String, u64> = writer
        .list("p")
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.key, p.version))
        .collect();
    assert_eq!(model, truth);
}
