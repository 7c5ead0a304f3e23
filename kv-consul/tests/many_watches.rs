//! Many watches on one handle share the handle's bounded pool of blocking queries: every
//! first item is Ok, every put reaches exactly its watchers (no duplicates, none missed), the
//! handle never holds more connections than `watch_pool`, and a restart loses no final state.

mod common;
#[path = "common/conns.rs"]
mod conns;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{next_ok, until};
use futures::{FutureExt, StreamExt};
use kv_consul::ConsulStore;
use kv_core::{KvPair, PutOptions, Store, TreeWatchStream, WatchStream};
use kv_testkit::consul::{Consul, Options};
use rand::{Rng, SeedableRng};

const WAIT: Duration = Duration::from_secs(20);

/// Samples every 2 ms the largest number of established connections to the agent that
/// `store`'s watch pool opened, until the returned flag is set.
fn sample_connections(
    port: u16,
    store: ConsulStore,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let mut max = 0;
        while !flag.load(Ordering::Relaxed) {
            let pool: HashSet<u16> = store.watch_pool_ports().into_iter().collect();
            max = max.max(conns::connections_to(port).intersection(&pool).count());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        max
    });
    (stop, task)
}

/// Asserts that no stream has an item ready.
fn assert_quiet(keys: &mut [WatchStream], trees: &mut [TreeWatchStream]) {
    for (i, w) in keys.iter_mut().enumerate() {
        if let Some(item) = w.next().now_or_never() {
            panic!("key watch {i}: unexpected item {item:?}");
        }
    }
    for (i, w) in trees.iter_mut().enumerate() {
        if let Some(item) = w.next().now_or_never() {
            panic!("tree watch {i}: unexpected item {item:?}");
        }
    }
}

