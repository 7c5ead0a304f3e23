//! Reliability against real etcd members started by each test: restarts during watches,
//! leader failover, lock contention, lease loss, dead endpoints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kv_core::{Error, KvPair, LockOptions, PutOptions, Store};
use kv_etcd::EtcdStore;
use kv_testkit::etcd::{EtcdCluster, EtcdServer};
use kv_testkit::{free_port, wait_until};

const DEADLINE: Duration = Duration::from_secs(30);

async fn store(endpoints: &str, ns: &str, opts: &str) -> EtcdStore {
    EtcdStore::from_url(&format!("etcd://{endpoints}/{ns}{opts}"))
        .await
        .expect("connect")
}

/// Reads items until `done` accepts one; panics on a silent end or after the deadline.
async fn next_until<T: std::fmt::Debug>(
    stream: &mut (impl futures::Stream<Item = kv_core::Result<T>> + Unpin),
    what: &str,
    mut done: impl FnMut(&T) -> bool,
) -> Vec<String> {
    let start = Instant::now();
    let mut errors = Vec::new();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, stream.next()).await {
            Err(_) => panic!("{what}: not delivered within {DEADLINE:?} (errors seen: {errors:?})"),
            Ok(None) => panic!("{what}: the stream ended silently"),
            Ok(Some(Err(e))) => errors.push(e.to_string()),
            Ok(Some(Ok(v))) if done(&v) => return errors,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_during_watch_delivers_final_states() {
    let Some(mut server) = EtcdServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let s = store(&ep, "restart", "?timeout=3s").await;
    let mut w = s.watch("k").await.unwrap();
    let mut t = s.watch_tree("dir").await.unwrap();
    next_until(&mut w, "initial key state", |v| v.is_none()).await;
    next_until(&mut t, "initial tree", |v| v.is_empty()).await;
    s.put("k", b"1", PutOptions::default()).await.unwrap();
    s.put("dir/a", b"1", PutOptions::default()).await.unwrap();
    next_until(&mut w, "k=1", |v| {
        v.as_ref().is_some_and(|p| p.value == b"1")
    })
    .await;
    next_until(&mut t, "dir/a", |v| v.len() == 1).await;

    server.kill();
    // Writes during the outage fail (bounded by the timeout), they do not hang.
    let started = Instant::now();
    let r = s.put("k", b"lost", PutOptions::default()).await;
    assert!(
        matches!(r, Err(Error::Unreachable { .. } | Error::Timeout { .. })),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    server.restart().await;

    // Service resumes by itself; final states arrive on both streams.
    let v2 = wait_until("writes after restart", DEADLINE, || async {
        s.put("k", b"2", PutOptions::default()).await.ok()
    })
    .await;
    s.put("dir/b", b"2", PutOptions::default()).await.unwrap();
    s.delete("dir/a").await.unwrap();
    let errs = next_until(&mut w, "k=2 after restart", |v| {
        v.as_ref().is_some_and(|p| p.version == v2.version)
    })
    .await;
    println!("key watch errors during the outage: {errs:?}");
    let errs = next_until(&mut t, "tree after restart", |v: &Vec<KvPair>| {
        v.len() == 1 && v[0].key == "dir/b"
    })
    .await;
    println!("tree watch errors during the outage: {errs:?}");
    // And the streams are still live.
    s.put("k", b"3", PutOptions::default()).await.unwrap();
    next_until(&mut w, "k=3", |v| {
        v.as_ref().is_some_and(|p| p.value == b"3")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_in_three_member_cluster() {
    let Some(mut cluster) = EtcdCluster::start().await else {
        return;
    };
    let eps = cluster.endpoints();
    let s = store(&eps, "failover", "?timeout=3s").await;
    let leader = cluster.leader(DEADLINE).await;
    println!("leader before: {}", cluster.members[leader].name);

    let mut acked: Vec<(String, KvPair)> = Vec::new();
    let mut longest_gap = Duration::ZERO;
    let mut last_ok = Instant::now();
    let mut failures = 0;
    let mut killed_at = None;
    let mut resumed_after = None;
    let start = Instant::now();
    let mut i = 0u32;
    while acked.len() < 300 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "writes did not resume"
        );
        if acked.len() == 100 && killed_at.is_none() {
            cluster.members[leader].kill();
            killed_at = Some(Instant::now());
        }
        let key = format!("k{i}");
        i += 1;
        match s.put(&key, key.as_bytes(), PutOptions::default()).await {
            Ok(p) => {
                if let (Some(k), None) = (killed_at, resumed_after) {
                    resumed_after = Some(k.elapsed());
                }
                // Reads go through kv too.
                match s.get(&key).await {
                    Ok(r) => assert!(r.version >= p.version),
                    Err(e) => assert!(e.is_transient(), "{e:?}"),
                }
                longest_gap = longest_gap.max(last_ok.elapsed());
                last_ok = Instant::now();
                acked.push((key, p));
            }
            Err(e) => {
                assert!(e.is_transient(), "unexpected error kind: {e:?}");
                failures += 1;
            }
        }
    }
    let resumed_after = resumed_after.expect("a write after the kill");
    println!(
        "failover: {} writes acknowledged, {failures} failed during failover, first write {resumed_after:?} after the SIGKILL, longest gap between acknowledged writes {longest_gap:?}",
        acked.len()
    );
    assert!(
        resumed_after < Duration::from_secs(15),
        "service resumed after {resumed_after:?}"
    );

    // Every acknowledged write is there.
    for (key, p) in &acked {
        let got = wait_until("read back", DEADLINE, || async { s.get(key).await.ok() }).await;
        assert_eq!(got.value, key.as_bytes());
        assert_eq!(got.version, p.version, "{key}");
    }

    // The killed member restarts on its data dir and rejoins.
    let m = &mut cluster.members[leader];
    m.restart().await;
    let status = m.ctl(&["endpoint", "status", "--write-out=simple"]);
    println!("rejoined: {}", status.trim());
    for m in &cluster.members {
        assert!(m.is_healthy(), "{} unhealthy after rejoin", m.name);
    }
    // The rejoined member has caught up with every write.
    let last = &acked.last().unwrap().0;
    let rejoined = store(
        &cluster.members[leader].endpoint(),
        "failover",
        "?timeout=3s",
    )
    .await;
    wait_until("rejoined member caught up", DEADLINE, || async {
        rejoined.get(last).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_contention_counter_is_exact() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let setup = store(&ep, "contention", "").await;
    setup
        .put("counter", b"0", PutOptions::default())
        .await
        .unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let ep = ep.clone();
        tasks.push(tokio::spawn(async move {
            let s = store(&ep, "contention", "").await;
            for _ in 0..20 {
                let lock = s
                    .new_lock(
                        "the-lock",
                        LockOptions::with_value(format!("task {t}")).ttl(Duration::from_secs(10)),
                    )
                    .await
                    .unwrap();
                let c = s.get("counter").await.unwrap();
                let n: u64 = c.value_str().parse().unwrap();
                // Plain put (not CAS): only the lock keeps increments from being lost.
                s.put(
                    "counter",
                    (n + 1).to_string().as_bytes(),
                    PutOptions::default(),
                )
                .await
                .unwrap();
                assert!(!lock.is_lost());
                lock.unlock().await.unwrap();
            }
            s.close().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = setup.get("counter").await.unwrap();
    println!("320 lock round trips in {:?}", started.elapsed());
    assert_eq!(n.value, b"320");
    assert!(!setup.exists("the-lock").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_lease_fires_lost_signal() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let s = store(&server.endpoint(), "lease", "").await;
    let lock = s
        .new_lock("l", LockOptions::with_value("holder"))
        .await
        .unwrap();
    let lost = lock.lost_signal();
    let leases = server.ctl(&["lease", "list"]);
    // "found 1 leases\n<hex id>\n"
    let ids: Vec<&str> = leases
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(ids.len(), 1, "{leases}");
    server.ctl(&["lease", "revoke", ids[0]]);
    let e = tokio::time::timeout(DEADLINE, lost.wait())
        .await
        .expect("lost signal");
    assert!(matches!(e, Error::LockLost { .. }), "{e:?}");
    println!("lost: {e}");
    assert!(lock.is_lost());
    assert!(!s.exists("l").await.unwrap());
    assert!(matches!(lock.unlock().await, Err(Error::LockLost { .. })));
    // The lock is free again.
    let again = tokio::time::timeout(DEADLINE, s.new_lock("l", LockOptions::default()))
        .await
        .unwrap()
        .unwrap();
    again.unlock().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_fires_lost_signal_and_frees_the_lock() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let s = store(&server.endpoint(), "frozen", "?timeout=2s").await;
    let lock = s
        .new_lock(
            "l",
            LockOptions::with_value("holder").ttl(Duration::from_secs(3)),
        )
        .await
        .unwrap();
    let lost = lock.lost_signal();
    server.pause();
    let started = Instant::now();
    let e = tokio::time::timeout(DEADLINE, lost.wait())
        .await
        .expect("lost signal");
    println!("lost after {:?} of silence: {e}", started.elapsed());
    server.resume();
    // After resuming, etcd expires the lease (it was not renewed) and the lock is free.
    let s2 = store(&server.endpoint(), "frozen", "").await;
    let again = tokio::time::timeout(DEADLINE, s2.new_lock("l", LockOptions::default()))
        .await
        .unwrap()
        .unwrap();
    again.unlock().await.unwrap();
    drop(lock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_endpoint_fails_within_timeout() {
    let port = free_port();
    let started = Instant::now();
    let r = EtcdStore::from_url(&format!("etcd://127.0.0.1:{port}/x?timeout=2s")).await;
    let elapsed = started.elapsed();
    match r {
        Err(Error::Unreachable { message, .. }) => {
            println!("dead endpoint: {message} after {elapsed:?}")
        }
        Err(Error::Timeout { .. }) => println!("dead endpoint: timeout after {elapsed:?}"),
        other => panic!("{other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_a_dead_server_are_bounded() {
    let Some(mut server) = EtcdServer::start().await else {
        return;
    };
    let s = Arc::new(store(&server.endpoint(), "dead", "?timeout=2s").await);
    server.kill();
    for op in ["get", "put", "list", "watch"] {
        let started = Instant::now();
        let r: kv_core::Result<()> = match op {
            "get" => s.get("k").await.map(|_| ()),
            "put" => s.put("k", b"v", PutOptions::default()).await.map(|_| ()),
            "list" => s.list("").await.map(|_| ()),
            _ => s.watch("k").await.map(|_| ()),
        };
        let elapsed = started.elapsed();
        assert!(
            matches!(r, Err(Error::Unreachable { .. } | Error::Timeout { .. })),
            "{op}: {r:?}"
        );
        assert!(elapsed < Duration::from_secs(5), "{op} took {elapsed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_right_and_wrong_password() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    server.ctl(&["user", "add", "root:s3cret", "--interactive=false"]);
    server.ctl(&["auth", "enable"]);
    let ep = server.endpoint();
    let s = EtcdStore::from_url(&format!("etcd://root:s3cret@{ep}/auth"))
        .await
        .unwrap();
    s.put("k", b"v", PutOptions::default()).await.unwrap();
    assert_eq!(s.get("k").await.unwrap().value, b"v");
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("s3cret") && dbg.contains("auth"), "{dbg}");
    let s2 = EtcdStore::from_url(&format!("etcd://{ep}/auth?user=root&password=s3cret"))
        .await
        .unwrap();
    assert_eq!(s2.get("k").await.unwrap().value, b"v");
    let started = Instant::now();
    match EtcdStore::from_url(&format!("etcd://root:wrong@{ep}/auth")).await {
        Err(Error::Unauthorized { message, .. }) => {
            assert!(!message.contains("wrong"), "{message}");
            println!("wrong password: {message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    match EtcdStore::from_url(&format!("etcd://{ep}/auth")).await {
        Err(Error::Unauthorized { message, .. }) => println!("no credentials: {message}"),
        other => panic!("{other:?}"),
    }
}

/// A loopback TCP proxy the test can cut: while disabled it drops every connection, so the
/// client sees an outage while etcd itself stays up (and can be written to and compacted).
struct Proxy {
    port: u16,
    enabled: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let enabled = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (en, cs) = (enabled.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !en.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                cs.lock().unwrap().push(h.abort_handle());
            }
        });
        Proxy {
            port,
            enabled,
            conns,
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.enabled
            .store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.enabled
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_with_compaction_reports_errors_then_current_state() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let proxy = Proxy::start(server.endpoint()).await;
    let via_proxy = store(&proxy.endpoint(), "compact", "?timeout=2s").await;
    let direct = store(&server.endpoint(), "compact", "").await;
    let mut w = via_proxy.watch("k").await.unwrap();
    let mut t = via_proxy.watch_tree("d").await.unwrap();
    next_until(&mut w, "initial", |v| v.is_none()).await;
    next_until(&mut t, "initial", |v| v.is_empty()).await;
    direct.put("k", b"0", PutOptions::default()).await.unwrap();
    direct
        .put("d/gone", b"0", PutOptions::default())
        .await
        .unwrap();
    next_until(&mut w, "k=0", |v| v.is_some()).await;
    next_until(&mut t, "d/gone", |v| v.len() == 1).await;

    proxy.cut();
    // The outage is reported as Err items (not a silent end) while it lasts.
    let err = match tokio::time::timeout(DEADLINE, w.next())
        .await
        .expect("an error item during the outage")
    {
        Some(Err(e)) => e,
        Some(Ok(v)) => panic!("unexpected state during outage: {v:?}"),
        None => panic!("watch ended silently"),
    };
    println!("outage reported as: {err}");
    assert!(err.is_transient(), "{err:?}");

    // Meanwhile: many writes, then the history is compacted away.
    let mut last = 0;
    for i in 1..=20 {
        last = direct
            .put("k", format!("{i}").as_bytes(), PutOptions::default())
            .await
            .unwrap()
            .version;
    }
    direct.delete("d/gone").await.unwrap();
    let kept = direct
        .put("d/kept", b"1", PutOptions::default())
        .await
        .unwrap();
    server.ctl(&["compact", &kept.version.to_string()]);

    proxy.restore();
    next_until(&mut w, "current state after compaction", |v| {
        v.as_ref()
            .is_some_and(|p| p.version == last && p.value == b"20")
    })
    .await;
    next_until(
        &mut t,
        "current tree after compaction",
        |v: &Vec<KvPair>| v.len() == 1 && v[0].key == "d/kept" && v[0].version == kept.version,
    )
    .await;
    // Both streams go on.
    let v = direct
        .put("k", b"after", PutOptions::default())
        .await
        .unwrap();
    next_until(&mut w, "k after", |s| {
        s.as_ref().is_some_and(|p| p.version == v.version)
    })
    .await;
}
