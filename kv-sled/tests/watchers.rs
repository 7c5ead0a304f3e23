//! 10,000 watches on one database cost no thread each, and every one still sees its changes.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kv_core::{PutOptions, Store};
use kv_sled::{SledConfig, SledStore};

const DEADLINE: Duration = Duration::from_secs(30);

/// A field of `/proc/self/status` (`Threads`, `VmRSS` in kB).
fn status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Best of 5 rounds of 200 puts, in µs per put.
async fn put_cost(s: &SledStore, tag: &str) -> f64 {
    let mut best = f64::MAX;
    for r in 0..5 {
        let start = Instant::now();
        for i in 0..200 {
            s.put(&format!("other/{tag}/{r}/{i}"), b"v", PutOptions::default())
                .await
                .unwrap();
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / 200.0);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watchers_cost_no_thread_each() {
    let d = kv_testkit::temp_dir("sled-watchers");
    let s = SledStore::connect(SledConfig::new(d.path()).with_flush(false))
        .await
        .unwrap();
    let idle_cost = put_cost(&s, "before").await;
    let (threads, rss) = (status("Threads"), status("VmRSS"));
    let mut keys = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let mut w = s.watch(&format!("w/{}/{i}", i % 100)).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap(), None);
        keys.push(w);
    }
    let mut trees = Vec::new();
    for t in 0..100 {
        let mut w = s.watch_tree(&format!("w/{t}")).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap(), vec![]);
        trees.push(w);
    }
    let added_threads = status("Threads").saturating_sub(threads);
    let kib_per_watch = status("VmRSS").saturating_sub(rss) as f64 / 10_100.0;
    assert!(
        added_threads <= 2,
        "10,100 watches added {added_threads} threads"
    );
    let busy_cost = put_cost(&s, "after").await;
    println!(
        "figure watchers: 10,100 watches: +{added_threads} threads, about {:.1} KiB each; \
         put of an unwatched key {idle_cost:.1} µs without watches, {busy_cost:.1} µs with them",
        kib_per_watch
    );
    // Every watch still gets its change, in one pass over all of them.
    for i in (0..10_000).step_by(97) {
        let p = s
            .put(&format!("w/{}/{i}", i % 100), b"x", PutOptions::default())
            .await
            .unwrap();
        let got = tokio::time::timeout(DEADLINE, keys[i].next())
            .await
            .expect("the watch sees its key's change")
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(p.clone()));
        let snap = tokio::time::timeout(DEADLINE, trees[i % 100].next())
            .await
            .expect("the tree watch sees the change")
            .unwrap()
            .unwrap();
        assert!(snap.contains(&p), "{snap:?}");
    }
    drop((keys, trees));
    s.close().await.unwrap();
}
