//! Leader election on any kv store with the `kv::election` recipe: three candidates campaign,
//! each leader serves a short term (its writes guarded by the term, a fencing token) and
//! resigns; a follower prints every change of leader.
//!
//! ```text
//! cargo run -p kv --example leader_election                     # embedded store
//! cargo run -p kv --features etcd --example leader_election -- etcd://127.0.0.1:2379/demo
//! ```

use std::time::Duration;

use futures::StreamExt;
use kv::election::{observe, Candidate};

const KEY: &str = "services/scheduler/leader";

#[tokio::main]
async fn main() -> kv::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| kv::Error::config(e.to_string()))?;
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("sled://{}", dir.path().display()));
    println!("leader election on {url}");

    // The follower: the current leader and its term, deduplicated, until the last one resigns.
    let mut leaders = observe(kv::open(&url).await?, KEY);
    let follower = tokio::spawn(async move {
        let mut terms = 0;
        while let Some(item) = leaders.next().await {
            match item {
                Ok(Some(l)) => {
                    println!("  follower: leader is {} (term {})", l.value_str(), l.term);
                    terms += 1;
                }
                Ok(None) if terms == 3 => break,
                Ok(None) => println!("  follower: no leader"),
                Err(e) => println!("  follower: watch error (it keeps following): {e}"),
            }
        }
    });

    // Each candidate has its own handle, as separate processes would.
    let mut campaigns = Vec::new();
    for node in ["node-a", "node-b", "node-c"] {
        let store = kv::open(&url).await?;
        let ttl = store.capabilities().min_ttl.max(Duration::from_secs(5));
        let candidate = Candidate::new(store.clone(), KEY, node, ttl);
        campaigns.push(tokio::spawn(async move {
            let leadership = candidate.campaign().await?;
            println!("[{node}] elected, term {}", leadership.term());
            // A write only the current leader can make: a deposed leader's is rejected.
            let plan = format!("plan by {node} in term {}", leadership.term());
            store
                .txn(leadership.guard().put("services/scheduler/plan", plan))
                .await?;
            tokio::select! {
                e = leadership.lost() => println!("[{node}] lost leadership: {e}"),
                _ = tokio::time::sleep(Duration::from_millis(300)) => {
                    println!("[{node}] resigns");
                    leadership.resign().await?;
                }
            }
            kv::Result::Ok(())
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in campaigns {
        c.await.map_err(|e| kv::Error::config(e.to_string()))??;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), follower).await;
    Ok(())
}
