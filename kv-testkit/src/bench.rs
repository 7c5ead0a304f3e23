//! The measuring harness of the `vs_raw` benchmarks (kv driver versus the raw client library on
//! the same server).
//!
//! - [`seq`] / [`par`] time one run of an operation: a sequential loop, or `tasks` spawned tokio
//!   tasks sharing the operations; each gives a [`Sample`] (operations, wall time, CPU time);
//! - [`alternate`] runs kv and raw in rounds, swapping who goes first every round so drift in
//!   machine load hits both sides alike, and keeps every [`Rounds`] sample for the statistics
//!   (best, total-time, median ratio, CPU per operation);
//! - [`counted`] adds to a sample the requests the *server* counted meanwhile (ZooKeeper `mntr`,
//!   etcd `/metrics`, Consul's raft index: see each launcher), so a round-trip regression shows
//!   as requests per call whatever the machine's noise;
//! - [`Report`] prints the table: per workload kv ops/s, raw ops/s, kv ÷ raw and extra columns.
//!
//! ```no_run
//! # async fn demo() {
//! use kv_testkit::bench::{self, Report};
//! let n = bench::env_usize("KV_BENCH_N", 2000);
//! let rounds = bench::alternate(
//!     5,
//!     || bench::seq(n, |i| async move { /* one kv operation on key i */ }),
//!     || bench::seq(n, |i| async move { /* the same with the raw client */ }),
//! )
//! .await;
//! let (kv, raw) = rounds.best_rates();
//! let report = Report::markdown(["workload", "kv ops/s", "raw ops/s", "kv / raw"]);
//! report.print_header();
//! report.row("sequential put", kv, raw, &[]);
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `name` parsed as a number, or `default` when unset or not a number (e.g. `KV_BENCH_N`).
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Rounds per workload: `KV_BENCH_ROUNDS`, default 41. The tables report the median of the
/// per-round kv ÷ raw ratios; many short rounds beat a few long ones on this 2-core VM, whose
/// speed drifts by several percent over seconds: each round's kv and raw runs see nearly the
/// same machine. With 11 rounds of 2,000 calls (8,000 with 64 tasks), four runs of one row
/// (etcd 64-task put, new key) gave medians from 0.93 to 1.04; with 61 rounds of 1,280 calls,
/// four runs gave 0.95 to 0.98.
pub fn rounds() -> usize {
    env_usize("KV_BENCH_ROUNDS", 41).max(1)
}

/// Operations per measured run of a workload on `tasks` tasks: `KV_BENCH_N` (default `n`)
/// for one task; `KV_BENCH_PAR_N` (default 4 × that) for more, rounded down to a whole number
/// per task (concurrent runs go several times faster, and runs of a few tens of milliseconds
/// measure the start and end of the 64 tasks more than the client). The default keeps a
/// ZooKeeper new-key row under 100,000 keys (41 rounds of 1,984): a kv-zookeeper store
/// remembers the paths it used in two generations of 50,000, so a longer row's deletes would
/// measure paths it has forgotten (read before delete: 2.23 requests per delete in a run of
/// 162,688 keys, with the single table of 2026-12-01).
pub fn ops_per_run(n: usize, tasks: usize) -> usize {
    let n = env_usize("KV_BENCH_N", n);
    if tasks == 1 {
        n
    } else {
        round_to_tasks(env_usize("KV_BENCH_PAR_N", 4 * n), tasks)
    }
}

/// Whether workload `name` is to run: every one unless `KV_BENCH_ONLY` is set, then those
/// whose name contains its value (e.g. `KV_BENCH_ONLY="64-task get"` for a profile).
pub fn selected(name: &str) -> bool {
    std::env::var("KV_BENCH_ONLY").map_or(true, |only| name.contains(only.as_str()))
}

