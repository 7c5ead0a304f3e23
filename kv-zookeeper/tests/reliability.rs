//! Reliability tests against real ZooKeeper servers started by `kv_testkit::zookeeper`
//! (each test its own server(s), ports and data dirs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kv_core::{Error, KvPair, LockOptions, PutOptions, Store, WatchEvent};
use kv_testkit::wait_until;
use kv_testkit::zookeeper::{ZkEnsemble, ZkOptions, ZkServer};
use kv_zookeeper::{ZkConfig, ZkStore};

const LONG: Duration = Duration::from_secs(60);

async fn store(endpoints: &str, ns: &str) -> ZkStore {
    ZkStore::connect(ZkConfig::new(endpoints.split(',')).with_namespace(ns))
        .await
        .unwrap_or_else(|e| panic!("connect to {endpoints}: {e}"))
}

/// Reads the stream until `pred` holds for an `Ok` item (errors are allowed meanwhile).
async fn wait_item<T: std::fmt::Debug>(
    s: &mut (impl futures::Stream<Item = kv_core::Result<T>> + Unpin),
    what: &str,
    pred: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + LONG;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.next()).await {
            Ok(Some(Ok(v))) if pred(&v) => return v,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => {
                eprintln!("{what}: error item (allowed while the server is down): {e}")
            }
            Ok(None) => panic!("{what}: stream ended"),
            Err(_) => panic!("{what}: not seen within {LONG:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restart_during_watches() {
    let Some(mut server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let watcher = store(&ep, "/restart").await;
    let writer = store(&ep, "/restart").await;
    writer
        .put("cfg/a", b"1", PutOptions::default())
        .await
        .unwrap();
    let mut w = watcher.watch("cfg/a").await.unwrap();
    let mut t = watcher.watch_tree("cfg").await.unwrap();
    let mut ev = watcher.watch_events("cfg", None).await.unwrap();
    let first = wait_item(&mut ev, "first typed item", |_| true).await;
    assert!(
        matches!(first, WatchEvent::Resync { ref pairs, .. } if pairs.len() == 1),
        "{first:?}"
    );
    let first = wait_item(&mut w, "first key state", |_| true).await;
    assert_eq!(first.unwrap().value, b"1");
    wait_item(&mut t, "first tree state", |v: &Vec<KvPair>| v.len() == 1).await;

    for round in 0..2 {
        server.kill();
        server.restart().await;
        // Write through the other handle as soon as it can (it reconnects by itself).
        let v = format!("after-restart-{round}");
        let deadline = Instant::now() + LONG;
        let pa = loop {
            match writer
                .put("cfg/a", v.as_bytes(), PutOptions::default())
                .await
            {
                Ok(p) => break p,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("put while reconnecting: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("put after restart: {e}"),
            }
        };
        let pb = writer
            .put(&format!("cfg/b{round}"), b"x", PutOptions::default())
            .await
            .unwrap();
        let got = wait_item(&mut w, "key state after restart", |s: &Option<KvPair>| {
            s.as_ref().map(|p| p.version) == Some(pa.version)
        })
        .await;
        assert_eq!(got.unwrap().value, v.as_bytes());
        let snap = wait_item(&mut t, "tree state after restart", |s: &Vec<KvPair>| {
            s.iter().any(|p| p.version == pb.version) && s.iter().any(|p| p.version == pa.version)
        })
        .await;
        assert_eq!(snap.len(), 2 + round);
        // The typed stream cannot prove that nothing was lost while the connection was down
        // (ZOOKEEPER-4698): it says so with a Resync, which holds both writes or is followed
        // by their events.
        let mut model: Option<std::collections::BTreeMap<String, u64>> = None;
        let done = |m: &std::collections::BTreeMap<String, u64>| {
            m.get("cfg/a") == Some(&pa.version) && m.get(pb.key.as_str()) == Some(&pb.version)
        };
        let deadline = Instant::now() + LONG;
        while !model.as_ref().is_some_and(done) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ev.next()).await {
                Ok(Some(Ok(WatchEvent::Resync { pairs, .. }))) => {
                    model = Some(pairs.into_iter().map(|p| (p.key, p.version)).collect());
                }
                Ok(Some(Ok(WatchEvent::Put { pair, .. }))) => {
                    if let Some(m) = model.as_mut() {
                        m.insert(pair.key, pair.version);
                    }
                }
                Ok(Some(Ok(WatchEvent::Delete { key, .. }))) => {
                    if let Some(m) = model.as_mut() {
                        m.remove(&key);
                    }
                }
                Ok(Some(Ok(other))) => panic!("unexpected typed item {other:?}"),
                Ok(Some(Err(e))) => eprintln!("typed stream error item while reconnecting: {e}"),
                Ok(None) => panic!("typed stream ended"),
                Err(_) => {
                    panic!("round {round}: no Resync with both writes within {LONG:?}: {model:?}")
                }
            }
        }
    }
    // A delete is delivered too.
    writer.delete("cfg/a").await.unwrap();
    wait_item(&mut w, "deletion", |s: &Option<KvPair>| s.is_none()).await;
    watcher.close().await.unwrap();
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ensemble_leader_failover() {
    let Some(mut ens) = ZkEnsemble::start().await else {
        return;
    };
    let eps = ens.endpoints();
    let s = ZkStore::connect(
        ZkConfig::new(eps.split(','))
            .with_namespace("/failover")
            .with_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let leader = ens.leader(LONG).await;
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let mut killed_at: Option<Instant> = None;
    let mut first_failure: Option<Instant> = None;
    let mut resumed_after: Option<Duration> = None;
    let mut i = 0u32;
    let mut failed_attempts = 0u32;
    let start = Instant::now();
    while i < 300 {
        if i == 100 && killed_at.is_none() {
            ens.nodes[leader].kill();
            killed_at = Some(Instant::now());
            eprintln!("killed leader node{} after {} writes", leader + 1, i);
        }
        let key = format!("k{i:04}");
        let val = format!("v{i}").into_bytes();
        match s.put(&key, &val, PutOptions::default()).await {
            Ok(p) => {
                let got = s.get(&key).await;
                match got {
                    Ok(g) => assert_eq!(g.version, p.version, "read back {key}"),
                    Err(e) => eprintln!("read back {key} failed transiently: {e}"),
                }
                if let (Some(k), None) = (killed_at, resumed_after) {
                    if first_failure.is_some() || i > 100 {
                        resumed_after = Some(k.elapsed());
                    }
                }
                acked.push((key, val));
                i += 1;
            }
            Err(e) => {
                failed_attempts += 1;
                first_failure.get_or_insert_with(Instant::now);
                assert!(e.is_transient(), "unexpected error during failover: {e}");
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "no progress: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let resumed = resumed_after.expect("writes went on after the kill");
    eprintln!(
        "service resumed {resumed:?} after SIGKILL of the leader ({failed_attempts} failed attempts meanwhile)"
    );
    assert!(
        resumed < Duration::from_secs(15),
        "service took {resumed:?} to resume"
    );
    // The killed node restarts and rejoins.
    ens.nodes[leader].restart().await;
    let mode = ens.nodes[leader].mode().unwrap();
    assert!(mode == "follower" || mode == "leader", "rejoined as {mode}");
    // Every acknowledged write reads back.
    for (k, v) in &acked {
        let g = s
            .get(k)
            .await
            .unwrap_or_else(|e| panic!("acknowledged {k} lost: {e}"));
        assert_eq!(&g.value, v, "{k}");
    }
    assert_eq!(s.list("").await.unwrap().len(), acked.len());
    println!(
        "ensemble failover: {} acknowledged writes all read back; resumed after {resumed:?}",
        acked.len()
    );
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_contention_counter() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let setup = store(&ep, "/contention").await;
    setup
        .put("counter", b"0", PutOptions::default())
        .await
        .unwrap();
    let held = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let ep = ep.clone();
        let held = held.clone();
        tasks.push(tokio::spawn(async move {
            let s = store(&ep, "/contention").await;
            for _ in 0..20 {
                let lock = s
                    .new_lock("lock", LockOptions::with_value(format!("task{t}")))
                    .await
                    .unwrap();
                assert_eq!(
                    held.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                let c = s.get("counter").await.unwrap();
                let n: u64 = c.value_str().parse().unwrap();
                s.put(
                    "counter",
                    (n + 1).to_string().as_bytes(),
                    PutOptions::default(),
                )
                .await
                .unwrap();
                held.fetch_sub(1, Ordering::SeqCst);
                lock.unlock().await.unwrap();
            }
            s.close().await.unwrap();
        }));
    }
    let start = Instant::now();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(240), t)
            .await
            .expect("contention test hung")
            .unwrap();
    }
    let total = setup.get("counter").await.unwrap();
    println!(
        "lock contention: 16 tasks x 20 rounds in {:?}",
        start.elapsed()
    );
    assert_eq!(total.value_str(), "320");
    assert!(!setup.exists("lock").await.unwrap(), "lock key left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_expiry_fires_lost_and_frees_lock() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let cfg = ZkConfig::new([&ep])
        .with_namespace("/expiry")
        .with_session_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    let a = ZkStore::connect(cfg.clone()).await.unwrap();
    let lock = a
        .new_lock("leader", LockOptions::with_value("a"))
        .await
        .unwrap();
    let lost = lock.lost_signal();
    let mut w = a.watch("other").await.unwrap();
    assert!(wait_item(&mut w, "first", |_| true).await.is_none());
    server.pause();
    // Past the session timeout (the client gives up after 7/5 of it).
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.resume();
    let e = tokio::time::timeout(LONG, lost.wait())
        .await
        .expect("lost signal did not fire");
    assert!(matches!(e, Error::LockLost { .. }), "{e}");
    eprintln!("lost: {e}");
    // Another client takes the lock.
    let b = ZkStore::connect(cfg.clone()).await.unwrap();
    let lb = tokio::time::timeout(LONG, b.new_lock("leader", LockOptions::with_value("b")))
        .await
        .expect("second client could not take the lock")
        .unwrap();
    assert_eq!(b.get("leader").await.unwrap().value, b"b");
    // The first handle works again on its new session, and its watch resumed.
    wait_until("store a usable again", LONG, || async {
        a.put("other", b"x", PutOptions::default()).await.ok()
    })
    .await;
    wait_item(
        &mut w,
        "watch after session expiry",
        |s: &Option<KvPair>| s.is_some(),
    )
    .await;
    assert!(matches!(lock.unlock().await, Err(Error::LockLost { .. })));
    lb.unlock().await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn digest_auth() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let alice = ZkStore::from_url(&format!("zk://alice:s3cret@{ep}/secure"))
        .await
        .unwrap();
    alice.put("k", b"v", PutOptions::default()).await.unwrap();
    // The store (and its config) never print the password.
    let shown = format!("{alice:?} {:?}", alice.config());
    assert!(
        shown.contains("alice") && !shown.contains("s3cret"),
        "{shown}"
    );
    // Right credentials (another session, digest= form).
    let again = ZkStore::from_url(&format!("zk://{ep}/secure?digest=alice:s3cret"))
        .await
        .unwrap();
    assert_eq!(again.get("k").await.unwrap().value, b"v");
    // Wrong password and no credentials.
    for url in [
        format!("zk://alice:wrong@{ep}/secure"),
        format!("zk://{ep}/secure"),
    ] {
        let other = ZkStore::from_url(&url).await.unwrap();
        match other.get("k").await {
            Err(Error::Unauthorized { .. }) => {}
            r => panic!("{url}: expected Unauthorized, got {r:?}"),
        }
        match other.put("k", b"x", PutOptions::default()).await {
            Err(Error::Unauthorized { .. }) => {}
            r => panic!("{url}: expected Unauthorized on put, got {r:?}"),
        }
        other.close().await.unwrap();
    }
    assert_eq!(alice.get("k").await.unwrap().value, b"v");
    alice.close().await.unwrap();
    again.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_without_extended_types_is_unsupported() {
    let Some(server) = ZkServer::start_with(ZkOptions {
        extended_types: false,
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let s = store(&server.endpoint(), "/nottl").await;
    match s
        .put("t", b"v", PutOptions::with_ttl(Duration::from_secs(5)))
        .await
    {
        Err(Error::Unsupported { operation, .. }) => {
            assert!(operation.contains("extendedTypesEnabled"), "{operation}")
        }
        r => panic!("expected Unsupported, got {r:?}"),
    }
    assert!(!s.exists("t").await.unwrap());
    s.put("p", b"v", PutOptions::default()).await.unwrap();
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_server_times_out_or_unreachable() {
    let Some(mut server) = ZkServer::start().await else {
        return;
    };
    let s = ZkStore::connect(
        ZkConfig::new([server.endpoint()])
            .with_namespace("/dead")
            .with_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    s.put("k", b"v", PutOptions::default()).await.unwrap();
    server.kill();
    let start = Instant::now();
    let r = s.get("k").await;
    assert!(
        matches!(
            r,
            Err(Error::Timeout { .. }) | Err(Error::Unreachable { .. })
        ),
        "{r:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "took {:?}",
        start.elapsed()
    );
    let r = s.put("k", b"w", PutOptions::default()).await;
    assert!(
        matches!(
            r,
            Err(Error::Timeout { .. }) | Err(Error::Unreachable { .. })
        ),
        "{r:?}"
    );
    // Connecting to nothing is a quick Unreachable.
    let start = Instant::now();
    let r =
        ZkStore::connect(ZkConfig::new([server.endpoint()]).with_timeout(Duration::from_secs(3)))
            .await;
    assert!(matches!(r, Err(Error::Unreachable { .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(4));
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_a_long_outage_and_resumes() {
    let Some(mut server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let cfg = ZkConfig::new([&ep])
        .with_namespace("/outage")
        .with_timeout(Duration::from_secs(2));
    let s = ZkStore::connect(cfg).await.unwrap();
    let mut w = s.watch("k").await.unwrap();
    assert!(w.next().await.unwrap().unwrap().is_none());
    server.kill();
    // The outage outlasts the store timeout: an Err item, and the stream goes on.
    let item = tokio::time::timeout(LONG, w.next())
        .await
        .expect("no error item during the outage");
    match item {
        Some(Err(Error::Unreachable { .. })) => {}
        other => panic!("expected an Unreachable item, got {other:?}"),
    }
    server.restart().await;
    let writer = store(&ep, "/outage").await;
    let p = writer
        .put("k", b"back", PutOptions::default())
        .await
        .unwrap();
    let got = wait_item(&mut w, "state after the outage", |s: &Option<KvPair>| {
        s.as_ref().map(|p| p.version).is_some()
    })
    .await;
    assert_eq!(got.unwrap().version, p.version);
    s.close().await.unwrap();
    match tokio::time::timeout(LONG, w.next()).await.unwrap() {
        Some(Err(Error::Closed)) => {}
        other => panic!("expected Closed after close, got {other:?}"),
    }
    assert!(tokio::time::timeout(LONG, w.next())
        .await
        .unwrap()
        .is_none());
    writer.close().await.unwrap();
}
