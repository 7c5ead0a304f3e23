//! Linearizability under faults on a 3-member etcd cluster: six clients (two per member, each
//! with its own store connected to that member only) do random put / get / compare-and-swap
//! on a few keys while a nemesis SIGKILLs and restarts or SIGSTOPs and resumes members; every
//! key's history must be linearizable. `KV_LIN_SECONDS` makes the run longer (default 15 s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::{Consistency, Store};
use kv_etcd::{EtcdConfig, EtcdStore};
use kv_testkit::etcd::EtcdCluster;
use kv_testkit::faults::{check_and_report, run_clients, run_seconds, Fault, Nemesis, Workload};

async fn connect(endpoint: String, ns: &str, consistency: Consistency) -> Arc<dyn Store> {
    let cfg = EtcdConfig::new([endpoint.clone()])
        .with_namespace(ns)
        .with_timeout(Duration::from_secs(2))
        .with_consistency(consistency);
    Arc::new(
        EtcdStore::connect(cfg)
            .await
            .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_reads_are_linearizable_under_kills_and_pauses() {
    let Some(mut cluster) = EtcdCluster::start().await else {
        return;
    };
    let ns = "lin-etcd";
    let mut stores = Vec::new();
    for c in 0..6 {
        let ep = cluster.members[c % 3].endpoint();
        stores.push(connect(ep, ns, Consistency::Linearizable).await);
    }
    let workload = Workload {
        keys: (0..4).map(|k| format!("k{k}")).collect(),
        duration: run_seconds(15),
        op_timeout: Duration::from_secs(4),
        get_per_mille: 400,
        seed: 0x13e7,
    };
    let nemesis = Nemesis {
        faults: vec![Fault::Kill, Fault::Pause],
        targets: vec![0, 1, 2],
        gap_ms: (300, 800),
        hold_ms: (400, 1500),
        seed: 0x13e8,
    };
    let start = Instant::now();
    let until = start + workload.duration;
    let handles = stores.clone();
    let (histories, report) = tokio::join!(
        run_clients(handles, &workload, start),
        nemesis.run(&mut cluster.members, until)
    );
    let summary = check_and_report(
        "etcd (3 members, default reads)",
        &histories,
        &report,
        start.elapsed(),
    );
    for s in stores {
        let _ = s.close().await;
    }
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
}
