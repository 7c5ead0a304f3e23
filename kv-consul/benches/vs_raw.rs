//! kv-consul versus plain HTTP requests (a reqwest client with the same settings) to the same
//! Consul agent: sequential and 64-task concurrent put of new keys, put over existing keys, get
//! and delete of 100-byte values. Uses `KV_CONSUL_ADDR` if set (an agent on 127.0.0.1), else
//! starts its own agent (kv_testkit). `KV_BENCH_N` operations per measurement (default 2000;
//! `KV_BENCH_ONLY` picks workloads by name, and a delete row needs its new-key row); each figure is the best of `KV_BENCH_ROUNDS` (default 5) rounds, kv and raw alternating
//! (also printed: the median of the per-round ratios, the client process's CPU time per
//! operation, and for writes the raft entries per call: the agent's raft `last_log_index`
//! read around every run; reads make no raft entry and show `–`).
//!
//! Raw put is `PUT /v1/kv/<key>` (answer `true`), raw get is `GET /v1/kv/<key>` with the JSON
//! and base64 decoded, raw delete is `DELETE /v1/kv/<key>`. kv writes through `/v1/txn` (the
//! only write that returns the new `ModifyIndex`), so two extra rows compare kv's put with a
//! raw one-operation `/v1/txn` write. Every written value differs from the last (Consul skips
//! writes that change nothing).
//!
//! Run: `cargo bench -p kv-consul --bench vs_raw`

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use kv_consul::ConsulStore;
use kv_core::{PutOptions, Store};
use kv_testkit::bench::{self, Report, Sample};

const TASKS: usize = 64;

/// A 100-byte value that differs on every call.
fn value() -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut v = format!("{:020}", N.fetch_add(1, Ordering::Relaxed)).into_bytes();
    v.resize(100, b'v');
    v
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    /// Put of a key nobody wrote before.
    PutNew,
    /// Put over an existing key.
    Put,
    Get,
    /// Delete of a key a `PutNew` run created.
    Delete,
    /// Raw side: the one-operation `/v1/txn` write kv sends for a put (existing key).
    TxnPut,
}

/// New keys and deletes walk one sequence of fresh keys per side (deletes consume them in
/// creation order); the other workloads use 50 keys per task.
#[derive(Default)]
struct Keys {
    created: AtomicUsize,
    deleted: AtomicUsize,
}

impl Keys {
    fn next(&self, op: Op, t: usize, i: usize) -> String {
        match op {
            Op::PutNew => format!("new/{}", self.created.fetch_add(1, Ordering::Relaxed)),
            Op::Delete => format!("new/{}", self.deleted.fetch_add(1, Ordering::Relaxed)),
            _ => format!("{t}/{}", i % 50),
        }
    }
}

struct Raw {
    client: reqwest::Client,
    base: String,
}

impl Raw {
    async fn put(&self, key: &str) {
        let r = self
            .client
            .put(format!("{}/v1/kv/{key}", self.base))
            .body(value())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        assert_eq!(&r.bytes().await.unwrap()[..], b"true");
    }

