//! Watches at scale: W watches on W keys on ONE handle, then puts from a second handle.
//! For each W (`KV_BENCH_W`, comma-separated, default `1000,10000`): the open rate (every
//! `watch` call returned and its first item read, `KV_BENCH_OPEN_TASKS` calls in flight,
//! default 64), the process's peak RSS (VmHWM) and its RSS growth per watch (VmRSS before the
//! handle and after the opening), then `KV_BENCH_PUTS` (default 1000) sequential puts spread
//! over the keys: put→event latency (from the put call to the item), puts delivered, error
//! items, and what the server counts for the watching handle: gRPC watch streams and watchers
//! (`etcd_debugging_mvcc_watch_stream_total` / `etcd_debugging_mvcc_watcher_total` of its
//! `/metrics`), also after the handle's streams were dropped. Uses `KV_ETCD_ENDPOINTS` if set
//! (a member on 127.0.0.1), else starts its own etcd (kv_testkit).
//!
//! Run: `cargo bench -p kv-etcd --bench watches`

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{SelectAll, StreamExt};
use kv_core::{PutOptions, Store, WatchStream};
use kv_etcd::EtcdStore;
use kv_testkit::bench;
use kv_testkit::etcd::{metric_sum, metrics};

/// How long the last put's events may take to arrive before the count is final.
const SETTLE: Duration = Duration::from_secs(30);

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Watch streams and watchers the member counts (all clients).
fn server_watches(endpoint: &str) -> (f64, f64) {
    let text = metrics(endpoint).unwrap_or_default();
    (
        metric_sum(&text, "etcd_debugging_mvcc_watch_stream_total", &[]),
        metric_sum(&text, "etcd_debugging_mvcc_watcher_total", &[]),
    )
}

/// Polls `f` until it is true or `within` passed.
async fn settle(within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() && start.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Row {
    w: usize,
    open_rate: f64,
    open_cpu_us: f64,
    first_ok: usize,
    peak_mib: f64,
    kib_per_watch: f64,
    p50_ms: f64,
    p99_ms: f64,
    delivered: usize,
    puts: usize,
    duplicates: usize,
    errors: usize,
    streams: f64,
    watchers: f64,
    left_after_drop: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

async fn run(endpoint: &str, writer: &EtcdStore, w: usize, tasks: usize, puts: usize) -> Row {
    let prefix = format!("wbench/{w}-{}", std::process::id());
    let base_server = server_watches(endpoint);
    let rss_before = status_kib("VmRSS");
    let store = Arc::new(
        EtcdStore::from_url(&format!("etcd://{endpoint}"))
            .await
            .expect("connect the watching handle"),
    );

    // Open W watches, `tasks` calls in flight; each stream's first item is read at once.
    let cpu = bench::cpu_time();
    let start = Instant::now();
    let opened: Vec<(usize, WatchStream, bool)> = futures::stream::iter(0..w)
        .map(|i| {
            let store = store.clone();
            let key = format!("{prefix}/{i}");
            async move {
                let mut s = store.watch(&key).await.expect("watch");
                let first = s.next().await;
                (i, s, matches!(first, Some(Ok(None))))
            }
        })
        .buffer_unordered(tasks)
        .collect()
        .await;
    let open_rate = w as f64 / start.elapsed().as_secs_f64();
    let open_cpu_us = (bench::cpu_time() - cpu).as_secs_f64() * 1e6 / w as f64;
    let first_ok = opened.iter().filter(|(_, _, ok)| *ok).count();
    let mut all: SelectAll<_> = SelectAll::new();
    for (i, s, _) in opened {
        all.push(s.map(move |item| (i, item)));
    }
    // Let the server-side creations finish, then count.
    let target = base_server.1 + w as f64;
    settle(Duration::from_secs(20), || {
        server_watches(endpoint).1 >= target
    })
    .await;
    let now_server = server_watches(endpoint);
    let rss_open = status_kib("VmRSS");

    // Puts from the second handle: put j writes `j` to key (j * 7919) % w.
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..puts).map(|_| AtomicU64::new(0)).collect());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let collector = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(puts);
            let mut seen = HashSet::new();
            let (mut errors, mut duplicates) = (0, 0);
            let mut done_rx = done_rx;
            let mut deadline: Option<tokio::time::Instant> = None;
            loop {
                let item = tokio::select! {
                    item = all.next() => item,
                    _ = &mut done_rx, if deadline.is_none() => {
                        deadline = Some(tokio::time::Instant::now() + SETTLE);
                        continue;
                    }
                    _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => break,
                };
                let Some((i, item)) = item else { break };
                match item {
                    Err(_) => errors += 1,
                    Ok(None) => {}
                    Ok(Some(pair)) => {
                        let j: usize = std::str::from_utf8(&pair.value)
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(usize::MAX);
                        if j >= puts || (j * 7919) % w != i {
                            continue;
                        }
                        if !seen.insert(j) {
                            duplicates += 1;
                            continue;
                        }
                        let at = base.elapsed().as_nanos() as u64;
                        let from = sent[j].load(Ordering::SeqCst);
                        latencies.push(Duration::from_nanos(at.saturating_sub(from)));
                        if seen.len() == puts {
                            break;
                        }
                    }
                }
            }
            (latencies, errors, duplicates, all)
        })
    };
    for (j, slot) in sent.iter().enumerate() {
        let key = format!("{prefix}/{}", (j * 7919) % w);
        slot.store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
        writer
            .put(&key, j.to_string().as_bytes(), PutOptions::default())
            .await
            .expect("put");
    }
    let _ = done_tx.send(());
    let (mut latencies, errors, duplicates, all) = collector.await.expect("collector");
    latencies.sort();
    let peak_mib = status_kib("VmHWM") as f64 / 1024.0;

    drop(all);
    drop(store);
    settle(Duration::from_secs(20), || {
        server_watches(endpoint).1 <= base_server.1
    })
    .await;
    let after = server_watches(endpoint);
    Row {
        w,
        open_rate,
        open_cpu_us,
        first_ok,
        peak_mib,
        kib_per_watch: rss_open.saturating_sub(rss_before) as f64 / w as f64,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        delivered: latencies.len(),
        puts,
        duplicates,
        errors,
        streams: now_server.0 - base_server.0,
        watchers: now_server.1 - base_server.1,
        left_after_drop: after.1 - base_server.1,
    }
}

