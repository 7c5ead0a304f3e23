//! Leader election on any kv store: a lock is leadership, its value names the leader, its
//! `LostSignal` says when leadership ends, and a watch on the key follows the current leader.
//!
//! ```text
//! cargo run -p kv --example leader_election                     # embedded store
//! cargo run -p kv --features etcd --example leader_election -- etcd://127.0.0.1:2379/demo
//! ```
//! Three candidates campaign; the leader serves for a moment and resigns, the next one takes
//! over, and a follower prints every change of leader (deduplicated, as docker/leadership's
//! Follower does).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kv::{LockOptions, Store};

const KEY: &str = "services/scheduler/leader";

/// Campaigns until elected, leads for `term` (or until leadership is lost), then resigns.
async fn candidate(store: Arc<dyn Store>, node: &'static str, term: Duration) -> kv::Result<()> {
    let options = LockOptions::with_value(node).ttl(Duration::from_secs(15));
    let lock = store.new_lock(KEY, options).await?;
    println!("[{node}] elected");
    let lost = lock.lost_signal();
    tokio::select! {
        e = lost.wait() => {
            println!("[{node}] lost leadership: {e}");
            return Ok(());
        }
        _ = tokio::time::sleep(term) => {}
    }
    println!("[{node}] resigns");
    lock.unlock().await
}

#[tokio::main]
async fn main() -> kv::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| kv::Error::config(e.to_string()))?;
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("sled://{}", dir.path().display()));
    println!("leader election on {url}");

    // The follower: the current leader's name, or none, each time it changes.
    let follower_store = kv::open(&url).await?;
    let mut leaders = follower_store.watch(KEY).await?;
    let follower = tokio::spawn(async move {
        let mut changes = 0;
        while let Some(item) = leaders.next().await {
            match item {
                Ok(Some(p)) => println!("  follower: leader is {}", p.value_str()),
                Ok(None) => println!("  follower: no leader"),
                Err(e) => println!("  follower: watch error (it keeps going): {e}"),
            }
            changes += 1;
            if changes == 7 {
                break; // none, a, none, b, none, c, none
            }
        }
    });

    // Each candidate has its own handle, as separate processes would.
    let mut campaigns = Vec::new();
    for node in ["node-a", "node-b", "node-c"] {
        let store = kv::open(&url).await?;
        campaigns.push(tokio::spawn(candidate(
            store,
            node,
            Duration::from_millis(300),
        )));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in campaigns {
        c.await.map_err(|e| kv::Error::config(e.to_string()))??;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), follower).await;
    Ok(())
}