async fn fan_out(pool: usize, watches: usize, puts: usize) {
    let Some(consul) = Consul::start(Options::default()).await else {
        return;
    };
    let url = format!("consul://{}/many?watch_pool={pool}", consul.addr());
    let (a, b) = (
        ConsulStore::from_url(&url).await.unwrap(),
        ConsulStore::from_url(&url).await.unwrap(),
    );
    let (stop, sampler) = sample_connections(consul.http_port, a.clone());
    let key = |i: usize| format!("k/{i:04}");
    let subtree = |j: usize| format!("t/{j}");
    let mut keys = Vec::new();
    for i in 0..watches {
        let mut w = a.watch(&key(i)).await.unwrap();
        assert_eq!(next_ok(&mut w, WAIT).await, None, "first item of watch {i}");
        keys.push(w);
    }
    let mut trees = Vec::new();
    for j in 0..5 {
        let mut w = a.watch_tree(&subtree(j)).await.unwrap();
        assert!(next_ok(&mut w, WAIT).await.is_empty());
        trees.push(w);
    }
    let mut tree_state: Vec<Vec<KvPair>> = vec![Vec::new(); trees.len()];
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    for n in 0..puts {
        if rng.gen_bool(0.8) {
            let i = rng.gen_range(0..watches);
            let p = b
                .put(&key(i), format!("{n}").as_bytes(), PutOptions::default())
                .await
                .unwrap();
            let got = tokio::time::timeout(WAIT, keys[i].next()).await;
            let got = got.unwrap_or_else(|_| panic!("put {n} on {} not delivered", key(i)));
            assert_eq!(got.unwrap().unwrap(), Some(p), "put {n}");
        } else {
            let j = rng.gen_range(0..trees.len());
            let k = format!("{}/{}", subtree(j), rng.gen_range(0..4));
            let p = b
                .put(&k, format!("{n}").as_bytes(), PutOptions::default())
                .await
                .unwrap();
            tree_state[j].retain(|q| q.key != p.key);
            tree_state[j].push(p);
            tree_state[j].sort_by(|x, y| x.key.cmp(&y.key));
            let got = tokio::time::timeout(WAIT, trees[j].next()).await;
            let got = got.unwrap_or_else(|_| panic!("put {n} on {k} not delivered"));
            assert_eq!(got.unwrap().unwrap(), tree_state[j], "put {n}");
        }
        if n % 10 == 0 {
            assert_quiet(&mut keys, &mut trees);
        }
    }
    // A last put to the first key: once it arrived, every earlier fan-out is done.
    let p = b
        .put(&key(0), b"last", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(next_ok(&mut keys[0], WAIT).await, Some(p));
    assert_quiet(&mut keys, &mut trees);
    stop.store(true, Ordering::Relaxed);
    let max_conns = sampler.await.unwrap();
    assert!(
        max_conns <= pool,
        "{max_conns} connections for watch_pool={pool}"
    );
    drop((keys, trees));
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_watches_on_a_pool_of_16() {
    fan_out(16, 500, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_one_connection() {
    fan_out(1, 20, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watches_survive_a_restart() {
    let Some(mut consul) = Consul::start(Options::default()).await else {
        return;
    };
    let url = format!(
        "consul://{}/many-restart?timeout=3s&watch_pool=4",
        consul.addr()
    );
    let s = ConsulStore::from_url(&url).await.unwrap();
    let mut keys = Vec::new();
    for i in 0..100 {
        let mut w = s.watch(&format!("r/{i}")).await.unwrap();
        assert_eq!(next_ok(&mut w, WAIT).await, None);
        keys.push(w);
    }
    let mut tree = s.watch_tree("r").await.unwrap();
    assert!(next_ok(&mut tree, WAIT).await.is_empty());
    for round in 0..2 {
        consul.kill();
        let e = s.get("r/0").await.unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        consul.restart().await;
        let mut last = Vec::new();
        for i in 0..100 {
            let v = format!("after restart {round}");
            let p = s
                .put(&format!("r/{i}"), v.as_bytes(), PutOptions::default())
                .await
                .unwrap();
            last.push(p);
        }
        for (i, w) in keys.iter_mut().enumerate() {
            until(w, Duration::from_secs(60), |v| v.as_ref() == Some(&last[i])).await;
        }
        last.sort_by(|x, y| x.key.cmp(&y.key));
        until(&mut tree, Duration::from_secs(60), |v| *v == last).await;
    }
    s.close().await.unwrap();
}

/// Watches opened while others receive changes force their groups to merge (and move): every
/// watch still ends with the last state of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regrouping_loses_no_change() {
    let Some(consul) = Consul::start(Options::default()).await else {
        return;
    };
    let url = format!("consul://{}/regroup?watch_pool=4", consul.addr());
    let (a, b) = (
        ConsulStore::from_url(&url).await.unwrap(),
        ConsulStore::from_url(&url).await.unwrap(),
    );
    let mut first = Vec::new();
    for i in 0..3 {
        let mut w = a.watch(&format!("x{i}/k")).await.unwrap();
        assert_eq!(next_ok(&mut w, WAIT).await, None);
        first.push(w);
    }
    let writer = tokio::spawn(async move {
        let mut last = Vec::new();
        for round in 0..30 {
            last.clear();
            for i in 0..3 {
                let (k, v) = (format!("x{i}/k"), format!("{round}"));
                last.push(
                    b.put(&k, v.as_bytes(), PutOptions::default())
                        .await
                        .unwrap(),
                );
            }
        }
        last
    });
    let mut more = Vec::new();
    for i in 0..40 {
        let key = format!("y{}/{i}", i % 7);
        let mut w = a.watch(&key).await.unwrap();
        assert_eq!(next_ok(&mut w, WAIT).await, None, "{key}");
        more.push(w);
    }
    let last = writer.await.unwrap();
    for (w, p) in first.iter_mut().zip(&last) {
        until(w, Duration::from_secs(30), |v| v.as_ref() == Some(p)).await;
    }
    assert_quiet(&mut more, &mut []);
    a.close().await.unwrap();
}
