//! Lock mutual exclusion and fencing under faults: client tasks, each with its own store,
//! repeatedly take one lock, make guarded writes (`Txn::when_held`) to one data key while they
//! hold it, and unlock, while a nemesis faults the cluster. Every acquisition (when it was
//! asked for and granted, its fencing token) and every guarded write the store accepted (with
//! the version it got) is recorded, and [`check`] verifies what the store must guarantee:
//!
//! - **unique tokens**: no two acquisitions got the same fencing token;
//! - **tokens follow real time**: an acquisition granted before another was asked for has the
//!   smaller token;
//! - **exclusion at the store**: ordered by version (commit order), the accepted guarded writes
//!   of two holders never interleave (once another holder wrote, an earlier holder never does);
//! - **fencing**: in commit order the holders' tokens only grow (a superseded holder's write
//!   never lands after its successor's).
//!
//! A holder may lose its lock without knowing at once (its session expired behind a cut): the
//! store must then refuse its guarded writes with `FencingFailed`, which is counted, not a
//! violation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::{Error, LockOptions, Store, Txn, TxnResult};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which client holds the lock now, as the clients themselves believe (for aiming faults at
/// the holder's member with [`crate::faults::Nemesis::run_aimed`]).
#[derive(Clone, Debug, Default)]
pub struct Holder(Arc<AtomicUsize>);

impl Holder {
    /// The client that was granted the lock last and has not unlocked yet.
    pub fn current(&self) -> Option<usize> {
        self.0.load(Ordering::Relaxed).checked_sub(1)
    }

    fn set(&self, client: Option<usize>) {
        self.0.store(client.map_or(0, |c| c + 1), Ordering::Relaxed);
    }
}

/// What the lock clients do.
#[derive(Clone, Debug)]
pub struct LockWorkload {
    /// The lock key.
    pub lock_key: String,
    /// The key the holders write under the guard.
    pub data_key: String,
    /// How long clients start new acquisitions.
    pub duration: Duration,
    /// The lock's TTL.
    pub ttl: Duration,
    /// Bound on one acquisition, one write or one unlock (past it the outcome is unknown).
    pub op_timeout: Duration,
    /// Accepted guarded writes a holder aims for per hold (min, max).
    pub writes: (u32, u32),
    /// Pause between two guarded writes of a hold, ms (min, max).
    pub gap_ms: (u64, u64),
    /// Random seed.
    pub seed: u64,
    /// Updated with the current holder.
    pub holder: Holder,
}

/// A guarded write the store accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The data key's version after the write (commit order).
    pub version: u64,
    /// The writer's fencing token.
    pub token: u64,
}

/// One granted acquisition and what its holder did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquisition {
    /// The client (task).
    pub client: usize,
    /// When `new_lock` was called (ns since the run started).
    pub asked: u64,
    /// When it returned the lock.
    pub granted: u64,
    /// The lock's fencing token.
    pub token: u64,
    /// Guarded writes the store accepted.
    pub accepted: Vec<Accepted>,
    /// Guarded writes refused with `FencingFailed` (the lock was lost).
    pub fenced: usize,
    /// Guarded writes with another error or no answer in time.
    pub failed: usize,
}

/// What a run found; see the [module docs](self) for the properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockSummary {
    /// Acquisitions granted.
    pub acquisitions: usize,
    /// Guarded writes accepted.
    pub accepted: usize,
    /// Guarded writes refused with `FencingFailed`.
    pub fenced: usize,
    /// Acquisitions that did not get the lock within the bound (another client held it, or
    /// the cluster could not answer) or failed.
    pub not_granted: usize,
    /// Guarded writes and unlocks that failed or timed out (not `FencingFailed`).
    pub failed: usize,
    /// Every violation, described.
    pub violations: Vec<String>,
}

fn ns_since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// Calls of a run that did not complete, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Acquisitions not granted within the bound, or failed.
    pub not_granted: usize,
    /// Unlocks that failed or timed out.
    pub unlock_failed: usize,
}

/// Runs one lock client per store until `w.duration` has passed since `start`.
pub async fn run_lock_clients(
    stores: Vec<Arc<dyn Store>>,
    w: &LockWorkload,
    start: Instant,
) -> (Vec<Acquisition>, Tally) {
    let deadline = start + w.duration;
    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(c, s)| {
            let w = w.clone();
            tokio::spawn(async move { lock_client(c, s, w, start, deadline).await })
        })
        .collect();
    let (mut all, mut tally) = (Vec::new(), Tally::default());
    for t in tasks {
        let (acqs, t) = t.await.expect("lock client panicked");
        all.extend(acqs);
        tally.not_granted += t.not_granted;
        tally.unlock_failed += t.unlock_failed;
    }
    (all, tally)
}

