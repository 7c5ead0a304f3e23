//! Watches at scale: W key watches on ONE store handle, then 1,000 puts from a second handle.
//!
//! `cargo bench -p kv-zookeeper --bench watches` — uses `KV_ZK_ENDPOINTS` if set (a server on
//! 127.0.0.1), else starts a server through kv_testkit. `KV_BENCH_WATCHES` (default
//! `1000,10000`) lists the W to measure, `KV_BENCH_TASKS` (default `1,64`) how many tasks open
//! the watches (1: one `watch` call after the other; 64: 64 tasks opening concurrently). Each
//! (W, tasks) runs in its own child process (this binary again), so peak RSS is that run's.
//!
//! Per run: the W keys `k0..` exist (written first, 100-byte values); the watching handle opens
//! W watches (open rate); every first item must be `Ok` with the key's pair; then 1,000
//! sequential puts spread over the keys (one each, distinct keys) from the second handle;
//! put→event latency (put sent → the watcher's item with the new value), puts delivered,
//! error items, duplicates (an item for a key that was not put), TCP connections of the
//! watching handle to the server (sockets of this process on the server port, less the writer's
//! one), the server's watch count (`wchs`) with the watches open and after they were dropped,
//! and VmRSS / VmHWM from /proc/self/status.
//!
//! `KV_BENCH_STALE=1`: both handles read with `consistency=stale` (no `sync` before a watch's
//! first read). `KV_BENCH_RAW=1`: instead, zookeeper-client alone opens the W watches the way kv did before
//! the shared watch (`addWatch` + `sync` + `getData` per key, one key after the other) and the
//! line printed is its open rate and RSS per watch (the client library's own cost per watch).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kv_core::{PutOptions, Store, WatchStream};
use kv_testkit::bench;
use kv_testkit::zookeeper::four_letter;
use kv_zookeeper::{ZkConfig, ZkStore};

const PUTS: usize = 1000;
const NS: &str = "/bench-watches";

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn port_of(ep: &str) -> u16 {
    ep.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap()
}

/// TCP connections of this process to `port` (its socket inodes in /proc/net/tcp{,6}).
fn connections_to(port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for e in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(l) = std::fs::read_link(e.path()) {
            let l = l.to_string_lossy().to_string();
            if let Some(i) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(i.to_string());
            }
        }
    }
    let want = format!(":{port:04X}");
    let mut n = 0;
    for f in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        for line in std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let c: Vec<&str> = line.split_whitespace().collect();
            if c.len() > 9 && c[2].ends_with(&want) && c[3] == "01" && inodes.contains(c[9]) {
                n += 1;
            }
        }
    }
    n
}

