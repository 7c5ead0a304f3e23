//! Many tasks and handles at once: CAS increments of one counter never lose an update, and
//! locks never have two holders.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kv_core::{Error, LockOptions, PutOptions, Store};
use kv_memory::MemoryStore;

const TASKS: usize = 64;
const ROUNDS: usize = 20;

async fn cas_increment(store: &MemoryStore, key: &str) {
    loop {
        let prev = match store.get(key).await {
            Ok(p) => Some(p),
            Err(Error::NotFound { .. }) => None,
            Err(e) => panic!("get: {e}"),
        };
        let n: u64 = prev
            .as_ref()
            .map(|p| p.value_str().parse().unwrap())
            .unwrap_or(0);
        tokio::task::yield_now().await;
        let next = (n + 1).to_string();
        match store
            .atomic_put(key, next.as_bytes(), prev.as_ref(), PutOptions::default())
            .await
        {
            Ok(_) => return,
            Err(Error::KeyExists { .. } | Error::KeyModified { .. } | Error::NotFound { .. }) => {}
            Err(e) => panic!("atomic_put: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_cas_one_counter() {
    for round in 0..ROUNDS {
        let name = format!("memory://cas-{round}");
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            // Every task has its own handle to the same named store.
            let store = MemoryStore::from_url(&name).await.unwrap();
            tasks.push(tokio::spawn(async move {
                cas_increment(&store, "counter").await;
                store
            }));
        }
        let mut handles = Vec::new();
        for t in tasks {
            handles.push(
                tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let v = handles[0].get("counter").await.unwrap();
        assert_eq!(v.value_str(), TASKS.to_string(), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locks_have_one_holder_at_a_time() {
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = MemoryStore::from_url("memory://lock-contention")
            .await
            .unwrap();
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            for _ in 0..10 {
                let l = store
                    .new_lock("lock", LockOptions::with_value(format!("{t}")))
                    .await
                    .unwrap();
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                tokens.push(l.fencing_token());
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                l.unlock().await.unwrap();
            }
            (store, tokens)
        }));
    }
    let mut all = Vec::new();
    let mut stores = Vec::new();
    for t in tasks {
        let (s, tokens) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .unwrap()
            .unwrap();
        assert!(tokens.windows(2).all(|w| w[0] < w[1]));
        all.extend(tokens);
        stores.push(s);
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "fencing tokens are never reused");
    assert!(!stores[0].exists("lock").await.unwrap());
}
