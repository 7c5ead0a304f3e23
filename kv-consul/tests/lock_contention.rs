//! 16 tasks with their own store handles take one lock 20 times each: the counter it guards
//! ends at exactly 320 and no two tasks ever hold it at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kv_consul::ConsulStore;
use kv_core::{LockOptions, PutOptions, Store};
use kv_testkit::consul::{Consul, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_tasks_twenty_rounds() {
    let Some(consul) = Consul::start(Options::default()).await else {
        return;
    };
    let url = format!("consul://{}/contention", consul.addr());
    let first = ConsulStore::from_url(&url).await.unwrap();
    first
        .put("counter", b"0", PutOptions::default())
        .await
        .unwrap();
    let inside = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let url = url.clone();
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            let s = ConsulStore::from_url(&url).await.unwrap();
            for _ in 0..20 {
                let lock = s
                    .new_lock(
                        "lock",
                        LockOptions::with_value(format!("task {t}").into_bytes()),
                    )
                    .await
                    .unwrap();
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                let n: u64 = s.get("counter").await.unwrap().value_str().parse().unwrap();
                s.put(
                    "counter",
                    (n + 1).to_string().as_bytes(),
                    PutOptions::default(),
                )
                .await
                .unwrap();
                inside.store(false, Ordering::SeqCst);
                lock.unlock().await.unwrap();
            }
            s.close().await.unwrap();
        }));
    }
    tokio::time::timeout(
        Duration::from_secs(300),
        futures::future::try_join_all(tasks),
    )
    .await
    .expect("320 lock rounds within 300 s")
    .unwrap();
    assert_eq!(first.get("counter").await.unwrap().value, b"320");
    assert!(!first.exists("lock").await.unwrap());
}
