//! The watch benchmark of the embedded drivers (sled, memory): W key watches on ONE handle on
//! W keys, then puts from a second handle. Each driver's `benches/watches.rs` calls [`main`]
//! with how to open its two handles; the steps and columns are described there.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::stream::{select_all, StreamExt};
use kv_core::{Error, PutOptions, Store};

/// Opens the watching handle and the writing handle on one store (plus whatever must live as
/// long as they do, e.g. a temporary directory).
pub type OpenPair = Box<
    dyn Fn() -> Pin<
        Box<
            dyn Future<
                Output = (
                    Arc<dyn Store>,
                    Arc<dyn Store>,
                    Box<dyn std::any::Any + Send>,
                ),
            >,
        >,
    >,
>;

const DEADLINE: Duration = Duration::from_secs(60);

/// A `kB` field of `/proc/self/status` (or `Threads`).
pub fn status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

fn key(i: usize) -> String {
    format!("bench/w/{i}")
}

/// One W in this process; prints one table row.
async fn run(w: usize, puts: usize, what: &str, open: &OpenPair) {
    let (rss0, threads0) = (status("VmRSS"), status("Threads"));
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks0 = metrics.num_alive_tasks();
    let (watcher, writer, _keep) = open().await;
    for i in 0..w {
        let v = format!("v{i}");
        writer
            .put(&key(i), v.as_bytes(), PutOptions::default())
            .await
            .unwrap();
    }
    let (base_rss, base_threads) = (status("VmRSS"), status("Threads"));

    let start = Instant::now();
    let mut streams = Vec::with_capacity(w);
    let mut first_ok = 0;
    for i in 0..w {
        let mut s = watcher.watch(&key(i)).await.unwrap();
        match s.next().await {
            Some(Ok(Some(p))) if p.key == key(i) => first_ok += 1,
            other => eprintln!("watch {i}: first item {other:?}"),
        }
        streams.push(s.map(move |item| (i, item)));
    }
    let open_rate = w as f64 / start.elapsed().as_secs_f64();
    let rss = status("VmRSS");
    let threads = status("Threads");
    let tasks = metrics.num_alive_tasks() - tasks0;

    // The reader: every stream in one task; each Ok item's value names the put it shows.
    let started: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; puts]));
    let (lat_tx, mut lat_rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let reader = {
        let started = started.clone();
        tokio::spawn(async move {
            let mut all = select_all(streams);
            let (mut errors, mut stray, mut closed) = (0usize, 0usize, 0usize);
            // The first poll visits every stream (10,000 of them): done before the puts start.
            let mut first = Some(futures::poll!(all.next()));
            let _ = ready_tx.send(());
            loop {
                let next = match first.take() {
                    Some(Poll::Ready(next)) => next,
                    _ => all.next().await,
                };
                let Some((i, item)) = next else { break };
                let at = Instant::now();
                match item {
                    Ok(Some(p)) => {
                        let n = std::str::from_utf8(&p.value)
                            .ok()
                            .and_then(|v| v.strip_prefix("put"))
                            .and_then(|v| v.parse::<usize>().ok());
                        let t0 = n.and_then(|n| started.lock().unwrap()[n].map(|t| (n, t)));
                        match t0 {
                            Some((n, t0)) if p.key == key(i) => {
                                let _ = lat_tx.send((n, at - t0));
                            }
                            _ => stray += 1,
                        }
                    }
                    Ok(None) => stray += 1,
                    // The end of every stream once the handle is closed.
                    Err(Error::Closed) => closed += 1,
                    Err(e) => {
                        errors += 1;
                        eprintln!("watch {i}: error item {e}");
                    }
                }
            }
            (errors, stray, closed)
        })
    };
    ready.await.unwrap();
    let put_start = Instant::now();
    for n in 0..puts {
        let k = key(n * w / puts % w);
        started.lock().unwrap()[n] = Some(Instant::now());
        writer
            .put(&k, format!("put{n}").as_bytes(), PutOptions::default())
            .await
            .unwrap();
    }
    let put_rate = puts as f64 / put_start.elapsed().as_secs_f64();
    let mut seen = vec![false; puts];
    let mut lat = Vec::with_capacity(puts);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while lat.len() < puts {
        match tokio::time::timeout_at(deadline, lat_rx.recv()).await {
            Ok(Some((n, d))) if n < puts && !seen[n] => {
                seen[n] = true;
                lat.push(d);
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let delivered = lat.len();
    lat.sort();
    let hwm = status("VmHWM");
    watcher.close().await.unwrap();
    let (errors, stray, closed) = tokio::time::timeout(DEADLINE, reader)
        .await
        .expect("the streams end after close")
        .unwrap();
    writer.close().await.unwrap();
    assert_eq!(closed, w, "every stream ends with Err(Closed) after close");
    println!(
        "| {w} | {first_ok}/{w} | {open_rate:.0} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {delivered}/{puts} | {errors} | {stray} | {threads} (+{}) | {tasks} | {put_rate:.0} |",
        mib(base_rss),
        mib(hwm),
        (rss.saturating_sub(base_rss)) as f64 / w as f64,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        threads.saturating_sub(base_threads),
    );
    eprintln!(
        "(W={w}: RSS before opening the {what} {:.1} MiB, {threads0} threads)",
        mib(rss0)
    );
}

/// The bench's `main`: W = `KV_BENCH_W` (default 1,000 and 10,000), one child process per W
/// (so that peak RSS is that W's), each opening two handles with `open` (`what` names the
/// store in the output).
pub fn main(what: &str, open: OpenPair) {
    if let Ok(w) = std::env::var("KV_BENCH_CHILD") {
        let w: usize = w.parse().expect("KV_BENCH_CHILD");
        let puts = env_usize("KV_BENCH_PUTS", 1000);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(w, puts, what, &open));
        return;
    }
    let ws = std::env::var("KV_BENCH_W").unwrap_or_else(|_| "1000,10000".into());
    println!(
        "| W | first items Ok | opened/s | baseline RSS MiB (0 watches) | peak RSS MiB | KiB/watch | put→event p50 ms | p99 ms | puts delivered | error items | other items | threads (+ for watches) | tasks | puts/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().unwrap();
    for w in ws.split(',').map(|w| w.trim()).filter(|w| !w.is_empty()) {
        let status = std::process::Command::new(&exe)
            .env("KV_BENCH_CHILD", w)
            .status()
            .expect("run the bench child");
        assert!(status.success(), "W={w}: {status}");
    }
}
