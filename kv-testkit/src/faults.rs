//! Fault-injected linearizability runs: client tasks doing random put / get / compare-and-swap
//! on a few keys through [`kv_core::Store`] handles while a nemesis kills (SIGKILL, then
//! restart), pauses (SIGSTOP/SIGCONT) and, where set up, partitions cluster members. Every
//! operation's invocation, completion and result is recorded, and each key's history is
//! checked with [`crate::linearizability`]. The nemesis's log (what it did when) is printed
//! with any violation, and always when `KV_NEMESIS_LOG` is set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::{Error, KvPair, PutOptions, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::linearizability::{Input, Operation, Output, Summary, Value, Verdict};

mod runs;
pub use runs::{run_default_reads, stale_reads_are_caught, StaleSetup};

/// Seconds of client traffic per run: `KV_LIN_SECONDS` if set (a longer local run), else
/// `default`.
pub fn run_seconds(default: u64) -> Duration {
    let secs = std::env::var("KV_LIN_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(default);
    Duration::from_secs(secs.max(1))
}

/// What the clients do.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Keys (normalized, relative to the stores' namespace); one history each.
    pub keys: Vec<String>,
    /// How long clients start new operations.
    pub duration: Duration,
    /// Bound on one operation (beyond the store's own timeout); past it the outcome is unknown.
    pub op_timeout: Duration,
    /// Per mille of operations that are gets (the rest: half puts, half compare-and-swaps).
    pub get_per_mille: u32,
    /// Random seed (the schedule of operations).
    pub seed: u64,
}

/// Runs one client per store until `workload.duration` has passed (measured from `start`)
/// and returns one history per key. Times are ns since `start`.
pub async fn run_clients(
    stores: Vec<Arc<dyn Store>>,
    workload: &Workload,
    start: Instant,
) -> Vec<Vec<Operation>> {
    let deadline = start + workload.duration;
    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(c, store)| {
            let w = workload.clone();
            tokio::spawn(async move { client(c, store, w, start, deadline).await })
        })
        .collect();
    let mut histories = vec![Vec::new(); workload.keys.len()];
    for t in tasks {
        // A panicking client is a test failure, reported as such.
        for (k, op) in t.await.expect("client task panicked") {
            histories[k].push(op);
        }
    }
    histories
}

fn ns_since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

fn value_bytes(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn parse_value(p: &KvPair) -> Option<Value> {
    std::str::from_utf8(&p.value).ok()?.parse().ok()
}

/// One client: one operation at a time. It remembers the last pair it saw of each key, for
/// compare-and-swap (kv compares versions; values are unique, so the value names the version).
async fn client(
    c: usize,
    store: Arc<dyn Store>,
    w: Workload,
    start: Instant,
    deadline: Instant,
) -> Vec<(usize, Operation)> {
    let mut rng = StdRng::seed_from_u64(w.seed ^ ((c as u64 + 1) * 0x9e37_79b9));
    let mut last: Vec<Option<KvPair>> = vec![None; w.keys.len()];
    let mut counter: u64 = 0;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        let k = rng.gen_range(0..w.keys.len());
        let key = &w.keys[k];
        counter += 1;
        let fresh = ((c as u64 + 1) << 32) | counter;
        let roll = rng.gen_range(0..1000);
        let input = if roll < w.get_per_mille {
            Input::Get
        } else if roll < w.get_per_mille + (1000 - w.get_per_mille) / 2 {
            Input::Put(fresh)
        } else {
            Input::Cas {
                expect: last[k].as_ref().and_then(parse_value),
                new: fresh,
            }
        };
        let call = ns_since(start);
        let result = tokio::time::timeout(w.op_timeout, async {
            match input {
                Input::Put(v) => store
                    .put(key, &value_bytes(v), PutOptions::default())
                    .await
                    .map(|p| (Output::Written, Some(p))),
                Input::Get => match store.get(key).await {
                    Ok(p) => Ok((Output::Read(parse_value(&p)), Some(p))),
                    Err(Error::NotFound { .. }) => Ok((Output::Read(None), None)),
                    Err(e) => Err(e),
                },
                Input::Cas { new, .. } => {
                    let prev = last[k].as_ref();
                    match store
                        .atomic_put(key, &value_bytes(new), prev, PutOptions::default())
                        .await
                    {
                        Ok(p) => Ok((Output::Swapped(true), Some(p))),
                        Err(
                            Error::KeyModified { .. }
                            | Error::KeyExists { .. }
                            | Error::NotFound { .. },
                        ) => Ok((Output::Swapped(false), None)),
                        Err(e) => Err(e),
                    }
                }
            }
        })
        .await;
        let ret = ns_since(start);
        let (ret, output) = match result {
            Ok(Ok((output, pair))) => {
                if let Some(p) = pair {
                    last[k] = Some(p);
                } else if output == Output::Read(None) {
                    last[k] = None;
                }
                (Some(ret), output)
            }
            // Timed out or failed: it may or may not have taken effect.
            Ok(Err(_)) | Err(_) => (None, Output::Unknown),
        };
        if ret.is_none() {
            // Back off a little from a member that is down (bounded by the run's deadline).
            let pause = Duration::from_millis(rng.gen_range(20..100));
            tokio::time::sleep_until((Instant::now() + pause).min(deadline).into()).await;
        }
        out.push((
            k,
            Operation {
                client: c,
                input,
                call,
                ret,
                output,
            },
        ));
    }
    out
}