/// The server to measure: the value of the environment variable `env` (endpoints) when set and
/// not blank; otherwise the endpoint of the server `start` launches, returned with the server,
/// which runs as long as the caller keeps it. `None` when `start` gives no server (not installed:
/// the launcher has printed why).
///
/// A server started here keeps its data on the tmpfs `/dev/shm` (when there is one and
/// `KV_TEST_DATA_ROOT` does not name another directory): the benchmarks compare client work,
/// and this VM's disk made single rounds' fsync-bound throughput vary up to 4× on its own.
pub async fn endpoint_or_start<S>(
    env: &str,
    start: impl Future<Output = Option<S>>,
    endpoint: impl FnOnce(&S) -> String,
) -> Option<(String, Option<S>)> {
    match std::env::var(env) {
        Ok(e) if !e.trim().is_empty() => Some((e, None)),
        _ => {
            if std::path::Path::new("/dev/shm").is_dir() {
                crate::set_data_root("/dev/shm");
            }
            if let Some(root) = crate::data_root() {
                println!(
                    "server data under {} (KV_TEST_DATA_ROOT to change)",
                    root.display()
                );
            }
            let server = start.await?;
            Some((endpoint(&server), Some(server)))
        }
    }
}

/// CPU time (user + system, every thread) this process has used so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; no other preconditions.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// One timed run.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Operations done.
    pub ops: usize,
    /// Wall-clock time they took.
    pub wall: Duration,
    /// CPU time the whole process used meanwhile.
    pub cpu: Duration,
    /// Requests the server counted meanwhile, when measured with [`counted`].
    pub requests: Option<u64>,
}

impl Sample {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64()
    }
}

/// Times `run`, which does `ops` operations.
pub async fn measure(ops: usize, run: impl Future<Output = ()>) -> Sample {
    let cpu = cpu_time();
    let start = Instant::now();
    run.await;
    let wall = start.elapsed();
    Sample {
        ops,
        wall,
        cpu: cpu_time() - cpu,
        requests: None,
    }
}

/// Runs `run` (a [`seq`] or [`par`] run) between two readings of the server's request counter
/// `count` and records their difference in [`Sample::requests`] (left `None` when a reading
/// fails). The readings are outside the timed part.
pub async fn counted(count: impl Fn() -> Option<u64>, run: impl Future<Output = Sample>) -> Sample {
    let before = count();
    let mut sample = run.await;
    sample.requests = before.zip(count()).map(|(b, a)| a.saturating_sub(b));
    sample
}

/// Times `op(0)`, `op(1)`, ... `op(n - 1)` awaited one after another on the calling task.
pub async fn seq<F, Fut>(n: usize, mut op: F) -> Sample
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    measure(n, async {
        for i in 0..n {
            op(i).await;
        }
    })
    .await
}

/// `n` rounded down to a whole number of operations per task, at least one each (`n` itself
/// for a single task).
pub fn round_to_tasks(n: usize, tasks: usize) -> usize {
    if tasks == 1 {
        n
    } else {
        (n / tasks).max(1) * tasks
    }
}

