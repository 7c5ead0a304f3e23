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
use kv_testkit::faults::{
    check_and_report, every_fault, run_clients, run_seconds, Fault, Nemesis, Workload,
};
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

async fn close_all(stores: Vec<Arc<dyn Store>>) {
    for s in stores {
        let _ = s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_reads_are_linearizable_under_kills_pauses_and_partitions() {
    let _slot = kv_testkit::cluster_slot().await;
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
    if summary.undecided > 0 {
        // The search's budget runs out on long histories with many unknown-outcome writes
        // (each may take effect at any later point); they come in bursts when the leader dies.
        eprintln!("the nemesis's log:");
        for line in &report.log {
            eprintln!("    {line}");
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_reads_on_a_lagging_follower_are_caught() {
    let _slot = kv_testkit::cluster_slot().await;
    let Some(mut cluster) = ConsulCluster::start().await else {
        return;
    };
    let leader = cluster.leader(Duration::from_secs(60)).await;
    let follower = (leader + 1) % 3;
    // Up to 3 attempts (one has always been enough): a follower applies a commit after the
    // leader has answered the write (a majority without it stored the entry), so `?stale`
    // reads there see older values, from the first writes on; freezing it widens the lag.
    let mut found = 0;
    for attempt in 0..3u64 {
        let ns = format!("lin-consul-stale-{attempt}");
        // Writers on the leader (default reads), readers on the follower (stale reads).
        let mut stores = Vec::new();
        for _ in 0..2 {
            let ep = cluster.members[leader].endpoint();
            stores.push(connect(ep, &ns, Consistency::Linearizable).await);
        }
        for _ in 0..2 {
            let ep = cluster.members[follower].endpoint();
            stores.push(connect(ep, &ns, Consistency::Stale).await);
        }
        let workload = Workload {
            keys: vec!["a".into(), "b".into()],
            duration: Duration::from_secs(8),
            op_timeout: Duration::from_secs(4),
            get_per_mille: 500,
            seed: 0x5a1e + attempt,
        };
        // Freeze the follower often and briefly: the quorum (leader + other follower) goes on.
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
            nemesis.run(&mut cluster.members, until)
        );
        let summary = check_and_report(
            &format!(
                "consul (consistency=stale on a paused follower, attempt {})",
                attempt + 1
            ),
            &histories,
            &report,
            start.elapsed(),
        );
        close_all(stores).await;
        assert_eq!(summary.undecided, 0, "some histories could not be decided");
        found = summary.violations;
        if found > 0 {
            break;
        }
    }
    assert!(found > 0, "the checker found no stale read in 3 attempts");
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
