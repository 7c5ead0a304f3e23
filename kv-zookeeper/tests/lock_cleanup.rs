//! What a lock attempt or a hold leaves on the server is removed even when the server cannot
//! answer at that moment: a contender node left behind by a live session sits in the queue
//! for good and blocks every later acquisition (each test its own server).

use std::time::{Duration, Instant};

use kv_core::{LockOptions, Store};
use kv_testkit::zookeeper::ZkServer;
use kv_zookeeper::{ZkConfig, ZkStore, LOCKS_DIR};

/// The test servers' cap (20 ticks of 500 ms), far longer than the pauses below: the sessions
/// outlive them, so what frees the lock must be kv's clean-up, not a session's end.
const SESSION: Duration = Duration::from_secs(10);
/// Bound on the acquisition that proves the lock is free (well under `SESSION`).
const FREE_WITHIN: Duration = Duration::from_secs(8);

async fn store(ep: &str, ns: &str) -> ZkStore {
    let cfg = ZkConfig::new([ep])
        .with_namespace(ns)
        .with_session_timeout(SESSION)
        .with_timeout(Duration::from_secs(2));
    ZkStore::connect(cfg)
        .await
        .unwrap_or_else(|e| panic!("connect to {ep}: {e}"))
}

/// The children of the lock directory of `key` (raw client).
async fn contenders(ep: &str, ns: &str, key: &str) -> Vec<String> {
    let raw = zookeeper_client::Client::connect(ep)
        .await
        .expect("raw client");
    let mut c = raw
        .list_children(&format!("{ns}/{LOCKS_DIR}/{key}"))
        .await
        .unwrap_or_default();
    c.sort();
    c
}

/// Waits until the lock directory holds `n` contenders.
async fn wait_contenders(ep: &str, ns: &str, key: &str, n: usize) {
    kv_testkit::wait_until(
        &format!("{n} contenders on {key}"),
        Duration::from_secs(30),
        || async { (contenders(ep, ns, key).await.len() == n).then_some(()) },
    )
    .await;
}

/// Pauses the server (SIGSTOP) for `d`: long past the stores' call timeout (2 s), well inside
/// their session timeout.
async fn pause_for(server: &ZkServer, d: Duration) {
    server.pause();
    tokio::time::sleep(d).await; // the fault's length, not a wait for a condition
    server.resume();
}

/// Checks a third store takes the lock within [`FREE_WITHIN`] and releases it.
async fn third_takes_it(ep: &str, ns: &str, key: &str, stuck: &[String]) {
    let c = store(ep, ns).await;
    let t = Instant::now();
    let got =
        tokio::time::timeout(FREE_WITHIN, c.new_lock(key, LockOptions::with_value("c"))).await;
    let Ok(lock) = got else {
        let now = contenders(ep, ns, key).await;
        panic!("the lock stayed blocked for {FREE_WITHIN:?} (contenders before: {stuck:?}, now: {now:?})");
    };
    let lock = lock.expect("new_lock");
    eprintln!("third store got the lock after {:?}", t.elapsed());
    lock.unlock().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempt_dropped_while_the_server_is_paused_leaves_no_contender() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let (ep, ns, key) = (server.endpoint(), "/drop-attempt", "job");
    let a = store(&ep, ns).await;
    let b = store(&ep, ns).await;
    let held = a.new_lock(key, LockOptions::with_value("a")).await.unwrap();
    // b queues behind a, then gives up while the server cannot answer its clean-up.
    let attempt = tokio::spawn(async move {
        let r = b.new_lock(key, LockOptions::with_value("b")).await;
        (b, r.map(|_| ()))
    });
    wait_contenders(&ep, ns, key, 2).await;
    let stuck = contenders(&ep, ns, key).await;
    server.pause();
    attempt.abort(); // its clean-up cannot be answered now
    tokio::time::sleep(Duration::from_secs(5)).await; // the pause's length
    server.resume();
    held.unlock().await.unwrap();
    third_takes_it(&ep, ns, key, &stuck).await;
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlock_while_the_server_is_paused_frees_the_lock_after() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let (ep, ns, key) = (server.endpoint(), "/unlock-paused", "job");
    let a = store(&ep, ns).await;
    let held = a.new_lock(key, LockOptions::with_value("a")).await.unwrap();
    let stuck = contenders(&ep, ns, key).await;
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    // The unlock is bounded by the store's timeout and cannot reach the server.
    let unlock = tokio::spawn(held.unlock());
    pause_for(&server, Duration::from_secs(5)).await;
    let r = tokio::time::timeout(Duration::from_secs(10), unlock)
        .await
        .expect("unlock is bounded")
        .unwrap();
    eprintln!("unlock during the pause: {r:?}");
    third_takes_it(&ep, ns, key, &stuck).await;
    a.close().await.unwrap();
}
