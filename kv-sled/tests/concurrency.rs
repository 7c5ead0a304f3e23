//! Many handles and tasks writing one database at once with `flush=true` (the default): every
//! call must finish within a generous deadline, counters must be exact, and `close` must stay
//! bounded while writers run. sled 0.34's concurrent `flush_async` hung about one run in four
//! here, so every scenario is repeated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::{Error, KvPair, PutOptions, Store, Txn};
use kv_sled::{SledConfig, SledStore};

/// Bound on one repetition: far above what it takes (well under a second), far below "forever".
const REP_DEADLINE: Duration = Duration::from_secs(60);

async fn handles(path: &std::path::Path, n: usize) -> Vec<Arc<SledStore>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Arc::new(
            SledStore::connect(SledConfig::new(path)).await.unwrap(),
        ));
    }
    out
}

async fn close_all(stores: Vec<Arc<SledStore>>) {
    for s in stores {
        tokio::time::timeout(REP_DEADLINE, s.close())
            .await
            .expect("close within the deadline")
            .unwrap();
    }
}

/// Increments the counter at `key` once with a read-modify-write `atomic_put` loop; returns
/// how many compare-and-swap attempts lost.
async fn increment(store: &SledStore, key: &str) -> u64 {
    let mut lost = 0;
    loop {
        let current = match store.get(key).await {
            Ok(p) => Some(p),
            Err(Error::NotFound { .. }) => None,
            Err(e) => panic!("get {key}: {e}"),
        };
        let n: u64 = current
            .as_ref()
            .map(|p| p.value_str().parse().unwrap())
            .unwrap_or(0);
        let next = (n + 1).to_string();
        match store
            .atomic_put(
                key,
                next.as_bytes(),
                current.as_ref(),
                PutOptions::default(),
            )
            .await
        {
            Ok(_) => return lost,
            Err(Error::KeyModified { .. } | Error::KeyExists { .. }) => lost += 1,
            Err(e) => panic!("atomic_put {key}: {e}"),
        }
    }
}

