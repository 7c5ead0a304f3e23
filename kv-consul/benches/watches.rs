//! Watches at scale on one handle: W key watches on W keys (W = 1,000 and 10,000, or
//! `KV_BENCH_WATCHES=1000,10000`), then 1,000 puts spread over the keys from a second handle.
//!
//! Prints per W: the open rate (sequential `watch` + first item), VmRSS before and after
//! opening and VmHWM (peak) from /proc/self/status, RSS per watch, put→event p50/p99 (from
//! the put's start to the event's arrival), puts delivered, error items, duplicate items, and
//! the most TCP connections to the agent the watching handle's watch pool held at once
//! (sampled every 5 ms from /proc/net/tcp, this process's sockets whose local port the
//! pool opened), next to all of this process's connections to the agent (both handles).
//! Uses `KV_CONSUL_ADDR` if set (an agent on 127.0.0.1), else starts its own agent;
//! `KV_BENCH_POOL` sets `watch_pool` (default 16).
//!
//! Run: `cargo bench -p kv-consul --bench watches`

#[path = "../tests/common/conns.rs"]
mod conns;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kv_consul::ConsulStore;
use kv_core::{PutOptions, Store};
use kv_testkit::bench;

const PUTS: usize = 1000;

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The largest (pool, all) connection counts to the agent port seen until `stop` is set.
fn sampler(
    port: u16,
    store: ConsulStore,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let (mut pool_max, mut all_max) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let all = conns::connections_to(port);
            let pool: HashSet<u16> = store.watch_pool_ports().into_iter().collect();
            pool_max = pool_max.max(all.intersection(&pool).count());
            all_max = all_max.max(all.len());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (pool_max, all_max)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run(addr: &str, port: u16, w: usize, pool: usize) -> String {
    let url = format!("consul://{addr}/bench-watches-{w}?watch_pool={pool}&timeout=10s");
    let watcher = ConsulStore::from_url(&url).await.unwrap();
    let putter = ConsulStore::from_url(&url).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let conns = sampler(port, watcher.clone(), stop.clone());
    let key = |i: usize| format!("w/{i:05}");

    let (rss0, _) = rss_kib();
    let t0 = Instant::now();
    let mut streams = Vec::with_capacity(w);
    let mut first_errors = 0;
    for i in 0..w {
        let mut s = match watcher.watch(&key(i)).await {
            Ok(s) => s,
            Err(e) => {
                first_errors += 1;
                eprintln!("watch {i}: {e}");
                continue;
            }
        };
        match tokio::time::timeout(Duration::from_secs(30), s.next()).await {
            Ok(Some(Ok(None))) => {}
            other => {
                first_errors += 1;
                eprintln!("watch {i}: first item {other:?}");
            }
        }
        streams.push(s.map(move |item| (i, item)));
    }
    let open_rate = w as f64 / t0.elapsed().as_secs_f64();
    let (rss1, hwm1) = rss_kib();

    // One consumer for every stream: arrival time of each (watch, version) and error items.
    type Arrivals = std::sync::Mutex<HashMap<(usize, u64), (Instant, usize)>>;
    let arrived: Arc<Arrivals> = Default::default();
    let notify = Arc::new(tokio::sync::Notify::new());
    let errors = Arc::new(AtomicUsize::new(0));
    let absent = Arc::new(AtomicUsize::new(0));
    let consumer = {
        let (arrived, notify) = (arrived.clone(), notify.clone());
        let (errors, absent) = (errors.clone(), absent.clone());
        let mut all = futures::stream::select_all(streams);
        tokio::spawn(async move {
            while let Some((i, item)) = all.next().await {
                let at = Instant::now();
                match item {
                    Ok(Some(p)) => {
                        arrived
                            .lock()
                            .unwrap()
                            .entry((i, p.version))
                            .or_insert((at, 0))
                            .1 += 1;
                        notify.notify_waiters();
                    }
                    Ok(None) => {
                        absent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("watch {i}: error item {e}");
                    }
                }
            }
        })
    };
    let delivered = |i: usize, v: u64| arrived.lock().unwrap().contains_key(&(i, v));
    // Put keys spread over the W keys (distinct keys while W ≥ PUTS).
    let step = (w / PUTS).max(1);
    let mut puts = Vec::with_capacity(PUTS);
    for n in 0..PUTS {
        let i = (n * step) % w;
        let start = Instant::now();
        let p = putter
            .put(&key(i), format!("{n}").as_bytes(), PutOptions::default())
            .await
            .unwrap();
        puts.push((i, p.version, start));
        if w < PUTS {
            // The same key again later: wait for this event so every put is its own state.
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let n = notify.notified();
                    if delivered(i, p.version) {
                        break;
                    }
                    n.await;
                }
            })
            .await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let _ = tokio::time::timeout_at(deadline, async {
        while !puts.iter().all(|&(i, v, _)| delivered(i, v)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut latencies = Vec::new();
    let mut duplicates = 0;
    {
        let arrived = arrived.lock().unwrap();
        for &(i, v, start) in &puts {
            if let Some(&(at, count)) = arrived.get(&(i, v)) {
                latencies.push(at.saturating_duration_since(start));
                duplicates += count - 1;
            }
        }
        let known: HashSet<(usize, u64)> = puts.iter().map(|&(i, v, _)| (i, v)).collect();
        duplicates += arrived.keys().filter(|k| !known.contains(k)).count();
    }
    consumer.abort();
    let errors = errors.load(Ordering::Relaxed);
    let duplicates = duplicates + absent.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (pool_conns, all_conns) = conns.await.unwrap();
    let (_, hwm2) = rss_kib();
    latencies.sort();
    watcher.close().await.unwrap();
    putter.close().await.unwrap();
    format!(
        "| {w} | {pool} | {open_rate:.0} | {first_errors} | {:.1} → {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {}/{PUTS} | {errors} | {duplicates} | {pool_conns} | {all_conns} |",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        hwm1.max(hwm2) as f64 / 1024.0,
        (rss1.saturating_sub(rss0)) as f64 / w as f64,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len(),
    )
}

#[tokio::main]
async fn main() {
    let pool = bench::env_usize("KV_BENCH_POOL", kv_consul::DEFAULT_WATCH_POOL);
    let sizes: Vec<usize> = std::env::var("KV_BENCH_WATCHES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
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
    let port: u16 = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    println!(
        "Consul at {addr}: W key watches on one handle, then {PUTS} puts from a second handle"
    );
    println!("| W | watch_pool | opened/s | first-item errors | RSS before → after open (MiB) | peak RSS (MiB) | RSS per watch (KiB) | put→event p50 (ms) | p99 (ms) | delivered | error items | duplicate items | pool connections (max) | all connections to the agent (max) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for w in sizes {
        println!("{}", run(&addr, port, w, pool).await);
    }
}
