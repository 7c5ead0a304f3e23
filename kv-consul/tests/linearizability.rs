//! Linearizability under faults on a 3-server Consul cluster: six clients (two per member,
//! each with its own store connected to that member only) do random put / get /
//! compare-and-swap on a few keys while a nemesis SIGKILLs and restarts, SIGSTOPs and
//! resumes, or cuts off (nftables, [`kv_testkit::partition`]) members; every key's history
//! must be linearizable with kv's default (`?consistent`) reads. With `consistency=stale`
//! (`?stale`) on a follower that the nemesis keeps freezing, the checker must find the stale
//! reads.
//! `KV_LIN_SECONDS` makes the run longer (default 15 s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_consul::{ConsulConfig, ConsulStore};
use kv_core::{Consistency, PutOptions, Store};
use kv_testkit::consul_cluster::ConsulCluster;
use kv_testkit::faults::{every_fault, run_default_reads, stale_reads_are_caught, StaleSetup};
use kv_testkit::lockcheck;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_reads_are_linearizable_under_kills_pauses_and_partitions() {
    let _slot = kv_testkit::cluster_slot().await;
    let Some(mut cluster) = ConsulCluster::start().await else {
        return;
    };
    let mut stores = Vec::new();
    for c in 0..6 {
        let ep = cluster.members[c % 3].endpoint();
        stores.push(connect(ep, "lin-consul", Consistency::Linearizable).await);
    }
    run_default_reads(
        "consul (3 servers, default reads)",
        stores,
        &mut cluster.members,
        &cluster.partitions_unavailable,
        0xc075,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_reads_on_a_lagging_follower_are_caught() {
    let _slot = kv_testkit::cluster_slot().await;
    let Some(mut cluster) = ConsulCluster::start().await else {
        return;
    };
    let leader = cluster.leader(Duration::from_secs(60)).await;
    let follower = (leader + 1) % 3;
    // One attempt has always been enough: a follower applies a commit after the leader has
    // answered the write (a majority without it stored the entry), so `?stale` reads there
    // see older values, from the first writes on; freezing it widens the lag.
    let at = StaleSetup {
        leader: cluster.members[leader].endpoint(),
        follower: cluster.members[follower].endpoint(),
        follower_index: follower,
        namespace: "lin-consul-stale",
    };
    stale_reads_are_caught(
        "consul",
        &mut cluster.members,
        at,
        |ep, ns, mode| async move { connect(ep, &ns, mode).await },
    )
    .await;
}

/// The partition is real: cut off, the leader loses its followers and the other two elect a
/// leader; a write through the cut-off member fails (within the store's timeout); healed, it
/// rejoins and writes through it work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_cuts_the_leader_off() {
    let _slot = kv_testkit::cluster_slot().await;
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
    // Its own key: the cut-off member may still apply it once healed (a timed-out write
    // may or may not happen, also later), racing the write below.
    let r = cut.put("k-cut", b"v1", PutOptions::default()).await;
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

/// Locks under the same nemesis, aimed at the holder's member: six clients (two per member)
/// take one lock in turn and make guarded writes while holding it; tokens must be unique and
/// follow real time, and the accepted guarded writes must never interleave or go back to an
/// older token ([`kv_testkit::lockcheck`]). A lock is a Consul session, which the servers
/// end when the holder's node fails its serf health check (cut off or paused long enough).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locks_exclude_and_fence_under_faults() {
    let _slot = kv_testkit::cluster_slot().await;
    let Some(mut cluster) = ConsulCluster::start().await else {
        return;
    };
    let mut stores = Vec::new();
    for c in 0..6 {
        let ep = cluster.members[c % 3].endpoint();
        stores.push(connect(ep, "lock-faults", Consistency::Linearizable).await);
    }
    // Faults long enough for serf to declare the holder's node failed.
    lockcheck::run_aimed_lock_faults(
        "consul (3 servers)",
        stores,
        &mut cluster.members,
        &cluster.partitions_unavailable,
        kv_consul::MIN_LOCK_TTL * 2,
        (1000, 2500),
        (3000, 8000),
    )
    .await;
}