/// A cluster member the nemesis can fault.
#[allow(async_fn_in_trait)]
pub trait Member {
    /// SIGKILLs it (its data is kept).
    fn kill(&mut self);
    /// Starts it again after a kill and waits (bounded) until it serves.
    async fn start_and_wait(&mut self);
    /// SIGSTOP.
    fn pause(&self);
    /// SIGCONT.
    fn resume(&self);
    /// Cuts it off from the other members (clients still reach it).
    fn isolate(&self);
    /// Undoes [`Member::isolate`].
    fn heal(&self);
}

impl Member for crate::etcd::EtcdServer {
    fn kill(&mut self) {
        crate::etcd::EtcdServer::kill(self)
    }
    async fn start_and_wait(&mut self) {
        self.restart_no_wait();
        self.wait_healthy().await
    }
    fn pause(&self) {
        crate::etcd::EtcdServer::pause(self)
    }
    fn resume(&self) {
        crate::etcd::EtcdServer::resume(self)
    }
    fn isolate(&self) {
        crate::etcd::EtcdServer::isolate(self)
    }
    fn heal(&self) {
        crate::etcd::EtcdServer::heal(self)
    }
}

impl Member for crate::zookeeper::ZkServer {
    fn kill(&mut self) {
        crate::zookeeper::ZkServer::kill(self)
    }
    async fn start_and_wait(&mut self) {
        self.start_again();
        self.wait_serving().await
    }
    fn pause(&self) {
        crate::zookeeper::ZkServer::pause(self)
    }
    fn resume(&self) {
        crate::zookeeper::ZkServer::resume(self)
    }
    fn isolate(&self) {
        crate::zookeeper::ZkServer::isolate(self)
    }
    fn heal(&self) {
        crate::zookeeper::ZkServer::heal(self)
    }
}

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then restart after the hold time.
    Kill,
    /// SIGSTOP, then SIGCONT after the hold time.
    Pause,
    /// Cut the member off from the others (nftables, see [`crate::partition`]), then heal.
    Partition,
}

/// Kill, pause and, where this machine can make them, partitions (`unavailable` is the
/// cluster's reason why not). Without partitions it prints a loud note, and panics when
/// servers are required (CI): a run there must not quietly lose a fault kind.
pub fn every_fault(unavailable: &Option<String>) -> Vec<Fault> {
    match unavailable {
        None => vec![Fault::Kill, Fault::Pause, Fault::Partition],
        Some(why) if crate::servers_required() => {
            panic!("partitions are required here but unavailable: {why}")
        }
        Some(why) => {
            eprintln!("NOTE: NO PARTITIONS in this run (kill and pause only): {why}");
            vec![Fault::Kill, Fault::Pause]
        }
    }
}

/// What the nemesis did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NemesisReport {
    /// Members killed and restarted.
    pub kills: usize,
    /// Members paused and resumed.
    pub pauses: usize,
    /// Members cut off and reconnected.
    pub partitions: usize,
    /// What happened when (ms since the run started), printed with a violation.
    pub log: Vec<String>,
}

impl NemesisReport {
    /// Faults injected in all.
    pub fn total(&self) -> usize {
        self.kills + self.pauses + self.partitions
    }
}

/// The nemesis schedule: one fault at a time on one member chosen at random (so a majority
/// always remains), `gap` between faults, each held for a time drawn from `hold`.
#[derive(Clone, Debug)]
pub struct Nemesis {
    /// Fault kinds to draw from.
    pub faults: Vec<Fault>,
    /// Members that may be faulted (indices into the slice given to [`Nemesis::run`]).
    pub targets: Vec<usize>,
    /// Pause between two faults, ms (min, max).
    pub gap_ms: (u64, u64),
    /// How long a fault lasts, ms (min, max).
    pub hold_ms: (u64, u64),
    /// Random seed.
    pub seed: u64,
}

