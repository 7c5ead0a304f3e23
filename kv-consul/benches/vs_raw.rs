//! kv-consul versus plain HTTP requests (a reqwest client with the same settings) to the same
//! Consul agent: sequential and 64-task concurrent put of new keys, put over existing keys, get
//! and delete of 100-byte values. Uses `KV_CONSUL_ADDR` if set (an agent on 127.0.0.1), else
//! starts its own agent (kv_testkit). `KV_BENCH_N` operations per measurement (default 500;
//! `KV_BENCH_PAR_N`, default 4 × that, with 64 tasks; `KV_BENCH_ONLY` picks workloads by name,
//! and a delete row needs its new-key row); each figure is the best of `KV_BENCH_ROUNDS`
//! (default 41) rounds, kv and raw alternating
//! (also printed: the median of the per-round ratios, the client process's CPU time per
//! operation, and for writes the raft entries per call: the agent's raft `last_log_index`
//! read around every run).
//!
//! Gets compare like with like: **get (linearizable)** is kv's default get (`?consistent`)
//! against a raw `GET /v1/kv/<key>?consistent`, **get (stale)** is a kv store opened with
//! `consistency=stale` (`?stale`) against a raw `GET /v1/kv/<key>?stale`. Reads make no raft
//! entry; their requests per call are the agent's own count of `GET /v1/kv` requests
//! (`consul.http.GET.v1.kv._` of `/v1/agent/metrics`), and the leader checks per call
//! (`consul.raft.verify_leader`) are printed after the table. Consul keeps those metrics per
//! 10-second interval, not as running totals, so they are measured by a separate counted pass
//! per side and mode (2000 sequential calls inside one interval, read once it has closed), not
//! around the timed rounds.
//!
//! Raw put is `PUT /v1/kv/<key>` (answer `true`), raw get is `GET /v1/kv/<key>` with the JSON
//! and base64 decoded, raw delete is `DELETE /v1/kv/<key>`. kv writes through `/v1/txn` (the
//! only write that returns the new `ModifyIndex`), so two extra rows compare kv's put with a
//! raw one-operation `/v1/txn` write, and the `(raw: /v1/txn ...)` rows of new keys and deletes
//! compare kv with the raw client sending what kv sends (a one-operation `set`; `[get,
//! delete]`, whose get makes a missing key an error). Every written value differs from the
//! last (Consul skips writes that change nothing).
//!
//! Run: `cargo bench -p kv-consul --bench vs_raw`

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Linearizable get: kv's default, raw `?consistent`.
    Get,
    /// Stale get: kv with `consistency=stale`, raw `?stale`.
    GetStale,
    /// Delete of a key a `PutNew` run created.
    Delete,
    /// Raw side: the one-operation `/v1/txn` write kv sends for a put (existing key).
    TxnPut,
    /// Raw side: the same one-operation `/v1/txn` write of a new key.
    TxnPutNew,
    /// Raw side: the `/v1/txn` `[get, delete]` kv sends for a delete (of a `TxnPutNew` key).
    TxnDelete,
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
            Op::PutNew | Op::TxnPutNew => {
                format!("new/{}", self.created.fetch_add(1, Ordering::Relaxed))
            }
            Op::Delete | Op::TxnDelete => {
                format!("new/{}", self.deleted.fetch_add(1, Ordering::Relaxed))
            }
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

    /// `PUT /v1/txn` with `body`; the decoded answer (a success status asserted).
    async fn txn(&self, body: String) -> serde_json::Value {
        let r = self
            .client
            .put(format!("{}/v1/txn", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    async fn txn_put(&self, key: &str) {
        let v = self
            .txn(format!(
                r#"[{{"KV":{{"Verb":"set","Key":"{key}","Value":"{}","Flags":1}}}}]"#,
                base64::engine::general_purpose::STANDARD.encode(value())
            ))
            .await;
        assert!(v["Results"][0]["KV"]["ModifyIndex"].as_u64().unwrap() > 0);
    }

    /// What kv sends for a delete: `[get, delete]` in one `/v1/txn` (the get fails the
    /// transaction on a missing key, which a plain DELETE would not report).
    async fn txn_delete(&self, key: &str) {
        let v = self
            .txn(format!(
                r#"[{{"KV":{{"Verb":"get","Key":"{key}"}}}},{{"KV":{{"Verb":"delete","Key":"{key}"}}}}]"#
            ))
            .await;
        assert!(v["Errors"].is_null(), "{v}");
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

    /// `GET /v1/kv/<key>?<mode>` (`consistent` or `stale`).
    async fn get(&self, key: &str, mode: &str) {
        let r = self
            .client
            .get(format!("{}/v1/kv/{key}?{mode}", self.base))
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

    /// The agent's last closed metrics interval: its start (seconds of the UTC day), the
    /// `GET /v1/kv` requests and the raft leader checks counted in it.
    async fn metrics_interval(&self) -> Option<(u64, u64, u64)> {
        let r = self
            .client
            .get(format!("{}/v1/agent/metrics", self.base))
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
        // "2026-12-01 10:55:50 +0000 UTC"
        let hms: Vec<u64> = v["Timestamp"]
            .as_str()?
            .get(11..19)?
            .split(':')
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let count = |kind: &str, name: &str| {
            v[kind].as_array().and_then(|ms| {
                ms.iter()
                    .find(|m| m["Name"] == name)
                    .and_then(|m| m["Count"].as_u64())
            })
        };
        Some((
            hms[0] * 3600 + hms[1] * 60 + hms[2],
            count("Samples", "consul.http.GET.v1.kv._").unwrap_or(0),
            count("Counters", "consul.raft.verify_leader").unwrap_or(0),
        ))
    }

    /// Requests per call the agent counts for `run` (`calls` calls): `(GET /v1/kv requests,
    /// leader checks)`. `run` goes at the start of one of the agent's 10-second metrics
    /// intervals, and the counts are read once that interval has closed; `(NaN, NaN)` when
    /// the metrics cannot be read or `run` does not fit in one interval (3 tries).
    async fn counted_reads<F, Fut>(&self, calls: usize, mut run: F) -> (f64, f64)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Sample>,
    {
        const INTERVAL: f64 = 10.0;
        let now = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        for _ in 0..3 {
            let into = now() % INTERVAL;
            if into > 1.0 {
                tokio::time::sleep(Duration::from_secs_f64(INTERVAL - into + 0.05)).await;
            }
            let start = (now() / INTERVAL).floor() * INTERVAL;
            let ops = run().await.ops;
            assert_eq!(ops, calls);
            if now() >= start + INTERVAL {
                continue;
            }
            tokio::time::sleep(Duration::from_secs_f64(start + INTERVAL + 0.3 - now())).await;
            let day_start = start as u64 % 86_400;
            for _ in 0..50 {
                match self.metrics_interval().await {
                    Some((at, gets, checks)) if at == day_start => {
                        return (gets as f64 / calls as f64, checks as f64 / calls as f64);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        (f64::NAN, f64::NAN)
    }
}

/// The two kv stores of the bench, on the same agent and prefix: one with kv's default
/// (linearizable) reads, one opened with `consistency=stale`.
struct Stores {
    linearizable: Arc<ConsulStore>,
    stale: Arc<ConsulStore>,
}

impl Stores {
    /// Opened afresh for each workload and dropped after it: the agent accepts at most 200
    /// connections per client address (`limits.http_max_conns_per_client`), and the pools of
    /// three 64-task clients kept idle between workloads come close enough to that limit for the
    /// agent to reset new connections.
    async fn open(addr: &str) -> Stores {
        let open = |options: &'static str| async move {
            Arc::new(
                ConsulStore::from_url(&format!("consul://{addr}/bench-vs-raw{options}"))
                    .await
                    .expect("connect kv"),
            )
        };
        Stores {
            linearizable: open("").await,
            stale: open("?consistency=stale").await,
        }
    }

    async fn close(self) {
        self.linearizable.close().await.ok();
        self.stale.close().await.ok();
    }
}

async fn kv_run(stores: &Stores, keys: &Arc<Keys>, op: Op, n: usize, tasks: usize) -> Sample {
    let store = match op {
        Op::GetStale => stores.stale.clone(),
        _ => stores.linearizable.clone(),
    };
    let keys = keys.clone();
    bench::par(n, tasks, move |t, i| {
        let store = store.clone();
        let key = format!("kv/{}", keys.next(op, t, i));
        async move {
            match op {
                Op::Delete | Op::TxnDelete => store.delete(&key).await.unwrap(),
                Op::PutNew | Op::Put | Op::TxnPut | Op::TxnPutNew => {
                    store
                        .put(&key, &value(), PutOptions::default())
                        .await
                        .unwrap();
                }
                Op::Get | Op::GetStale => {
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
                Op::TxnPut | Op::TxnPutNew => raw.txn_put(&key).await,
                Op::TxnDelete => raw.txn_delete(&key).await,
                Op::Get => raw.get(&key, "consistent").await,
                Op::GetStale => raw.get(&key, "stale").await,
            }
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let n = bench::ops_per_run(500, 1);
    let rounds = bench::rounds();
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
    let stores = Stores::open(&addr).await;
    kv_run(&stores, &kv_keys, Op::Put, TASKS * 50, TASKS).await;
    stores.close().await;
    raw_run(&raw, &raw_keys, Op::Put, TASKS * 50, TASKS).await;

    println!(
        "Consul {version} at {addr}: N = {n} ops per measurement ({} with {TASKS} tasks), \
         {rounds} rounds, 100-byte values",
        bench::ops_per_run(500, TASKS)
    );
    let report = Report::best_of_rounds();
    report.print_header();
    // Raft entries for writes; reads make none and are counted apart (`counted_reads`).
    let addr = addr.as_str();
    let is_read = |op: Op| op == Op::Get || op == Op::GetStale;
    let count = move |op: Op| {
        move || {
            if is_read(op) {
                None
            } else {
                kv_testkit::consul::raft_last_index(addr)
            }
        }
    };
    // Per read mode and side: (GET /v1/kv requests, leader checks) per call.
    let mut read_counts = Vec::new();
    for op in [Op::Get, Op::GetStale] {
        let calls = 2000;
        let stores = Stores::open(addr).await;
        let kv = raw
            .counted_reads(calls, || kv_run(&stores, &kv_keys, op, calls, 1))
            .await;
        stores.close().await;
        let rw = raw
            .counted_reads(calls, || raw_run(&raw, &raw_keys, op, calls, 1))
            .await;
        read_counts.push((op, kv, rw));
    }
    let reads = |op: Op| {
        let (_, kv, rw) = read_counts.iter().find(|(o, ..)| *o == op).unwrap();
        ((kv.0, rw.0), (kv.1, rw.1))
    };
    for (name, op, tasks) in [
        ("sequential put, new key", Op::PutNew, 1),
        ("sequential put, overwrite", Op::Put, 1),
        ("sequential get (linearizable)", Op::Get, 1),
        ("sequential get (stale)", Op::GetStale, 1),
        ("sequential delete", Op::Delete, 1),
        ("64-task put, new key", Op::PutNew, TASKS),
        ("64-task put, overwrite", Op::Put, TASKS),
        ("64-task get (linearizable)", Op::Get, TASKS),
        ("64-task get (stale)", Op::GetStale, TASKS),
        ("64-task delete", Op::Delete, TASKS),
        ("sequential put, overwrite (raw: /v1/txn)", Op::TxnPut, 1),
        ("64-task put, overwrite (raw: /v1/txn)", Op::TxnPut, TASKS),
        ("sequential put, new key (raw: /v1/txn)", Op::TxnPutNew, 1),
        (
            "sequential delete (raw: /v1/txn get+delete)",
            Op::TxnDelete,
            1,
        ),
        ("64-task put, new key (raw: /v1/txn)", Op::TxnPutNew, TASKS),
        (
            "64-task delete (raw: /v1/txn get+delete)",
            Op::TxnDelete,
            TASKS,
        ),
    ] {
        if !bench::selected(name) {
            continue;
        }
        let n = bench::ops_per_run(500, tasks);
        // Fresh stores (see `Stores::open`), their pool filled outside the measurement by
        // reads on the store the workload uses.
        let stores = Stores::open(addr).await;
        let warm = if op == Op::GetStale { op } else { Op::Get };
        kv_run(
            &stores,
            &kv_keys,
            warm,
            bench::round_to_tasks(TASKS, tasks),
            tasks,
        )
        .await;
        let samples = bench::alternate(
            rounds,
            || bench::counted(count(op), kv_run(&stores, &kv_keys, op, n, tasks)),
            || bench::counted(count(op), raw_run(&raw, &raw_keys, op, n, tasks)),
        )
        .await;
        if is_read(op) {
            report.best_of_rounds_row_with_requests(name, &samples, reads(op).0);
        } else {
            report.best_of_rounds_row(name, &samples);
        }
        stores.close().await;
    }
    for (name, op) in [("linearizable", Op::Get), ("stale", Op::GetStale)] {
        let ((kv_gets, raw_gets), (kv_checks, raw_checks)) = reads(op);
        println!(
            "get ({name}), counted by the agent over 2000 sequential calls: GET /v1/kv \
             requests per call kv {kv_gets:.2} / raw {raw_gets:.2}, raft leader checks \
             (consul.raft.verify_leader) per call kv {kv_checks:.2} / raw {raw_checks:.2}"
        );
    }
    let stores = Stores::open(addr).await;
    stores.linearizable.delete_tree("").await.ok();
    stores.close().await;
}
