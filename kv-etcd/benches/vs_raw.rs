//! kv-etcd versus raw etcd-client: sequential and 64-task concurrent put of new keys, put over
//! existing keys, get and delete of 100-byte values. Gets compare like with like: **get
//! (linearizable)** is kv's default get against etcd-client's default (linearizable) range
//! request, **get (stale)** is a kv store opened with `consistency=stale` against a
//! serializable range request (`GetOptions::with_serializable`). Uses `KV_ETCD_ENDPOINTS` if set (a member
//! on 127.0.0.1: its `/metrics` is read), else starts its own etcd (kv_testkit).
//! `KV_BENCH_N` operations per measurement (default 500; `KV_BENCH_PAR_N`, default 4 × that,
//! with 64 tasks; `KV_BENCH_ONLY` picks workloads by
//! name, and a delete row needs its new-key row); each figure is the best of
//! `KV_BENCH_ROUNDS` (default 41) rounds, kv and raw alternating (also printed: the median of
//! the per-round ratios, client CPU per call, and requests per call as the server counted them:
//! `grpc_server_started_total{grpc_type="unary"}` of its `/metrics`, read around every run).
//!
//! `KV_BENCH_RAW_OPTIONS=kv` connects the raw client with kv-etcd's connect options (HTTP/2
//! keep-alive pings every 10 s, `hasleader` metadata on every request) instead of etcd-client's
//! defaults, to separate what those options cost from what kv's own code costs.
//!
//! Run: `cargo bench -p kv-etcd --bench vs_raw`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use kv_core::{PutOptions, Store};
use kv_etcd::EtcdStore;
use kv_testkit::bench::{self, Report, Sample};

const TASKS: usize = 64;

static VALUE: [u8; 100] = [b'x'; 100];

#[derive(Clone, Copy, PartialEq)]
enum Op {
    /// Put of a key nobody wrote before.
    PutNew,
    /// Put over an existing key.
    Overwrite,
    /// Linearizable get: kv's default, raw etcd-client's default range request.
    Get,
    /// Stale get: kv with `consistency=stale`, raw serializable range request.
    GetStale,
    /// Delete of a key a `PutNew` run created.
    Delete,
}

/// New keys and deletes walk one sequence of fresh keys per side (deletes consume them in
/// creation order); overwrites and gets use the keys `bench/old/{t}/{i % 50}` of the setup.
#[derive(Default)]
struct Keys {
    created: AtomicUsize,
    deleted: AtomicUsize,
}

impl Keys {
    fn next(&self, op: Op, t: usize, i: usize) -> String {
        match op {
            Op::PutNew => format!("bench/new/{}", self.created.fetch_add(1, Ordering::Relaxed)),
            Op::Delete => format!("bench/new/{}", self.deleted.fetch_add(1, Ordering::Relaxed)),
            Op::Overwrite | Op::Get | Op::GetStale => format!("bench/old/{t}/{}", i % 50),
        }
    }
}

/// The two kv stores of the bench, on the same member: one with kv's default (linearizable)
/// reads, one opened with `consistency=stale`.
struct Stores {
    linearizable: Arc<EtcdStore>,
    stale: Arc<EtcdStore>,
}

async fn kv_run(stores: &Stores, keys: &Arc<Keys>, op: Op, n: usize, tasks: usize) -> Sample {
    let store = match op {
        Op::GetStale => stores.stale.clone(),
        _ => stores.linearizable.clone(),
    };
    let keys = keys.clone();
    bench::par(n, tasks, move |t, i| {
        let store = store.clone();
        let key = keys.next(op, t, i);
        async move {
            match op {
                Op::PutNew | Op::Overwrite => {
                    store
                        .put(&key, &VALUE, PutOptions::default())
                        .await
                        .unwrap();
                }
                Op::Get | Op::GetStale => {
                    store.get(&key).await.unwrap();
                }
                Op::Delete => store.delete(&key).await.unwrap(),
            }
        }
    })
    .await
}