#[tokio::main]
async fn main() {
    let ws: Vec<usize> = std::env::var("KV_BENCH_W")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let tasks = bench::env_usize("KV_BENCH_OPEN_TASKS", 64).max(1);
    let puts = bench::env_usize("KV_BENCH_PUTS", 1000);
    let Some((endpoints, _server)) = bench::endpoint_or_start(
        "KV_ETCD_ENDPOINTS",
        kv_testkit::etcd::EtcdServer::start(),
        |s| s.endpoint(),
    )
    .await
    else {
        return;
    };
    let endpoint = endpoints.split(',').next().unwrap_or_default().to_string();
    let writer = EtcdStore::from_url(&format!("etcd://{endpoint}"))
        .await
        .expect("connect the writing handle");
    println!(
        "etcd at {endpoint}: W watches on W keys on one handle ({tasks} watch calls in flight), \
         then {puts} puts from a second handle"
    );
    println!(
        "| W | open/s | client CPU µs/open | first items Ok | peak RSS MiB | RSS/watch KiB | put→event p50 ms | p99 ms \
         | delivered | duplicates | error items | watch streams | server watchers | watchers left after drop |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for w in ws {
        let r = run(&endpoint, &writer, w, tasks, puts).await;
        println!(
            "| {} | {:.0} | {:.1} | {}/{} | {:.1} | {:.2} | {:.2} | {:.2} | {}/{} | {} | {} | {} | {} | {} |",
            r.w,
            r.open_rate,
            r.open_cpu_us,
            r.first_ok,
            r.w,
            r.peak_mib,
            r.kib_per_watch,
            r.p50_ms,
            r.p99_ms,
            r.delivered,
            r.puts,
            r.duplicates,
            r.errors,
            r.streams,
            r.watchers,
            r.left_after_drop
        );
    }
}