async fn lock_client(
    c: usize,
    store: Arc<dyn Store>,
    w: LockWorkload,
    start: Instant,
    deadline: Instant,
) -> (Vec<Acquisition>, Tally) {
    let mut rng = StdRng::seed_from_u64(w.seed ^ ((c as u64 + 1) * 0x51_7cc1));
    let (mut out, mut tally) = (Vec::new(), Tally::default());
    let opts = || LockOptions::with_value(format!("client-{c}")).ttl(w.ttl);
    while Instant::now() < deadline {
        let asked = ns_since(start);
        let left = deadline.saturating_duration_since(Instant::now());
        let lock = match tokio::time::timeout(
            w.op_timeout.min(left.max(Duration::from_millis(1))),
            store.new_lock(&w.lock_key, opts()),
        )
        .await
        {
            Ok(Ok(l)) => l,
            Ok(Err(_)) | Err(_) => {
                tally.not_granted += 1;
                let pause = Duration::from_millis(rng.gen_range(20..100));
                tokio::time::sleep_until((Instant::now() + pause).min(deadline).into()).await;
                continue;
            }
        };
        w.holder.set(Some(c));
        let mut a = Acquisition {
            client: c,
            asked,
            granted: ns_since(start),
            token: lock.fencing_token(),
            accepted: Vec::new(),
            fenced: 0,
            failed: 0,
        };
        // A holder works through failures (retrying after the gap) until its planned writes
        // are done, the store fences it off, or `2 × op_timeout` have passed: a fault in the
        // middle of a hold thus meets the holder's next write once it heals.
        let planned = rng.gen_range(w.writes.0..=w.writes.1);
        let give_up = Instant::now() + 2 * w.op_timeout;
        let mut n = 0;
        while n < planned && Instant::now() < give_up {
            let value = format!("{c}:{}:{n}", a.token).into_bytes();
            let txn = Txn::new().when_held(&lock).put(w.data_key.clone(), value);
            match tokio::time::timeout(w.op_timeout, store.txn(txn)).await {
                Ok(Ok(results)) => match results.first() {
                    Some(TxnResult::Put(p)) => {
                        n += 1;
                        a.accepted.push(Accepted {
                            version: p.version,
                            token: a.token,
                        })
                    }
                    other => panic!("a guarded put answered {other:?}"),
                },
                Ok(Err(Error::FencingFailed { .. })) => {
                    a.fenced += 1;
                    break;
                }
                Ok(Err(_)) | Err(_) => a.failed += 1,
            }
            let gap = Duration::from_millis(rng.gen_range(w.gap_ms.0..=w.gap_ms.1));
            tokio::time::sleep(gap).await;
        }
        if w.holder.current() == Some(c) {
            w.holder.set(None);
        }
        if !matches!(
            tokio::time::timeout(w.op_timeout, lock.unlock()).await,
            Ok(Ok(()))
        ) {
            tally.unlock_failed += 1;
        }
        out.push(a);
    }
    (out, tally)
}

/// Checks the acquisitions of a run (see the [module docs](self)); `tally` goes into the
/// summary's counts.
pub fn check(acqs: &[Acquisition], tally: Tally) -> LockSummary {
    let mut s = LockSummary {
        acquisitions: acqs.len(),
        accepted: acqs.iter().map(|a| a.accepted.len()).sum(),
        fenced: acqs.iter().map(|a| a.fenced).sum(),
        not_granted: tally.not_granted,
        failed: tally.unlock_failed + acqs.iter().map(|a| a.failed).sum::<usize>(),
        violations: Vec::new(),
    };
    let mut by_token: Vec<&Acquisition> = acqs.iter().collect();
    by_token.sort_by_key(|a| a.token);
    for pair in by_token.windows(2) {
        if pair[0].token == pair[1].token {
            s.violations.push(format!(
                "token {} granted twice: client {} at {} ns and client {} at {} ns",
                pair[0].token, pair[0].client, pair[0].granted, pair[1].client, pair[1].granted
            ));
        }
    }
    // Real time: granted before the other was asked → smaller token. Sorted by grant time,
    // the largest token granted so far must be smaller than every later-asked token.
    let mut by_grant: Vec<&Acquisition> = acqs.iter().collect();
    by_grant.sort_by_key(|a| a.granted);
    for b in &by_grant {
        if let Some(a) = by_grant
            .iter()
            .filter(|a| a.granted < b.asked && a.token > b.token)
            .max_by_key(|a| a.token)
        {
            s.violations.push(format!(
                "token order: client {} was granted token {} at {} ns, before client {} asked \
                 ({} ns) and got the smaller token {}",
                a.client, a.token, a.granted, b.client, b.asked, b.token
            ));
        }
    }
    let mut writes: Vec<Accepted> = acqs.iter().flat_map(|a| a.accepted.clone()).collect();
    writes.sort_by_key(|w| w.version);
    for pair in writes.windows(2) {
        if pair[0].version == pair[1].version {
            s.violations.push(format!(
                "two accepted writes got version {} (tokens {} and {})",
                pair[0].version, pair[0].token, pair[1].token
            ));
        }
    }
    let mut done: Vec<u64> = Vec::new(); // tokens whose run of writes has ended
    for pair in writes.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        if next.token == prev.token {
            continue;
        }
        done.push(prev.token);
        if done.contains(&next.token) {
            s.violations.push(format!(
                "exclusion: token {} wrote again (version {}) after token {} had written",
                next.token, next.version, prev.token
            ));
        }
        if next.token < prev.token {
            s.violations.push(format!(
                "fencing: token {} wrote (version {}) after the larger token {} (version {})",
                next.token, next.version, prev.token, prev.version
            ));
        }
    }
    s
}