async fn raw_run(client: &Client, keys: &Arc<Keys>, op: Op, n: usize, tasks: usize) -> Sample {
    let (client, keys) = (client.clone(), keys.clone());
    bench::par(n, tasks, move |t, i| {
        let mut kv = client.kv_client();
        let key = format!("raw/{}", keys.next(op, t, i));
        async move {
            match op {
                Op::PutNew | Op::Overwrite => {
                    kv.put(key, VALUE.as_slice(), None).await.unwrap();
                }
                Op::Get | Op::GetStale => {
                    let opts = (op == Op::GetStale).then(|| GetOptions::new().with_serializable());
                    let r = kv.get(key, opts).await.unwrap();
                    assert_eq!(r.kvs().len(), 1);
                }
                Op::Delete => {
                    let r = kv.delete(key, None).await.unwrap();
                    assert_eq!(r.deleted(), 1);
                }
            }
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let n = bench::ops_per_run(500, 1);
    let rounds = bench::rounds();
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
    let stores = Stores {
        linearizable: store.clone(),
        stale: Arc::new(
            EtcdStore::from_url(&format!("etcd://{endpoint}?consistency=stale"))
                .await
                .expect("connect kv (stale)"),
        ),
    };
    // `KV_BENCH_RAW_OPTIONS=kv`: the raw client connects with kv-etcd's options (HTTP/2
    // keep-alive pings, `hasleader` on every request); by default with etcd-client's.
    let raw_options = (std::env::var("KV_BENCH_RAW_OPTIONS").as_deref() == Ok("kv")).then(|| {
        ConnectOptions::new()
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(false)
            .with_require_leader(true)
    });
    let client = Client::connect([format!("http://{endpoint}")], raw_options.clone())
        .await
        .expect("connect raw");
    let (kv_keys, raw_keys) = (Arc::new(Keys::default()), Arc::new(Keys::default()));
    // The keys overwrites and gets use (50 per task), and a warm-up.
    for tasks in [1, TASKS] {
        kv_run(&stores, &kv_keys, Op::Overwrite, 50 * tasks, tasks).await;
        raw_run(&client, &raw_keys, Op::Overwrite, 50 * tasks, tasks).await;
    }
    println!(
        "etcd at {endpoint}: N = {n} ops per measurement ({} with {TASKS} tasks), {rounds} rounds, 100-byte values; \
         requests/op from the server's grpc_server_started_total (unary); raw client options: {}",
        bench::ops_per_run(500, TASKS),
        if raw_options.is_some() { "kv-etcd's (keep-alive, require leader)" } else { "etcd-client's defaults" }
    );
    let report = Report::best_of_rounds();
    report.print_header();
    let count = || kv_testkit::etcd::unary_requests(endpoint);
    for (name, op, tasks) in [
        ("sequential put, new key", Op::PutNew, 1),
        ("sequential put, overwrite", Op::Overwrite, 1),
        ("sequential get (linearizable)", Op::Get, 1),
        ("sequential get (stale)", Op::GetStale, 1),
        ("sequential delete", Op::Delete, 1),
        ("64-task put, new key", Op::PutNew, TASKS),
        ("64-task put, overwrite", Op::Overwrite, TASKS),
        ("64-task get (linearizable)", Op::Get, TASKS),
        ("64-task get (stale)", Op::GetStale, TASKS),
        ("64-task delete", Op::Delete, TASKS),
    ] {
        if !bench::selected(name) {
            continue;
        }
        let n = bench::ops_per_run(500, tasks);
        let samples = bench::alternate(
            rounds,
            || bench::counted(count, kv_run(&stores, &kv_keys, op, n, tasks)),
            || bench::counted(count, raw_run(&client, &raw_keys, op, n, tasks)),
        )
        .await;
        report.best_of_rounds_row(name, &samples);
    }
    store.delete_tree("bench").await.ok();
    store.delete_tree("raw").await.ok();
    stores.stale.close().await.ok();
    store.close().await.ok();
}
