//! The fault runs every network driver's `tests/linearizability.rs` makes, written once: the
//! driver supplies its cluster's members and stores connected the way the run needs.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::{Consistency, Store};

use super::{check_and_report, every_fault, run_clients, run_seconds, Fault, Member};
use super::{Nemesis, Workload};
use crate::linearizability::Summary;

async fn close_all(stores: Vec<Arc<dyn Store>>) {
    for s in stores {
        let _ = s.close().await;
    }
}

/// Default reads under every fault kind: one client per store (connected to one member each)
/// on four keys for `run_seconds(15)`, the nemesis killing, pausing and cutting off random
/// members (one at a time, 0.4–1.5 s each). Prints the report, closes the stores, and panics
/// on a violation, an undecided history, fewer than 100 completed operations or 3 faults.
pub async fn run_default_reads<M: Member>(
    what: &str,
    stores: Vec<Arc<dyn Store>>,
    members: &mut [M],
    partitions_unavailable: &Option<String>,
    seed: u64,
) -> Summary {
    let workload = Workload {
        keys: (0..4).map(|k| format!("k{k}")).collect(),
        duration: run_seconds(15),
        op_timeout: Duration::from_secs(4),
        get_per_mille: 400,
        seed,
    };
    let nemesis = Nemesis {
        faults: every_fault(partitions_unavailable),
        targets: (0..members.len()).collect(),
        gap_ms: (300, 800),
        hold_ms: (400, 1500),
        seed: seed + 1,
    };
    let start = Instant::now();
    let until = start + workload.duration;
    let (histories, report) = tokio::join!(
        run_clients(stores.clone(), &workload, start),
        nemesis.run(members, until)
    );
    let summary = check_and_report(what, &histories, &report, start.elapsed());
    close_all(stores).await;
    let known = summary.operations - summary.unknown;
    assert!(known >= 100, "only {known} operations completed");
    assert!(
        report.total() >= 3,
        "the nemesis injected {} faults",
        report.total()
    );
    assert_eq!(summary.undecided, 0, "some histories could not be decided");
    assert_eq!(
        summary.violations, 0,
        "non-linearizable histories (printed above)"
    );
    summary
}

/// Where [`stale_reads_are_caught`] connects: the leader's and a follower's client endpoint,
/// the follower's index among the members, and a namespace prefix (one namespace per attempt).
pub struct StaleSetup<'a> {
    /// Client endpoint of the leader (the writers).
    pub leader: String,
    /// Client endpoint of the follower (the stale readers).
    pub follower: String,
    /// Index of the follower among the members (the nemesis freezes it).
    pub follower_index: usize,
    /// Namespace prefix; attempt `n` uses `<prefix>-<n>`.
    pub namespace: &'a str,
}

/// Proof that the checker catches stale reads: `connect(endpoint, namespace, consistency)`
/// opens two writers on the leader (default reads) and two `consistency=stale` readers on the
/// follower, which work on two keys for 8 s while the nemesis freezes the follower often and
/// briefly (the quorum goes on without it). Up to 3 attempts, each in a namespace of its own;
/// panics when none finds a violation, or on an undecided history.
pub async fn stale_reads_are_caught<M, F, Fut>(
    what: &str,
    members: &mut [M],
    at: StaleSetup<'_>,
    connect: F,
) where
    M: Member,
    F: Fn(String, String, Consistency) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let follower = at.follower_index;
    for attempt in 0..3u64 {
        let ns = format!("{}-{attempt}", at.namespace);
        let mut stores = Vec::new();
        for (ep, mode) in [
            (&at.leader, Consistency::Linearizable),
            (&at.leader, Consistency::Linearizable),
            (&at.follower, Consistency::Stale),
            (&at.follower, Consistency::Stale),
        ] {
            stores.push(connect(ep.clone(), ns.clone(), mode).await);
        }
        let workload = Workload {
            keys: vec!["a".into(), "b".into()],
            duration: Duration::from_secs(8),
            op_timeout: Duration::from_secs(4),
            get_per_mille: 500,
            seed: 0x5a1e + attempt,
        };
        let nemesis = Nemesis {
            faults: vec![Fault::Pause],
            targets: vec![follower],
            gap_ms: (100, 300),
            hold_ms: (150, 500),
            seed: 0x5a1f + attempt,
        };
        let start = Instant::now();
        let until = start + workload.duration;
        let (histories, report) = tokio::join!(
            run_clients(stores.clone(), &workload, start),
            nemesis.run(members, until)
        );
        let summary = check_and_report(
            &format!(
                "{what} (consistency=stale on a paused follower, attempt {})",
                attempt + 1
            ),
            &histories,
            &report,
            start.elapsed(),
        );
        close_all(stores).await;
        assert_eq!(summary.undecided, 0, "some histories could not be decided");
        if summary.violations > 0 {
            return;
        }
    }
    panic!("{what}: the checker found no stale read in 3 attempts");
}
