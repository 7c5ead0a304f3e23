//! kv's ZooKeeper driver versus zookeeper-client used directly, on the same server in one run.
//!
//! `cargo bench -p kv-zookeeper --bench vs_raw` — uses `KV_ZK_ENDPOINTS` if set, else starts a
//! server through kv_testkit. `KV_BENCH_N` operations per measurement (default 8000).
//! Sequential put and get of 100-byte values on existing keys, then the same with 64
//! concurrent tasks (one session shared by all tasks on each side).

use std::sync::Arc;

use kv_core::{PutOptions, Store};
use kv_testkit::bench::{self, Layout, Report, Sample};
use kv_zookeeper::{ZkConfig, ZkStore};
use zookeeper_client::{Acls, Client, CreateMode};

const TASKS: usize = 64;

static VALUE: [u8; 100] = [b'x'; 100];

async fn kv_seq(s: &ZkStore, n: usize, get: bool) -> Sample {
    bench::seq(n, |i| async move {
        let key = format!("seq/k{}", i % 100);
        if get {
            s.get(&key).await.unwrap();
        } else {
            s.put(&key, &VALUE, PutOptions::default()).await.unwrap();
        }
    })
    .await
}

async fn raw_seq(c: &Client, n: usize, get: bool) -> Sample {
    bench::seq(n, |i| async move {
        let path = format!("/bench-raw/seq/k{}", i % 100);
        if get {
            c.get_data(&path).await.unwrap();
        } else {
            c.set_data(&path, &VALUE, None).await.unwrap();
        }
    })
    .await
}

async fn kv_par(s: Arc<ZkStore>, n: usize, get: bool) -> Sample {
    bench::par(n, TASKS, move |task, _| {
        let s = s.clone();
        async move {
            let key = format!("par/k{task}");
            if get {
                s.get(&key).await.unwrap();
            } else {
                s.put(&key, &VALUE, PutOptions::default()).await.unwrap();
            }
        }
    })
    .await
}

async fn raw_par(c: Client, n: usize, get: bool) -> Sample {
    bench::par(n, TASKS, move |task, _| {
        let c = c.clone();
        async move {
            let path = format!("/bench-raw/par/k{task}");
            if get {
                c.get_data(&path).await.unwrap();
            } else {
                c.set_data(&path, &VALUE, None).await.unwrap();
            }
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let n = bench::env_usize("KV_BENCH_N", 8000);
    let Some((ep, _server)) = bench::endpoint_or_start(
        "KV_ZK_ENDPOINTS",
        kv_testkit::zookeeper::ZkServer::start(),
        |s| s.endpoint(),
    )
    .await
    else {
        eprintln!("zookeeper not installed; benchmark not run");
        return;
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
    for i in 0..100 {
        let _ = raw
            .create(&format!("/bench-raw/seq/k{i}"), &VALUE, &opts)
            .await;
        store
            .put(&format!("seq/k{i}"), &VALUE, PutOptions::default())
            .await
            .unwrap();
    }
    for i in 0..TASKS {
        let _ = raw
            .create(&format!("/bench-raw/par/k{i}"), &VALUE, &opts)
            .await;
        store
            .put(&format!("par/k{i}"), &VALUE, PutOptions::default())
            .await
            .unwrap();
    }
    // Warm up both paths.
    kv_seq(&store, 200, false).await;
    raw_seq(&raw, 200, false).await;

    println!("kv-zookeeper vs zookeeper-client, N = {n}, server {ep}");
    let report = Report::new(
        Layout::Aligned { name_width: 28 },
        ["operation", "kv ops/s", "raw ops/s", "kv/raw"],
    );
    report.print_header();
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
        let samples = bench::alternate(
            ROUNDS,
            || async {
                if par {
                    kv_par(store.clone(), m, get).await
                } else {
                    kv_seq(&store, m, get).await
                }
            },
            || async {
                if par {
                    raw_par(raw.clone(), m, get).await
                } else {
                    raw_seq(&raw, m, get).await
                }
            },
        )
        .await;
        let (k, r) = samples.overall_rates();
        report.row(name, k, r, &[]);
    }
    let _ = store.delete_tree("").await;
    store.close().await.unwrap();
}