/// Times `tasks` spawned tokio tasks running `n / tasks` operations each, concurrently: task `t`
/// awaits `op(t, 0)`, `op(t, 1)`, ... in turn. The sample counts `(n / tasks) * tasks`
/// operations. Futures are spawned, so `op` gives each its own handles (e.g. an `Arc` clone).
pub async fn par<F, Fut>(n: usize, tasks: usize, op: F) -> Sample
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let per = n / tasks;
    let op = Arc::new(op);
    measure(per * tasks, async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let op = op.clone();
                tokio::spawn(async move {
                    for i in 0..per {
                        op(t, i).await;
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    })
    .await
}

/// The one side [`alternate`] runs when `KV_BENCH_SIDE` is `kv` or `raw` (for a profiler or
/// `callgrind`; the other side's figures then print as `–`); `None` runs both.
fn only_side() -> Option<Side> {
    match std::env::var("KV_BENCH_SIDE").as_deref() {
        Ok("kv") => Some(Side::Kv),
        Ok("raw") => Some(Side::Raw),
        _ => None,
    }
}

/// True when `KV_BENCH_SIDE=raw-raw`: [`alternate`] runs the raw client in both slots (an A/A
/// calibration: every ratio then measures the method's noise, since the true one is 1).
pub fn raw_against_raw() -> bool {
    std::env::var("KV_BENCH_SIDE").as_deref() == Ok("raw-raw")
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Kv,
    Raw,
}

/// Runs `rounds` rounds of one `kv()` and one `raw()` run each: kv first in even rounds, raw
/// first in odd ones, so drift in machine load hits both sides alike. With
/// `KV_BENCH_ROUNDS_LOG` set, each round's rates go to stderr; with `KV_BENCH_SIDE` set to
/// `kv` or `raw`, only that side runs; with `raw-raw`, `raw()` runs in kv's slot too
/// ([`raw_against_raw`]).
pub async fn alternate<K, KFut, R, RFut>(rounds: usize, kv: K, raw: R) -> Rounds
where
    K: FnMut() -> KFut,
    KFut: Future<Output = Sample>,
    R: FnMut() -> RFut,
    RFut: Future<Output = Sample>,
{
    slots(rounds, kv, raw, raw_against_raw()).await
}

/// [`alternate`] with the choice of [`raw_against_raw`] given: `raw_in_both` runs `raw()` in
/// both slots and never calls `kv`.
async fn slots<K, KFut, R, RFut>(rounds: usize, kv: K, raw: R, raw_in_both: bool) -> Rounds
where
    K: FnMut() -> KFut,
    KFut: Future<Output = Sample>,
    R: FnMut() -> RFut,
    RFut: Future<Output = Sample>,
{
    if raw_in_both {
        let raw = std::cell::RefCell::new(raw);
        let run = || (raw.borrow_mut())();
        return in_rounds(rounds, run, run).await;
    }
    in_rounds(rounds, kv, raw).await
}

/// [`alternate`]'s rounds of `kv()` and `raw()`.
async fn in_rounds<K, KFut, R, RFut>(rounds: usize, mut kv: K, mut raw: R) -> Rounds
where
    K: FnMut() -> KFut,
    KFut: Future<Output = Sample>,
    R: FnMut() -> RFut,
    RFut: Future<Output = Sample>,
{
    let mut out = Rounds::default();
    if let Some(side) = only_side() {
        for _ in 0..rounds {
            match side {
                Side::Kv => out.kv.push(kv().await),
                Side::Raw => out.raw.push(raw().await),
            }
        }
        return out;
    }
    for r in 0..rounds {
        let (k, w) = if r % 2 == 0 {
            let k = kv().await;
            (k, raw().await)
        } else {
            let w = raw().await;
            (kv().await, w)
        };
        if std::env::var_os("KV_BENCH_ROUNDS_LOG").is_some() {
            eprintln!(
                "round {r}: kv {:.0} ops/s, raw {:.0} ops/s, kv/raw {:.2}",
                k.rate(),
                w.rate(),
                k.rate() / w.rate()
            );
        }
        out.kv.push(k);
        out.raw.push(w);
    }
    out
}

mod report;
mod stats;
mod turns;

pub use report::{Layout, Report};
pub use stats::Rounds;
pub use turns::{sessions, Turns};

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ops: usize, ms: u64) -> Sample {
        Sample {
            ops,
            wall: Duration::from_millis(ms),
            cpu: Duration::from_millis(ms / 2),
            requests: None,
        }
    }

    #[test]
    fn statistics() {
        let r = Rounds {
            kv: vec![sample(100, 100), sample(100, 50), sample(100, 200)],
            raw: vec![sample(100, 50), sample(100, 50), sample(100, 100)],
        };
        assert_eq!(r.best_rates(), (2000.0, 2000.0));
        // 3 rounds / (0.001 + 0.0005 + 0.002) s per op.
        let (kv, raw) = r.overall_rates();
        assert!((kv - 3.0 / 0.0035).abs() < 1e-6, "{kv}");
        assert!((raw - 3.0 / 0.002).abs() < 1e-6, "{raw}");
        // Per-round ratios 0.5, 1.0, 0.5 -> median 0.5.
        assert_eq!(r.median_ratio(), 0.5);
        assert_eq!(r.ratios(), [0.5, 1.0, 0.5]);
        // kv: 175 ms CPU over 300 ops.
        let (kv_cpu, raw_cpu) = r.cpu_us_per_op();
        assert!((kv_cpu - 175_000.0 / 300.0).abs() < 1e-6, "{kv_cpu}");
        assert!((raw_cpu - 100_000.0 / 300.0).abs() < 1e-6, "{raw_cpu}");
        // Not counted: NaN, printed as a dash.
        assert!(r.requests_per_op().0.is_nan());
        let rep = Report::markdown(["w", "kv", "raw", "r"]).column("req", 2);
        assert_eq!(
            rep.format_row("get", 1.0, 1.0, &[f64::NAN]),
            "| get | 1 | 1 | 1.00 | – |"
        );
    }

    #[tokio::test]
    async fn counted_records_the_server_counter_difference() {
        let counter = std::sync::atomic::AtomicU64::new(10);
        let count = || Some(counter.load(std::sync::atomic::Ordering::SeqCst));
        let s = counted(count, async {
            counter.fetch_add(7, std::sync::atomic::Ordering::SeqCst);
            sample(7, 10)
        })
        .await;
        assert_eq!(s.requests, Some(7));
        let r = Rounds {
            kv: vec![s, s],
            raw: vec![s, counted(|| None, async { sample(7, 10) }).await],
        };
        let (kv, raw) = r.requests_per_op();
        assert_eq!(kv, 1.0);
        assert!(raw.is_nan(), "a side with an uncounted round has no figure");
    }

    #[test]
    fn markdown_table() {
        let r = Report::markdown(["workload", "kv ops/s", "raw ops/s", "kv / raw"])
            .column("median", 2)
            .column("cpu", 1);
        assert_eq!(
            r.header(),
            "| workload | kv ops/s | raw ops/s | kv / raw | median | cpu |\n|---|---|---|---|---|---|"
        );
        assert_eq!(
            r.format_row("get", 1500.4, 3000.0, &[0.456, 12.34]),
            "| get | 1500 | 3000 | 0.50 | 0.46 | 12.3 |"
        );
    }

    #[test]
    fn best_of_rounds_table() {
        let r = Report::best_of_rounds();
        assert_eq!(
            r.header(),
            "| workload | kv ops/s (best) | raw ops/s (best) | kv / raw (best) \
             | kv / raw (median of rounds) | kv client CPU µs/op | raw client CPU µs/op \
             | kv server requests/op | raw server requests/op |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        assert_eq!(
            (
                round_to_tasks(100, 1),
                round_to_tasks(100, 64),
                round_to_tasks(10, 64)
            ),
            (100, 64, 64)
        );
    }

    #[test]
    fn aligned_table() {
        let r = Report::new(
            Layout::Aligned { name_width: 10 },
            ["operation", "kv ops/s", "raw ops/s", "kv/raw"],
        );
        assert_eq!(
            r.header(),
            format!(
                "{:<10} {:>12} {:>12} {:>8}",
                "operation", "kv ops/s", "raw ops/s", "kv/raw"
            )
        );
        assert_eq!(
            r.format_row("put", 900.0, 1200.0, &[]),
            format!("{:<10} {:>12} {:>12} {:>8}", "put", "900", "1200", "0.75")
        );
    }

    #[tokio::test]
    async fn seq_and_par_count_operations() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let mut seen = Vec::new();
        let s = seq(5, |i| {
            seen.push(i);
            async {}
        })
        .await;
        assert_eq!((s.ops, seen), (5, vec![0, 1, 2, 3, 4]));

        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        // 10 ops over 3 tasks: 3 each, 9 in all.
        let p = par(10, 3, move |t, i| {
            assert!(t < 3 && i < 3);
            let d = d.clone();
            async move {
                d.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
        assert_eq!((p.ops, done.load(Ordering::SeqCst)), (9, 9));
    }

    #[tokio::test]
    async fn alternate_swaps_who_goes_first() {
        let order = std::sync::Mutex::new(Vec::new());
        let run = |side: &'static str| {
            let order = &order;
            move || async move {
                order.lock().unwrap().push(side);
                sample(1, 1)
            }
        };
        let r = alternate(3, run("kv"), run("raw")).await;
        assert_eq!((r.kv.len(), r.raw.len()), (3, 3));
        assert_eq!(
            *order.lock().unwrap(),
            ["kv", "raw", "raw", "kv", "kv", "raw"]
        );
        // A/A: the raw run in both slots, kv's never called.
        order.lock().unwrap().clear();
        let r = slots(2, run("kv"), run("raw"), true).await;
        assert_eq!((r.kv.len(), r.raw.len()), (2, 2));
        assert_eq!(*order.lock().unwrap(), ["raw"; 4]);
    }
}
