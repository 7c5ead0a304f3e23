//! Durable puts/s with 1, 8 and 64 concurrent writers, `flush=true` and `flush=false`, 100-byte
//! values, new keys: kv-sled next to raw sled 0.34 on the same disk, in the same run.
//!
//! `cargo bench -p kv-sled --bench durable` (env: `KV_BENCH_N` writes per round, default 2000;
//! `KV_BENCH_ROUNDS`, default 3). The raw rows are what a sled user writes by hand:
//! `insert` + `flush()` (sled's flush ends in `sync_file_range`: not stable storage) and
//! `insert` + `flush()` + `fdatasync` of sled's log (what kv's `flush=true` guarantees). Raw
//! rows exist for one writer only: several threads flushing one sled database at once is what
//! deadlocks sled 0.34 (spacejam/sled #1308), which kv's single flusher avoids.

use std::fs::File;
use std::sync::Arc;

use kv_core::{PutOptions, Store};
use kv_sled::{SledConfig, SledStore};
use kv_testkit::bench::{self, Report, Sample};

const VALUE: [u8; 100] = [b'v'; 100];

/// Best of `rounds` samples of `run(round)`.
async fn best<F, Fut>(rounds: usize, mut run: F) -> f64
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Sample>,
{
    let mut best: f64 = 0.0;
    for r in 0..rounds {
        best = best.max(run(r).await.rate());
    }
    best
}

async fn kv_rate(
    store: &Arc<SledStore>,
    tag: &str,
    writers: usize,
    n: usize,
    rounds: usize,
) -> f64 {
    best(rounds, |r| {
        let (store, tag) = (store.clone(), format!("{tag}/{r}"));
        bench::par(bench::round_to_tasks(n, writers), writers, move |t, i| {
            let (store, key) = (store.clone(), format!("{tag}/{t}/{i}"));
            async move {
                store
                    .put(&key, &VALUE, PutOptions::default())
                    .await
                    .unwrap();
            }
        })
    })
    .await
}

/// One raw sled writer: `insert`, `flush`, and `fdatasync` of the log when `log` is given.
async fn raw_rate(
    db: &sled::Db,
    log: Option<Arc<File>>,
    tag: &str,
    n: usize,
    rounds: usize,
) -> f64 {
    best(rounds, |r| {
        let (db, log, tag) = (db.clone(), log.clone(), format!("{tag}/{r}"));
        bench::measure(n, async move {
            tokio::task::spawn_blocking(move || {
                for i in 0..n {
                    db.insert(format!("{tag}/{i}"), &VALUE[..]).unwrap();
                    db.flush().unwrap();
                    if let Some(log) = &log {
                        log.sync_data().unwrap();
                    }
                }
            })
            .await
            .unwrap();
        })
    })
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = bench::env_usize("KV_BENCH_N", 2000);
    let rounds = bench::env_usize("KV_BENCH_ROUNDS", 3);
    let dir = kv_testkit::temp_dir("sled-bench");
    let open = |config| async { Arc::new(SledStore::connect(config).await.unwrap()) };
    let durable = open(SledConfig::new(dir.path().join("kv"))).await;
    let lazy = open(SledConfig::new(dir.path().join("kv-lazy")).with_flush(false)).await;
    let raw_dir = dir.path().join("raw");
    let raw = sled::Config::new()
        .path(&raw_dir)
        .flush_every_ms(Some(500))
        .open()
        .unwrap();
    let raw_log = Arc::new(File::open(raw_dir.join("db")).unwrap());

    println!("{n} puts of new keys per round, 100-byte values, best of {rounds} rounds\n");
    let report = Report::markdown(["writers", "kv ops/s", "raw sled ops/s", "kv / raw"]);
    println!("### flush=true (kv: group commit + fdatasync) vs raw insert + flush + fdatasync\n");
    report.print_header();
    let mut durable_rates = Vec::new();
    for writers in [1, 8, 64] {
        let kv = kv_rate(&durable, &format!("d{writers}"), writers, n, rounds).await;
        let raw = if writers == 1 {
            raw_rate(&raw, Some(raw_log.clone()), "d1", n, rounds).await
        } else {
            f64::NAN
        };
        report.row(&writers.to_string(), kv, raw, &[]);
        durable_rates.push(kv);
    }
    let one = raw_rate(&raw, None, "f1", n, rounds).await;
    println!(
        "\nraw sled insert + flush (sync_file_range only, not stable storage), 1 writer: {one:.0} ops/s"
    );
    println!(
        "kv flush=true, 64 writers / 1 writer: {:.1}x; 8 writers / 1 writer: {:.1}x\n",
        durable_rates[2] / durable_rates[0],
        durable_rates[1] / durable_rates[0]
    );
    println!("### flush=false (kv) vs raw insert (both: sled's background flush every 500 ms)\n");
    report.print_header();
    for writers in [1, 8, 64] {
        let kv = kv_rate(&lazy, &format!("l{writers}"), writers, n, rounds).await;
        let raw_rate = best(rounds, |r| {
            let (db, tag) = (raw.clone(), format!("l{writers}/{r}"));
            bench::par(bench::round_to_tasks(n, writers), writers, move |t, i| {
                let (db, key) = (db.clone(), format!("{tag}/{t}/{i}"));
                async move {
                    db.insert(key, &VALUE[..]).unwrap();
                }
            })
        })
        .await;
        report.row(&writers.to_string(), kv, raw_rate, &[]);
    }
    durable.close().await.unwrap();
    lazy.close().await.unwrap();
}
