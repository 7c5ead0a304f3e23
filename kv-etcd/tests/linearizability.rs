//! Linearizability under faults on a 3-member etcd cluster: six clients (two per member, each
//! with its own store connected to that member only) do random put / get / compare-and-swap
//! on a few keys while a nemesis SIGKILLs and restarts, SIGSTOPs and resumes, or cuts off
//! (nftables, [`kv_testkit::partition`]) members; every key's history must be linearizable.
//! `KV_LIN_SECONDS` makes the run longer (default 15 s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::{Consistency, Store};
use kv_etcd::{EtcdConfig, EtcdStore};
use kv_testkit::etcd::EtcdCluster;
use kv_testkit::faults::{every_fault, run_default_reads};
use kv_testkit::lockcheck;

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
async fn default_reads_are_linearizable_under_kills_pauses_and_partitions() {
    let _slot = kv_testkit::cluster_slot().await;
    let Some(mut cluster) = EtcdCluster::start().await else {
        return;
    };
    let mut stores = Vec::new();
    for c in 0..6 {
        let ep = cluster.members[c % 3].endpoint();
        stores.push(connect(ep, "lin-etcd", Consistency::Linearizable).await);
    }
    run_default_reads(
        "etcd (3 members, default reads)",
        stores,
        &mut cluster.members,
        &cluster.partitions_unavailable,
        0x13e7,
    )
    .await;
}

/// The partition is real: cut off, the leader loses its followers and another member is
/// elected while the cut-off one still answers its clients; healed, it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_cuts_the_leader_off() {
    let _slot = kv_testkit::cluster_slot().await;
    let Some(mut cluster) = EtcdCluster::start().await else {
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
    cluster.members[old].isolate();
    let started = Instant::now();
    let new = loop {
        let found = (0..3).find(|&i| i != old && cluster.members[i].is_leader());
        if let Some(i) = found {
            break i;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no new leader within 60 s of cutting member {old} off"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "member {old} cut off: member {new} leads after {:?}",
        started.elapsed()
    );
    // The cut-off member cannot commit: a write through it fails (bounded by the timeout).
    let r = cut.put("k", b"v", kv_core::PutOptions::default()).await;
    assert!(
        r.is_err(),
        "a write through the cut-off member succeeded: {r:?}"
    );
    cluster.members[old].heal();
    let after = Instant::now();
    kv_testkit::wait_until(
        "the healed member to serve writes",
        Duration::from_secs(60),
        || {
            let s = cut.clone();
            async move { s.put("k", b"v2", kv_core::PutOptions::default()).await.ok() }
        },
    )
    .await;
    println!(
        "healed: a write through member {old} after {:?}",
        after.elapsed()
    );
    let _ = cut.close().await;
}

/// Locks under the same nemesis, aimed at the holder's member: six clients (two per member)
/// take one lock in turn and make guarded writes while holding it; tokens must be unique and follow real time, and the
/// accepted guarded writes must never interleave or go back to an older token
/// ([`kv_testkit::lockcheck`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locks_exclude_and_fence_under_faults() {
    let _slot = kv_testkit::cluster_slot().await;
    let Some(mut cluster) = EtcdCluster::start().await else {
        return;
    };
    let mut stores = Vec::new();
    for c in 0..6 {
        let ep = cluster.members[c % 3].endpoint();
        stores.push(connect(ep, "lock-faults", Consistency::Linearizable).await);
    }
    // Faults long enough for a holder's lease (TTL 2 s) to expire behind them.
    lockcheck::run_aimed_lock_faults(
        "etcd (3 members)",
        stores,
        &mut cluster.members,
        &cluster.partitions_unavailable,
        Duration::from_secs(2),
        (500, 1500),
        (1000, 3000),
    )
    .await;
}