impl Nemesis {
    /// Injects faults until `until`; every fault is healed before it returns.
    pub async fn run<M: Member>(&self, members: &mut [M], until: Instant) -> NemesisReport {
        self.run_aimed(members, until, || None).await
    }

    /// Like [`Nemesis::run`], but each fault hits the member `aim` names when it names one of
    /// the targets (e.g. the member the current lock holder talks to); else one at random.
    pub async fn run_aimed<M: Member>(
        &self,
        members: &mut [M],
        until: Instant,
        aim: impl Fn() -> Option<usize>,
    ) -> NemesisReport {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let start = Instant::now();
        let at = || start.elapsed().as_millis();
        let mut report = NemesisReport::default();
        let wait = |ms: u64| {
            let at = (Instant::now() + Duration::from_millis(ms)).min(until);
            tokio::time::sleep_until(at.into())
        };
        while Instant::now() < until && !self.faults.is_empty() && !self.targets.is_empty() {
            wait(rng.gen_range(self.gap_ms.0..=self.gap_ms.1)).await;
            if Instant::now() >= until {
                break;
            }
            let random = self.targets[rng.gen_range(0..self.targets.len())];
            let m = aim().filter(|m| self.targets.contains(m)).unwrap_or(random);
            let hold = rng.gen_range(self.hold_ms.0..=self.hold_ms.1);
            match self.faults[rng.gen_range(0..self.faults.len())] {
                Fault::Kill => {
                    members[m].kill();
                    report.kills += 1;
                    report.log.push(format!("{} ms: kill member {m}", at()));
                    // The hold ends at `until` at the latest; the restart always happens.
                    wait(hold).await;
                    members[m].start_and_wait().await;
                    report
                        .log
                        .push(format!("{} ms: member {m} serves again", at()));
                }
                Fault::Pause => {
                    members[m].pause();
                    report.pauses += 1;
                    report.log.push(format!("{} ms: pause member {m}", at()));
                    wait(hold).await;
                    members[m].resume();
                    report.log.push(format!("{} ms: resume member {m}", at()));
                }
                Fault::Partition => {
                    members[m].isolate();
                    report.partitions += 1;
                    report.log.push(format!("{} ms: cut member {m} off", at()));
                    wait(hold).await;
                    members[m].heal();
                    report.log.push(format!("{} ms: heal member {m}", at()));
                }
            }
        }
        report
    }
}

/// Checks the histories of a run and prints its one-line report, naming `what` (backend and
/// mode); prints each violating history too. Returns the summary.
pub fn check_and_report(
    what: &str,
    histories: &[Vec<Operation>],
    nemesis: &NemesisReport,
    elapsed: Duration,
) -> Summary {
    let summary = Summary::check_all(histories, |k, h, v| {
        if let Verdict::Violation { op, linearized } = v {
            eprintln!(
                "{what}: key #{k}: no linearization ({} operations; stuck at operation {op} = {:?} after {linearized} placed)",
                h.len(),
                h[*op]
            );
            // The operations around it, in invocation order, to read the story from.
            let stuck = h[*op];
            let from = stuck.call.saturating_sub(30_000_000);
            let to = stuck.ret.unwrap_or(stuck.call).saturating_add(30_000_000);
            let mut near: Vec<&Operation> = h
                .iter()
                .filter(|o| o.call <= to && !matches!(o.ret, Some(r) if r < from))
                .collect();
            near.sort_by_key(|o| o.call);
            for o in near.iter().take(40) {
                eprintln!("    {o:?}");
            }
        }
    });
    if summary.violations > 0 || summary.undecided > 0 || std::env::var("KV_NEMESIS_LOG").is_ok() {
        eprintln!("{what}: the nemesis's log:");
        for line in &nemesis.log {
            eprintln!("    {line}");
        }
    }
    println!(
        "linearizability {what}: {} histories checked, {} operations ({} unknown outcome), {} faults injected ({} kill, {} pause, {} partition), {} violations, {} undecided, {:.1} s",
        summary.histories,
        summary.operations,
        summary.unknown,
        nemesis.total(),
        nemesis.kills,
        nemesis.pauses,
        nemesis.partitions,
        summary.violations,
        summary.undecided,
        elapsed.as_secs_f64()
    );
    summary
}