/// Prints the one-line report of a run (and each violation) and returns the summary.
pub fn check_and_report(
    what: &str,
    acqs: &[Acquisition],
    tally: Tally,
    nemesis: &crate::faults::NemesisReport,
    elapsed: Duration,
) -> LockSummary {
    let s = check(acqs, tally);
    for v in &s.violations {
        eprintln!("{what}: VIOLATION: {v}");
    }
    if !s.violations.is_empty() || std::env::var("KV_NEMESIS_LOG").is_ok() {
        for line in &nemesis.log {
            eprintln!("    {line}");
        }
    }
    println!(
        "locks {what}: {} acquisitions, {} guarded writes accepted, {} fenced off, {} writes/unlocks failed or timed out, {} acquisitions not granted in time, {} faults injected ({} kill, {} pause, {} partition), {} violations, {:.1} s",
        s.acquisitions,
        s.accepted,
        s.fenced,
        s.failed,
        s.not_granted,
        nemesis.total(),
        nemesis.kills,
        nemesis.pauses,
        nemesis.partitions,
        s.violations.len(),
        elapsed.as_secs_f64()
    );
    s
}

/// The lock fault run of a driver's tests: one client per store (store `c` connected to
/// member `c % members.len()`) runs [`run_lock_clients`] on keys `lock` and `data` for
/// `run_seconds(20)`, while a nemesis of pauses and cuts (no kills: a restart would mostly
/// stall the run) aims every fault at the member the current holder talks to, each held for
/// `hold_ms` (long enough for the backend to end a silent holder's lock) after `gap_ms`.
/// Prints the report, closes the stores, and panics on a violation, on fewer than 5
/// acquisitions or on fewer than 2 faults.
pub async fn run_aimed_lock_faults<M: crate::faults::Member>(
    what: &str,
    stores: Vec<Arc<dyn Store>>,
    members: &mut [M],
    partitions_unavailable: &Option<String>,
    ttl: Duration,
    gap_ms: (u64, u64),
    hold_ms: (u64, u64),
) -> LockSummary {
    use crate::faults::{every_fault, run_seconds, Fault, Nemesis};
    let workload = LockWorkload {
        lock_key: "lock".into(),
        data_key: "data".into(),
        duration: run_seconds(20),
        ttl,
        op_timeout: Duration::from_secs(4),
        writes: (2, 5),
        gap_ms: (20, 300),
        seed: 0x10c,
        holder: Holder::default(),
    };
    let nemesis = Nemesis {
        faults: every_fault(partitions_unavailable)
            .into_iter()
            .filter(|f| *f != Fault::Kill)
            .collect(),
        targets: (0..members.len()).collect(),
        gap_ms,
        hold_ms,
        seed: 0x10d,
    };
    let n = members.len();
    let start = Instant::now();
    let until = start + workload.duration;
    let holder = workload.holder.clone();
    let ((acqs, tally), report) = tokio::join!(
        run_lock_clients(stores.clone(), &workload, start),
        nemesis.run_aimed(members, until, || holder.current().map(|c| c % n))
    );
    let summary = check_and_report(what, &acqs, tally, &report, start.elapsed());
    for s in stores {
        let _ = s.close().await;
    }
    assert!(
        summary.acquisitions >= 5,
        "only {} acquisitions",
        summary.acquisitions
    );
    assert!(
        report.total() >= 2,
        "the nemesis injected {} faults",
        report.total()
    );
    assert_eq!(summary.violations, Vec::<String>::new());
    summary
}

#[cfg(test)]
mod tests;
