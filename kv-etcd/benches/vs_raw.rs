//! kv-etcd versus raw etcd-client: sequential and 64-task concurrent put/get of 100-byte
//! values. Uses `KV_ETCD_ENDPOINTS` if set, else starts its own etcd (kv_testkit).
//! `KV_BENCH_N` operations per measurement (default 2000); each figure is the best of
//! `KV_BENCH_ROUNDS` (default 5) rounds, kv and raw alternating (also printed: the median of
//! the per-round ratios).
//!
//! Run: `cargo bench -p kv-etcd --bench vs_raw`

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;
use kv_core::{PutOptions, Store};
use kv_etcd::EtcdStore;

const TASKS: usize = 64;

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; no other preconditions.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
}

async fn kv_run(
    store: &Arc<EtcdStore>,
    op: Op,
    n: usize,
    tasks: usize,
    value: &Arc<Vec<u8>>,
) -> Duration {
    let start = Instant::now();
    let per = n / tasks;
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let store = store.clone();
        let value = value.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per {
                let key = format!("bench/{t}/{i}");
                match op {
                    Op::Put => {
                        store
                            .put(&key, &value, PutOptions::default())
                            .await
                            .unwrap();
                    }
                    Op::Get => {
                        store.get(&key).await.unwrap();
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed()
}

async fn raw_run(
    client: &Client,
    op: Op,
    n: usize,
    tasks: usize,
    value: &Arc<Vec<u8>>,
) -> Duration {
    let start = Instant::now();
    let per = n / tasks;
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let mut kv = client.kv_client();
        let value = value.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per {
                let key = format!("raw/bench/{t}/{i}");
                match op {
                    Op::Put => {
                        kv.put(key, value.as_slice(), None).await.unwrap();
                    }
                    Op::Get => {
                        let r = kv.get(key, None).await.unwrap();
                        assert_eq!(r.kvs().len(), 1);
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n = env_usize("KV_BENCH_N", 2000);
        let rounds = env_usize("KV_BENCH_ROUNDS", 5).max(1);
        let mut _server = None;
        let endpoint = match std::env::var("KV_ETCD_ENDPOINTS") {
            Ok(e) => e.split(',').next().unwrap_or_default().to_string(),
            Err(_) => {
                let Some(s) = kv_testkit::etcd::EtcdServer::start().await else {
                    return;
                };
                let e = s.endpoint();
                _server = Some(s);
                e
            }
        };
        let store = Arc::new(
            EtcdStore::from_url(&format!("etcd://{endpoint}"))
                .await
                .expect("connect kv"),
        );
        let client = Client::connect([format!("http://{endpoint}")], None)
            .await
            .expect("connect raw");
        let value = Arc::new(vec![b'x'; 100]);
        println!("etcd at {endpoint}: N = {n} ops per measurement, best of {rounds} rounds, 100-byte values");
        println!("| workload | kv ops/s (best) | raw ops/s (best) | kv / raw (best) | kv / raw (median of rounds) | kv client CPU µs/op | raw client CPU µs/op |");
        println!("|---|---|---|---|---|---|---|");
        for (name, op, tasks) in [
            ("sequential put", Op::Put, 1),
            ("sequential get", Op::Get, 1),
            ("64-task put", Op::Put, TASKS),
            ("64-task get", Op::Get, TASKS),
        ] {
            let n = if tasks == 1 { n } else { (n / tasks).max(1) * tasks };
            let mut kv_best = Duration::MAX;
            let mut raw_best = Duration::MAX;
            let mut ratios = Vec::with_capacity(rounds);
            let (mut kv_cpu, mut raw_cpu) = (Duration::ZERO, Duration::ZERO);
            for r in 0..rounds {
                // Alternate who goes first so drift in machine load hits both sides.
                let (kv_t, raw_t) = if r % 2 == 0 {
                    let c = cpu_time();
                    let k = kv_run(&store, op, n, tasks, &value).await;
                    kv_cpu += cpu_time() - c;
                    let c = cpu_time();
                    let w = raw_run(&client, op, n, tasks, &value).await;
                    raw_cpu += cpu_time() - c;
                    (k, w)
                } else {
                    let c = cpu_time();
                    let w = raw_run(&client, op, n, tasks, &value).await;
                    raw_cpu += cpu_time() - c;
                    let c = cpu_time();
                    let k = kv_run(&store, op, n, tasks, &value).await;
                    kv_cpu += cpu_time() - c;
                    (k, w)
                };
                kv_best = kv_best.min(kv_t);
                raw_best = raw_best.min(raw_t);
                ratios.push(raw_t.as_secs_f64() / kv_t.as_secs_f64());
            }
            ratios.sort_by(|a, b| a.total_cmp(b));
            let median = ratios[ratios.len() / 2];
            let kv_rate = n as f64 / kv_best.as_secs_f64();
            let raw_rate = n as f64 / raw_best.as_secs_f64();
            let per_op = |d: Duration| d.as_secs_f64() * 1e6 / (n * rounds) as f64;
            println!(
                "| {name} | {kv_rate:.0} | {raw_rate:.0} | {:.2} | {median:.2} | {:.1} | {:.1} |",
                kv_rate / raw_rate,
                per_op(kv_cpu),
                per_op(raw_cpu)
            );
        }
        store.delete_tree("bench").await.ok();
        store.close().await.ok();
    });
}