/// `handles` handles, one task each, increment one counter `per_task` times.
async fn cas_counter_round(tag: &str, n_handles: usize, per_task: u64) -> u64 {
    let dir = kv_testkit::temp_dir(tag);
    let stores = handles(dir.path(), n_handles).await;
    let tasks: Vec<_> = stores
        .iter()
        .cloned()
        .map(|s| {
            tokio::spawn(async move {
                let mut lost = 0;
                for _ in 0..per_task {
                    lost += increment(&s, "counter").await;
                }
                lost
            })
        })
        .collect();
    let mut lost = 0;
    for t in tasks {
        lost += t.await.unwrap();
    }
    let total = stores[0].get("counter").await.unwrap();
    assert_eq!(
        total.value_str(),
        (n_handles as u64 * per_task).to_string(),
        "the counter must end at exactly the number of successful increments"
    );
    close_all(stores).await;
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cas_counter_is_exact_with_8_and_64_handles() {
    // (handles, increments per handle, repetitions): 120 increments as in the report, then 64
    // handles at once.
    for (n, per_task, reps) in [(8, 15, 24), (64, 4, 8)] {
        let mut lost = 0;
        let start = Instant::now();
        for rep in 0..reps {
            lost += tokio::time::timeout(
                REP_DEADLINE,
                cas_counter_round(&format!("sled-cas-{n}-{rep}"), n, per_task),
            )
            .await
            .unwrap_or_else(|_| panic!("{n} handles, repetition {rep}: hung for {REP_DEADLINE:?}"));
        }
        eprintln!(
            "{n} handles x {per_task} increments x {reps} repetitions: {:?}, {lost} lost CAS attempts",
            start.elapsed()
        );
    }
}

/// `n` handles, one task each, mixing put / atomic_put / txn / delete on their own keys and on
/// one shared txn counter; returns the number of writes acknowledged.
async fn mixed_round(tag: &str, n: usize, steps: u64) -> u64 {
    let dir = kv_testkit::temp_dir(tag);
    let stores = handles(dir.path(), n).await;
    let acked = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = stores
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, s)| {
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut own: Option<KvPair> = None;
                for step in 0..steps {
                    let key = format!("t{i}/k");
                    match step % 4 {
                        0 => {
                            own = Some(s.put(&key, b"p", PutOptions::default()).await.unwrap());
                        }
                        1 => {
                            let prev = own.take();
                            own = Some(
                                s.atomic_put(&key, b"a", prev.as_ref(), PutOptions::default())
                                    .await
                                    .unwrap(),
                            );
                        }
                        2 => {
                            // A txn that writes this task's log entry and bumps the shared
                            // counter, retried until its compare holds.
                            loop {
                                let cur = s.get("shared").await.ok();
                                let n: u64 = cur
                                    .as_ref()
                                    .map(|p| p.value_str().parse().unwrap())
                                    .unwrap_or(0);
                                let txn = match &cur {
                                    Some(p) => Txn::new().when_version("shared", p.version),
                                    None => Txn::new().when_absent("shared"),
                                }
                                .put("shared", (n + 1).to_string())
                                .put(format!("t{i}/log/{step}"), "x");
                                match s.txn(txn).await {
                                    Ok(_) => break,
                                    Err(Error::CompareFailed { .. }) => continue,
                                    Err(e) => panic!("txn: {e}"),
                                }
                            }
                        }
                        _ => {
                            s.delete(&key).await.unwrap();
                            own = None;
                        }
                    }
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = &stores[0];
    let txns_per_task = (0..steps).filter(|s| s % 4 == 2).count() as u64;
    assert_eq!(
        s.get("shared").await.unwrap().value_str(),
        (n as u64 * txns_per_task).to_string()
    );
    for i in 0..n {
        assert_eq!(
            s.list(&format!("t{i}/log")).await.unwrap().len() as u64,
            txns_per_task
        );
        // Each task's last step decides whether its own key exists.
        let exists = s.exists(&format!("t{i}/k")).await.unwrap();
        assert_eq!(exists, steps % 4 != 0, "task {i}");
    }
    close_all(stores).await;
    acked.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_writers_on_8_and_64_handles_finish_and_agree() {
    for (n, steps, reps) in [(8, 24, 16), (64, 8, 8)] {
        let start = Instant::now();
        let mut acked = 0;
        for rep in 0..reps {
            acked += tokio::time::timeout(
                REP_DEADLINE,
                mixed_round(&format!("sled-mixed-{n}-{rep}"), n, steps),
            )
            .await
            .unwrap_or_else(|_| panic!("{n} handles, repetition {rep}: hung for {REP_DEADLINE:?}"));
        }
        eprintln!(
            "{n} handles x {steps} mixed writes x {reps} repetitions: {acked} acknowledged in {:?}",
            start.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_is_bounded_while_writers_run() {
    let timeout = Duration::from_secs(5);
    for rep in 0..6 {
        let dir = kv_testkit::temp_dir(&format!("sled-close-{rep}"));
        let open = || SledStore::connect(SledConfig::new(dir.path()).with_timeout(timeout));
        let (a, b) = (
            Arc::new(open().await.unwrap()),
            Arc::new(open().await.unwrap()),
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // 8 writers on each handle; each records the keys whose put returned Ok.
        let writers: Vec<_> = (0..16)
            .map(|t| {
                let s = if t % 2 == 0 { a.clone() } else { b.clone() };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let key = format!("w{t}/{i}");
                        match s.put(&key, b"v", PutOptions::default()).await {
                            Ok(_) => acked.push(key),
                            Err(Error::Closed) => break,
                            Err(e) => panic!("put {key}: {e}"),
                        }
                    }
                    acked
                })
            })
            .collect();
        // Let them write for a while (a condition, not a sleep: enough acknowledged writes).
        kv_testkit::wait_until("writes under way", REP_DEADLINE, || async {
            (a.list("").await.unwrap().len() >= 200).then_some(())
        })
        .await;
        for s in [&a, &b] {
            let start = Instant::now();
            s.close().await.unwrap();
            assert!(
                start.elapsed() < timeout + Duration::from_secs(1),
                "close took {:?} with writers running (bound {timeout:?})",
                start.elapsed()
            );
        }
        stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        for w in writers {
            acked.extend(
                tokio::time::timeout(REP_DEADLINE, w)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        // Every acknowledged write is there after reopening.
        let c = open().await.unwrap();
        let stored: std::collections::HashSet<String> = c
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.key)
            .collect();
        for k in &acked {
            assert!(stored.contains(k), "acknowledged {k} missing after close");
        }
        assert!(acked.len() >= 200);
        c.close().await.unwrap();
    }
}