/// The server's total watch count (`wchs`).
fn server_watches(port: u16) -> u64 {
    four_letter(port, "wchs")
        .lines()
        .find_map(|l| l.strip_prefix("Total watches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

fn key(i: usize) -> String {
    format!("k{i}")
}

async fn connect(ep: &str) -> ZkStore {
    let mut cfg = ZkConfig::new([ep]).with_namespace(NS);
    if std::env::var("KV_BENCH_STALE").is_ok() {
        cfg = cfg.with_consistency(kv_core::Consistency::Stale);
    }
    ZkStore::connect(cfg).await.unwrap()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// One measurement in this process: prints one table row.
async fn run(ep: &str, w: usize, tasks: usize) {
    let port = port_of(ep);
    let writer = Arc::new(connect(ep).await);
    let store = Arc::new(connect(ep).await);
    let rss0 = status_kib("VmRSS:");
    let base_watches = server_watches(port);

    if std::env::var("KV_BENCH_RAW").is_ok() {
        let c = zookeeper_client::Client::connect(ep).await.unwrap();
        let t = Instant::now();
        let mut ws = Vec::new();
        for i in 0..w {
            let p = format!("{NS}/{}", key(i));
            let a = c.watch(&p, zookeeper_client::AddWatchMode::PersistentRecursive);
            let b = c.sync(&p);
            let d = c.get_data(&p);
            let (a, _b, _d) = futures::join!(a, b, d);
            ws.push(a.unwrap());
        }
        let rss = status_kib("VmRSS:");
        println!(
            "raw: {:.0}/s {:.2} KiB/watch",
            w as f64 / t.elapsed().as_secs_f64(),
            (rss - rss0) as f64 / w as f64
        );
        return;
    }
    let t = Instant::now();
    let mut streams: Vec<Option<WatchStream>> = (0..w).map(|_| None).collect();
    let per = w.div_ceil(tasks);
    let opened = futures::future::join_all((0..tasks).map(|t| {
        let store = store.clone();
        async move {
            let mut out = Vec::new();
            for i in t * per..((t + 1) * per).min(w) {
                out.push((i, store.watch(&key(i)).await.expect("watch")));
            }
            out
        }
    }))
    .await;
    for (i, s) in opened.into_iter().flatten() {
        streams[i] = Some(s);
    }
    let open_s = t.elapsed().as_secs_f64();
    let rss_open = status_kib("VmRSS:");

    // Every first item: Ok with the key's current value.
    let mut first_bad = 0;
    let mut all = futures::stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.unwrap().map(move |item| (i, item))),
    );
    let mut firsts = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while firsts < w {
        match tokio::time::timeout_at(deadline.into(), all.next()).await {
            Ok(Some((i, Ok(Some(p))))) if p.key == key(i) => {}
            Ok(Some(_)) => first_bad += 1,
            _ => panic!("only {firsts} of {w} first items within 60 s"),
        }
        firsts += 1;
    }
    let watches_open = server_watches(port).saturating_sub(base_watches);

    // 1,000 puts on distinct keys spread over the W keys, sequential from the writer.
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..w).map(|_| AtomicU64::new(0)).collect());
    let stride = (w / PUTS).max(1);
    let puts = PUTS.min(w);
    let writing = {
        let (writer, sent) = (writer.clone(), sent.clone());
        tokio::spawn(async move {
            for j in 0..puts {
                let i = j * stride;
                sent[i].store(base.elapsed().as_nanos() as u64 + 1, Ordering::SeqCst);
                writer
                    .put(&key(i), format!("v{j}").as_bytes(), PutOptions::default())
                    .await
                    .unwrap();
            }
        })
    };
    let (mut delivered, mut errors, mut dups) = (0usize, 0usize, 0usize);
    let mut lat = Vec::with_capacity(puts);
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered < puts {
        match tokio::time::timeout_at(deadline.into(), all.next()).await {
            Ok(Some((i, Ok(Some(p))))) => {
                let at = base.elapsed().as_nanos() as u64;
                let s = sent[i].load(Ordering::SeqCst);
                if s == 0 || p.value != format!("v{}", i / stride).as_bytes() {
                    dups += 1;
                } else {
                    delivered += 1;
                    lat.push((at.saturating_sub(s - 1)) as f64 / 1e6);
                }
            }
            Ok(Some((_, Ok(None)))) => dups += 1,
            Ok(Some((_, Err(e)))) => {
                errors += 1;
                eprintln!("error item: {e}");
            }
            Ok(None) => panic!("watch streams ended"),
            Err(_) => break,
        }
    }
    writing.await.unwrap();
    // Anything more within a short while is a duplicate or an error.
    while let Ok(Some((_, item))) =
        tokio::time::timeout(Duration::from_millis(300), all.next()).await
    {
        match item {
            Ok(_) => dups += 1,
            Err(_) => errors += 1,
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let conns = connections_to(port).saturating_sub(1);
    let hwm = status_kib("VmHWM:");
    drop(all);
    let t = Instant::now();
    let mut left = server_watches(port).saturating_sub(base_watches);
    while left > 0 && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = server_watches(port).saturating_sub(base_watches);
    }
    println!(
        "| {w} | {tasks} | {:.0} | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} | {delivered}/{puts} | {errors} | {dups} | {} | {conns} | {watches_open} | {left} |",
        w as f64 / open_s,
        hwm as f64 / 1024.0,
        (rss_open.saturating_sub(rss0)) as f64 / w as f64,
        rss_open as f64 / 1024.0,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        w - first_bad,
    );
    store.close().await.unwrap();
    writer.close().await.unwrap();
}

fn list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

#[tokio::main]
async fn main() {
    if let (Ok(ep), Ok(w), Ok(t)) = (
        std::env::var("KV_ZK_ENDPOINTS"),
        std::env::var("KV_BENCH_CHILD_W"),
        std::env::var("KV_BENCH_CHILD_TASKS"),
    ) {
        run(&ep, w.parse().unwrap(), t.parse().unwrap()).await;
        return;
    }
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
    let ws = list("KV_BENCH_WATCHES", "1000,10000");
    let max = ws.iter().copied().max().unwrap_or(0);
    {
        // The keys, written once with 64 tasks.
        let writer = Arc::new(connect(&ep).await);
        let _ = writer.delete_tree("").await;
        let per = max.div_ceil(64);
        futures::future::join_all((0..64).map(|t| {
            let writer = writer.clone();
            async move {
                for i in t * per..((t + 1) * per).min(max) {
                    let v = [b'x'; 100];
                    writer
                        .put(&key(i), &v, PutOptions::default())
                        .await
                        .unwrap();
                }
            }
        }))
        .await;
    }
    println!(
        "kv-zookeeper watches, server {ep}: W key watches on one handle, {PUTS} puts from a \
         second handle (sequential, distinct keys)"
    );
    println!(
        "| W | open tasks | opened/s | peak RSS MiB | RSS KiB/watch | RSS MiB open | put→event p50 ms | p99 ms | delivered | error items | extra items | first items Ok | connections | server watches | server watches after drop |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().unwrap();
    for &w in &ws {
        for &tasks in &list("KV_BENCH_TASKS", "1,64") {
            let out = std::process::Command::new(&exe)
                .env("KV_ZK_ENDPOINTS", &ep)
                .env("KV_BENCH_CHILD_W", w.to_string())
                .env("KV_BENCH_CHILD_TASKS", tasks.to_string())
                .stderr(std::process::Stdio::inherit())
                .output()
                .unwrap();
            print!("{}", String::from_utf8_lossy(&out.stdout));
            if !out.status.success() {
                println!("| {w} | {tasks} | run failed: {} |", out.status);
            }
        }
    }
    let writer = connect(&ep).await;
    let _ = writer.delete_tree("").await;
}