    async fn txn_put(&self, key: &str) {
        let body = format!(
            r#"[{{"KV":{{"Verb":"set","Key":"{key}","Value":"{}","Flags":1}}}}]"#,
            base64::engine::general_purpose::STANDARD.encode(value())
        );
        let r = self
            .client
            .put(format!("{}/v1/txn", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert!(v["Results"][0]["KV"]["ModifyIndex"].as_u64().unwrap() > 0);
    }

    async fn delete(&self, key: &str) {
        let r = self
            .client
            .delete(format!("{}/v1/kv/{key}", self.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        assert_eq!(&r.bytes().await.unwrap()[..], b"true");
    }

    async fn get(&self, key: &str) {
        let r = self
            .client
            .get(format!("{}/v1/kv/{key}", self.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        let b64 = v[0]["Value"].as_str().unwrap_or_default();
        let value = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(value.len(), 100);
    }
}

async fn kv_run(
    store: &Arc<ConsulStore>,
    keys: &Arc<Keys>,
    op: Op,
    n: usize,
    tasks: usize,
) -> Sample {
    let (store, keys) = (store.clone(), keys.clone());
    bench::par(n, tasks, move |t, i| {
        let store = store.clone();
        let key = format!("kv/{}", keys.next(op, t, i));
        async move {
            match op {
                Op::Delete => store.delete(&key).await.unwrap(),
                Op::PutNew | Op::Put | Op::TxnPut => {
                    store
                        .put(&key, &value(), PutOptions::default())
                        .await
                        .unwrap();
                }
                Op::Get => {
                    assert_eq!(store.get(&key).await.unwrap().value.len(), 100);
                }
            }
        }
    })
    .await
}

async fn raw_run(raw: &Arc<Raw>, keys: &Arc<Keys>, op: Op, n: usize, tasks: usize) -> Sample {
    let (raw, keys) = (raw.clone(), keys.clone());
    bench::par(n, tasks, move |t, i| {
        let raw = raw.clone();
        let key = format!("bench-vs-raw/raw/{}", keys.next(op, t, i));
        async move {
            match op {
                Op::PutNew | Op::Put => raw.put(&key).await,
                Op::Delete => raw.delete(&key).await,
                Op::TxnPut => raw.txn_put(&key).await,
                Op::Get => raw.get(&key).await,
            }
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let n = bench::env_usize("KV_BENCH_N", 2000);
    let rounds = bench::env_usize("KV_BENCH_ROUNDS", 5).max(1);
    let Some((addrs, _server)) = bench::endpoint_or_start(
        "KV_CONSUL_ADDR",
        kv_testkit::consul::Consul::start(Default::default()),
        |c| c.addr(),
    )
    .await
    else {
        return;
    };
    let addr = addrs.split(',').next().unwrap_or_default().to_string();
    let store = Arc::new(
        ConsulStore::from_url(&format!("consul://{addr}/bench-vs-raw"))
            .await
            .expect("connect kv"),
    );
    // The client settings kv-consul uses.
    let raw = Arc::new(Raw {
        client: reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .unwrap(),
        base: format!("http://{addr}"),
    });
    let version = {
        let r = raw
            .client
            .get(format!("{}/v1/agent/self", raw.base))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or_default();
        v["Config"]["Version"].as_str().unwrap_or("?").to_string()
    };
    // The keys the get workloads read.
    let (kv_keys, raw_keys) = (Arc::new(Keys::default()), Arc::new(Keys::default()));
    kv_run(&store, &kv_keys, Op::Put, TASKS * 50, TASKS).await;
    raw_run(&raw, &raw_keys, Op::Put, TASKS * 50, TASKS).await;

    println!(
        "Consul {version} at {addr}: N = {n} ops per measurement, best of {rounds} rounds, 100-byte values"
    );
    let report = Report::best_of_rounds();
    report.print_header();
    // Raft entries for writes; reads make none, so they are not counted.
    let addr = addr.as_str();
    let count = move |op: Op| {
        move || {
            if op == Op::Get {
                None
            } else {
                kv_testkit::consul::raft_last_index(addr)
            }
        }
    };
    for (name, op, tasks) in [
        ("sequential put, new key", Op::PutNew, 1),
        ("sequential put, overwrite", Op::Put, 1),
        ("sequential get", Op::Get, 1),
        ("sequential delete", Op::Delete, 1),
        ("64-task put, new key", Op::PutNew, TASKS),
        ("64-task put, overwrite", Op::Put, TASKS),
        ("64-task get", Op::Get, TASKS),
        ("64-task delete", Op::Delete, TASKS),
        ("sequential put, overwrite (raw: /v1/txn)", Op::TxnPut, 1),
        ("64-task put, overwrite (raw: /v1/txn)", Op::TxnPut, TASKS),
    ] {
        if !bench::selected(name) {
            continue;
        }
        let n = bench::round_to_tasks(n, tasks);
        let samples = bench::alternate(
            rounds,
            || bench::counted(count(op), kv_run(&store, &kv_keys, op, n, tasks)),
            || bench::counted(count(op), raw_run(&raw, &raw_keys, op, n, tasks)),
        )
        .await;
        report.best_of_rounds_row(name, &samples);
    }
    store.delete_tree("").await.ok();
    store.close().await.ok();
}
