//! kv's ZooKeeper driver versus zookeeper-client used directly, on the same server in one run.
//!
//! `cargo bench -p kv-zookeeper --bench vs_raw` — uses `KV_ZK_ENDPOINTS` if set, else starts a
//! server through kv_testkit. `KV_BENCH_N` operations per measurement (default 8000).
//! Sequential put and get of 100-byte values on existing keys, then the same with 64
//! concurrent tasks (one session shared by all tasks on each side).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::{PutOptions, Store};
use kv_zookeeper::{ZkConfig, ZkStore};
use zookeeper_client::{Acls, Client, CreateMode};

const TASKS: usize = 64;

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn kv_seq(s: &ZkStore, n: usize, get: bool) -> f64 {
    let v = vec![b'x'; 100];
    let t = Instant::now();
    for i in 0..n {
        let key = format!("seq/k{}", i % 100);
        if get {
            s.get(&key).await.unwrap();
        } else {
            s.put(&key, &v, PutOptions::default()).await.unwrap();
        }
    }
    rate(n, t.elapsed())
}

async fn raw_seq(c: &Client, n: usize, get: bool) -> f64 {
    let v = vec![b'x'; 100];
    let t = Instant::now();
    for i in 0..n {
        let path = format!("/bench-raw/seq/k{}", i % 100);
        if get {
            c.get_data(&path).await.unwrap();
        } else {
            c.set_data(&path, &v, None).await.unwrap();
        }
    }
    rate(n, t.elapsed())
}

async fn kv_par(s: Arc<ZkStore>, n: usize, get: bool) -> f64 {
    let per = n / TASKS;
    let t = Instant::now();
    let mut hs = Vec::new();
    for task in 0..TASKS {
        let s = s.clone();
        hs.push(tokio::spawn(async move {
            let v = vec![b'x'; 100];
            let key = format!("par/k{task}");
            for _ in 0..per {
                if get {
                    s.get(&key).await.unwrap();
                } else {
                    s.put(&key, &v, PutOptions::default()).await.unwrap();
                }
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    rate(per * TASKS, t.elapsed())
}

async fn raw_par(c: Client, n: usize, get: bool) -> f64 {
    let per = n / TASKS;
    let t = Instant::now();
    let mut hs = Vec::new();
    for task in 0..TASKS {
        let c = c.clone();
        hs.push(tokio::spawn(async move {
            let v = vec![b'x'; 100];
            let path = format!("/bench-raw/par/k{task}");
            for _ in 0..per {
                if get {
                    c.get_data(&path).await.unwrap();
                } else {
                    c.set_data(&path, &v, None).await.unwrap();
                }
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    rate(per * TASKS, t.elapsed())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n: usize = std::env::var("KV_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8000);
        let mut _server = None;
        let ep = match std::env::var("KV_ZK_ENDPOINTS") {
            Ok(e) if !e.trim().is_empty() => e,
            _ => {
                let Some(s) = kv_testkit::zookeeper::ZkServer::start().await else {
                    eprintln!("zookeeper not installed; benchmark not run");
                    return;
                };
                let e = s.endpoint();
                _server = Some(s);
                e
            }
        };
        let store = Arc::new(
            ZkStore::connect(ZkConfig::new(&ep).namespace("/bench-kv"))
                .await
                .unwrap(),
        );
        let raw = Client::connect(&ep).await.unwrap();
        let opts = CreateMode::Persistent.with_acls(Acls::anyone_all());
        raw.mkdir("/bench-raw/seq", &opts).await.unwrap();
        raw.mkdir("/bench-raw/par", &opts).await.unwrap();
        let v = vec![b'x'; 100];
        for i in 0..100 {
            let _ = raw.create(&format!("/bench-raw/seq/k{i}"), &v, &opts).await;
            store
                .put(&format!("seq/k{i}"), &v, PutOptions::default())
                .await
                .unwrap();
        }
        for i in 0..TASKS {
            let _ = raw.create(&format!("/bench-raw/par/k{i}"), &v, &opts).await;
            store
                .put(&format!("par/k{i}"), &v, PutOptions::default())
                .await
                .unwrap();
        }
        // Warm up both paths.
        kv_seq(&store, 200, false).await;
        raw_seq(&raw, 200, false).await;

        println!("kv-zookeeper vs zookeeper-client, N = {n}, server {ep}");
        println!(
            "{:<28} {:>12} {:>12} {:>8}",
            "operation", "kv ops/s", "raw ops/s", "kv/raw"
        );
        let rows = [
            ("sequential put", false, false),
            ("sequential get", true, false),
            ("64-task concurrent put", false, true),
            ("64-task concurrent get", true, true),
        ];
        for (name, get, par) in rows {
            // Interleave kv and raw in short rounds (swapping who goes first) and compare
            // total throughput, so load drift on a shared machine hits both sides alike.
            const ROUNDS: usize = 8;
            let m = (n / ROUNDS).max(TASKS);
            let (mut kt, mut rt) = (0f64, 0f64);
            for round in 0..ROUNDS {
                let run_kv = || async {
                    if par {
                        kv_par(store.clone(), m, get).await
                    } else {
                        kv_seq(&store, m, get).await
                    }
                };
                let run_raw = || async {
                    if par {
                        raw_par(raw.clone(), m, get).await
                    } else {
                        raw_seq(&raw, m, get).await
                    }
                };
                let (kk, rr) = if round % 2 == 0 {
                    let kk = run_kv().await;
                    (kk, run_raw().await)
                } else {
                    let rr = run_raw().await;
                    (run_kv().await, rr)
                };
                // Accumulate seconds per op.
                kt += 1.0 / kk;
                rt += 1.0 / rr;
            }
            let (k, r) = (ROUNDS as f64 / kt, ROUNDS as f64 / rt);
            println!("{name:<28} {k:>12.0} {r:>12.0} {:>8.2}", k / r);
        }
        let _ = store.delete_tree("").await;
        store.close().await.unwrap();
    });
}
