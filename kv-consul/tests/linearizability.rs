//! Linearizability under faults on a 3-server Consul cluster: six clients (two per member,
//! each with its own store connected to that member only) do random put / get /
//! compare-and-swap on a few keys while a nemesis SIGKILLs and restarts, SIGSTOPs and
//! resumes, or cuts off (nftables, [`kv_testkit::partition`]) members; every key's history
//! must be linearizable with kv's default (`?consistent`) reads.
//! `KV_LIN_SECONDS` makes the run longer (default 15 s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_consul::{ConsulConfig, ConsulStore};
use kv_core::{Consistency, PutOptions, Store};
use kv_testkit::consul_cluster::ConsulCluster;
use kv_testkit::faults::{
    check_and_report, every_fault, run_clients, run_seconds, Nemesis, Workload,
};

async fn connect(endpoint: String, ns: &str, consistency: Consistency) -> Arc<dyn Store> {
    let cfg = ConsulConfig::new([endpoint.clone()])
        .with_namespace(ns)
        .with_timeout(Duration::from_secs(2))
        .with_consistency(consistency);
    Arc::new(
        ConsulStore::connect(cfg)
            .await
            .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}")),
    )
}

async fn close_all(stores: Vec<Arc<dyn Store>>) {
    for s in stores {
        let _ = s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_reads_are_linearizable_under_kills_pauses_and_partitions() {
    let Some(mut cluster) = ConsulCluster::start().await else {
        return;
    };
    let ns = "lin-consul";
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
        seed: 0xc075,
    };
    let nemesis = Nemesis {
        faults: every_fault(&cluster.partitions_unavailable),
        targets: vec![0, 1, 2],
        gap_ms: (300, 800),
        hold_ms: (400, 1500),
        seed: 0xc076,
    };
    let start = Instant::now();
    let until = start + workload.duration;
    let (histories, report) = tokio::join!(
        run_clients(stores.clone(), &workload, start),
        nemesis.run(&mut cluster.members, until)
    );
    let summary = check_and_report(
        "consul (3 servers, default reads)",
        &histories,
        &report,
        start.elapsed(),
    );
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
}

/// The partition is real: cut off, the leader loses its followers and the other two elect a
/// leader; a write through the cut-off member fails (within the store's timeout); healed, it
/// rejoins and writes through it work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_cuts_the_leader_off() {
    let Some(cluster) = ConsulCluster::start().await else {
        return;
    };
    if let Some(why) = &cluster.partitions_unavailable {
        every_fault(&cluster.partitions_unavailable);
        eprintln!("NOTE: partition test not run: {why}");
        return;
    }
    let old = cluster.leader(Duration::from_secs(60)).await;
    let cut = connect(
        cluster.members[old].endpoint(),
        "cut",
        Consistency::Linearizable,
    )
    .await;
    cut.put("k", b"v0", PutOptions::default())
        .await
        .expect("a write through the leader before the cut");
    cluster.members[old].isolate();
    let started = Instant::now();
    let new = kv_testkit::wait_until(
        "a new leader among the other two members",
        Duration::from_secs(60),
        || {
            let c = &cluster;
            async move {
                let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
                let a = c.leader_seen_by(others[0]).await?;
                let b = c.leader_seen_by(others[1]).await?;
                (a == b && a != old).then_some(a)
            }
        },
    )
    .await;
    let elected = started.elapsed();
    println!("member {old} cut off: member {new} leads after {elected:?}");
    // The cut-off member cannot commit: a write through it fails (bounded by the timeout).
    let tried = Instant::now();
    let r = cut.put("k", b"v1", PutOptions::default()).await;
    println!(
        "a write through the cut-off member {old}: {} after {:?}",
        match &r {
            Ok(_) => "succeeded".to_string(),
            Err(e) => format!("failed ({e})"),
        },
        tried.elapsed()
    );
    assert!(
        r.is_err(),
        "a write through the cut-off member succeeded: {r:?}"
    );
    assert!(
        tried.elapsed() < Duration::from_secs(6),
        "the failed write took {:?}, beyond the store's 2 s timeout",
        tried.elapsed()
    );
    cluster.members[old].heal();
    let after = Instant::now();
    kv_testkit::wait_until(
        "the healed member to serve writes",
        Duration::from_secs(60),
        || {
            let s = cut.clone();
            async move { s.put("k", b"v2", PutOptions::default()).await.ok() }
        },
    )
    .await;
    println!(
        "healed: a write through member {old} after {:?}",
        after.elapsed()
    );
    let got = cut
        .get("k")
        .await
        .expect("a read through the healed member");
    assert_eq!(got.value, b"v2".to_vec());
    let _ = cut.close().await;
}
