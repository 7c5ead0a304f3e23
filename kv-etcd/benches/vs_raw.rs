//! kv-etcd versus raw etcd-client: sequential and 64-task concurrent put/get of 100-byte
//! values. Uses `KV_ETCD_ENDPOINTS` if set, else starts its own etcd (kv_testkit).
//! `KV_BENCH_N` operations per measurement (default 2000); each figure is the best of
//! `KV_BENCH_ROUNDS` (default 5) rounds, kv and raw alternating (also printed: the median of
//! the per-round ratios).
//!
//! Run: `cargo bench -p kv-etcd --bench vs_raw`

use std::sync::Arc;

use etcd_client::Client;
use kv_core::{PutOptions, Store};
use kv_etcd::EtcdStore;
use kv_testkit::bench::{self, Report, Sample};

const TASKS: usize = 64;

static VALUE: [u8; 100] = [b'x'; 100];

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
}

async fn kv_run(store: &Arc<EtcdStore>, op: Op, n: usize, tasks: usize) -> Sample {
    let store = store.clone();
    bench::par(n, tasks, move |t, i| {
        let store = store.clone();
        async move {
            let key = format!("bench/{t}/{i}");
            match op {
                Op::Put => {
                    store
                        .put(&key, &VALUE, PutOptions::default())
                        .await
                        .unwrap();
                }
                Op::Get => {
                    store.get(&key).await.unwrap();
                }
            }
        }
    })
    .await
}

async fn raw_run(client: &Client, op: Op, n: usize, tasks: usize) -> Sample {
    let client = client.clone();
    bench::par(n, tasks, move |t, i| {
        let mut kv = client.kv_client();
        async move {
            let key = format!("raw/bench/{t}/{i}");
            match op {
                Op::Put => {
                    kv.put(key, VALUE.as_slice(), None).await.unwrap();
                }
                Op::Get => {
                    let r = kv.get(key, None).await.unwrap();
                    assert_eq!(r.kvs().len(), 1);
                }
            }
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let n = bench::env_usize("KV_BENCH_N", 2000);
    let rounds = bench::env_usize("KV_BENCH_ROUNDS", 5).max(1);
    let Some((endpoints, _server)) = bench::endpoint_or_start(
        "KV_ETCD_ENDPOINTS",
        kv_testkit::etcd::EtcdServer::start(),
        |s| s.endpoint(),
    )
    .await
    else {
        return;
    };
    let endpoint = endpoints.split(',').next().unwrap_or_default();
    let store = Arc::new(
        EtcdStore::from_url(&format!("etcd://{endpoint}"))
            .await
            .expect("connect kv"),
    );
    let client = Client::connect([format!("http://{endpoint}")], None)
        .await
        .expect("connect raw");
    println!(
        "etcd at {endpoint}: N = {n} ops per measurement, best of {rounds} rounds, 100-byte values"
    );
    let report = Report::best_of_rounds();
    report.print_header();
    for (name, op, tasks) in [
        ("sequential put", Op::Put, 1),
        ("sequential get", Op::Get, 1),
        ("64-task put", Op::Put, TASKS),
        ("64-task get", Op::Get, TASKS),
    ] {
        let n = bench::round_to_tasks(n, tasks);
        let samples = bench::alternate(
            rounds,
            || kv_run(&store, op, n, tasks),
            || raw_run(&client, op, n, tasks),
        )
        .await;
        report.best_of_rounds_row(name, &samples);
    }
    store.delete_tree("bench").await.ok();
    store.close().await.ok();
}
