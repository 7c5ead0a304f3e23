//! 10,000 watches on one handle cost no thread each.
//!
//! Alone in this file on purpose: it counts the threads of the whole process, and the test
//! harness starts other tests' threads and runtimes at any time.
//!
//! sled's own I/O pool (threads named `sled-io-N`) is left out of the count: sled starts 7 of
//! them for the whole process on its first background write, and more for a second or so when
//! writes queue up. That first write can come after the baseline (CI once read "+7 threads"),
//! and it has nothing to do with watches.

use std::time::Instant;

use futures::StreamExt;
use kv_core::{PutOptions, Store};
use kv_sled::{SledConfig, SledStore};

mod common;
use common::DEADLINE;

use kv_testkit::watchbench::status;

/// The names of this process's threads, sled's I/O pool left out, and the size of that pool.
fn threads() -> (Vec<String>, usize) {
    let (mut names, mut sled_io) = (Vec::new(), 0);
    for t in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let comm = t.expect("task entry").path().join("comm");
        // A thread that ended after the listing has no comm any more.
        if let Ok(name) = std::fs::read_to_string(comm) {
            let name = name.trim_end().to_string();
            if name.starts_with("sled-io-") {
                sled_io += 1;
            } else {
                names.push(name);
            }
        }
    }
    names.sort();
    (names, sled_io)
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
    // The only test of this binary: the thread and RSS counts are the whole process's.
    let d = kv_testkit::temp_dir("sled-watchers");
    let s = SledStore::connect(SledConfig::new(d.path()).with_flush(false))
        .await
        .unwrap();
    let idle_cost = put_cost(&s, "before").await;
    let ((before, io_before), rss) = (threads(), status("VmRSS"));
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
    let (after, io_after) = threads();
    let added_threads = after.len().saturating_sub(before.len());
    let kib_per_watch = status("VmRSS").saturating_sub(rss) as f64 / 10_100.0;
    assert!(
        added_threads <= 2,
        "10,100 watches added {added_threads} threads: before {before:?}, after {after:?}"
    );
    let busy_cost = put_cost(&s, "after").await;
    println!(
        "figure watchers: 10,100 watches: +{added_threads} threads (sled's I/O pool: \
         {io_before} before, {io_after} after), about {:.1} KiB each; \
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
