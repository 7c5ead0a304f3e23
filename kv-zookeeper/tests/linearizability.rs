//! Linearizability under faults on a 3-node ZooKeeper ensemble. Clients (each its own store
//! connected to one member only) do random put / get / compare-and-swap on a few keys while a
//! nemesis SIGKILLs and restarts, SIGSTOPs and resumes, or cuts off (nftables,
//! [`kv_testkit::partition`]) members, and every key's history is checked. With default reads there must be no violation; with `consistency=stale` on a
//! follower that the nemesis keeps freezing, the checker must find the stale reads.
//! `KV_LIN_SECONDS` makes the default-read run longer (default 15 s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::{Consistency, Store};
use kv_testkit::faults::{every_fault, run_default_reads, stale_reads_are_caught, StaleSetup};
use kv_testkit::lockcheck;
use kv_testkit::zookeeper::ZkEnsemble;
use kv_zookeeper::{ZkConfig, ZkStore};

async fn connect(endpoint: String, ns: &str, consistency: Consistency) -> Arc<dyn Store> {
    connect_with(endpoint, ns, consistency, Duration::from_secs(8)).await
}

async fn connect_with(
    endpoint: String,
    ns: &str,
    consistency: Consistency,
    session: Duration,
) -> Arc<dyn Store> {
    let cfg = ZkConfig::new([&endpoint])
        .with_namespace(ns)
        .with_timeout(Duration::from_secs(2))
        .with_session_timeout(session)
        .with_consistency(consistency);
    Arc::new(
        ZkStore::connect(cfg)
            .await
            .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_reads_are_linearizable_under_kills_pauses_and_partitions() {
    let _slot = kv_testkit::cluster_slot().await;
    let Some(mut ens) = ZkEnsemble::start().await else {
        return;
    };
    ens.leader(Duration::from_secs(60)).await;
    let mut stores = Vec::new();
    for c in 0..6 {
        let ep = ens.nodes[c % 3].endpoint();
        stores.push(connect(ep, "/lin-zk", Consistency::Linearizable).await);
    }
    run_default_reads(
        "zookeeper (3 nodes, default reads)",
        stores,
        &mut ens.nodes,
        &ens.partitions_unavailable,
        0x2e7,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_reads_on_a_lagging_follower_are_caught() {
    let _slot = kv_testkit::cluster_slot().await;
    let Some(mut ens) = ZkEnsemble::start().await else {
        return;
    };
    let leader = ens.leader(Duration::from_secs(60)).await;
    let follower = (leader + 1) % 3;
    // Up to 3 attempts: the stale reads come from races (a resumed follower answering before
    // it applied the commits it missed), won in about a quarter of the tries.
    let at = StaleSetup {
        leader: ens.nodes[leader].endpoint(),
        follower: ens.nodes[follower].endpoint(),
        follower_index: follower,
        namespace: "/lin-zk-stale",
    };
    stale_reads_are_caught("zookeeper", &mut ens.nodes, at, |ep, ns, mode| async move {
        connect(ep, &ns, mode).await
    })
    .await;
}

/// The partition is real: cut off, the leader stops serving and the other two elect a leader;
/// healed, it rejoins and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_cuts_the_leader_off() {
    let _slot = kv_testkit::cluster_slot().await;
    let Some(mut ens) = ZkEnsemble::start().await else {
        return;
    };
    if let Some(why) = &ens.partitions_unavailable {
        every_fault(&ens.partitions_unavailable);
        eprintln!("NOTE: partition test not run: {why}");
        return;
    }
    let old = ens.leader(Duration::from_secs(60)).await;
    ens.nodes[old].isolate();
    let started = Instant::now();
    let new = loop {
        let mut found = None;
        for i in (0..3).filter(|&i| i != old) {
            if mode(ens.nodes[i].port).await.as_deref() == Some("leader") {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no new leader within 60 s of cutting node {old} off"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "node {old} cut off: node {new} leads after {:?}",
        started.elapsed()
    );
    kv_testkit::wait_until(
        "the cut-off node to stop serving",
        Duration::from_secs(60),
        || {
            let m = ens.nodes[old].mode();
            async move { m.is_none().then_some(()) }
        },
    )
    .await;
    ens.nodes[old].heal();
    ens.nodes[old].wait_serving().await;
    println!("node {old} healed: {:?}", mode(ens.nodes[old].port).await);
}

/// The node's `Mode:` (off the async workers: a blocking four-letter-word call).
async fn mode(port: u16) -> Option<String> {
    tokio::task::spawn_blocking(move || kv_testkit::zookeeper::mode(port))
        .await
        .expect("mode probe panicked")
}

/// Locks under the same nemesis, aimed at the holder's member: six clients (two per member)
/// take one lock in turn and make guarded writes while holding it; tokens must be unique and follow real time, and the
/// accepted guarded writes must never interleave or go back to an older token
/// ([`kv_testkit::lockcheck`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locks_exclude_and_fence_under_faults() {
    let _slot = kv_testkit::cluster_slot().await;
    let Some(mut ens) = ZkEnsemble::start().await else {
        return;
    };
    let mut stores = Vec::new();
    for c in 0..6 {
        let ep = ens.nodes[c % 3].endpoint();
        // Sessions (so locks) end 2 s after their member went silent.
        let session = Duration::from_secs(2);
        stores.push(connect_with(ep, "lock-faults", Consistency::Linearizable, session).await);
    }
    // Faults long enough for a holder's session to expire behind them.
    lockcheck::run_aimed_lock_faults(
        "zookeeper (3 nodes)",
        stores,
        &mut ens.nodes,
        &ens.partitions_unavailable,
        Duration::from_secs(2),
        (1000, 2500),
        (2000, 4500),
    )
    .await;
}
