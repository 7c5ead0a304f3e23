//! Service discovery on any kv store with the `kv::discovery` recipe: three instances of a
//! service register (kept alive by TTL writes), one changes its address, one deregisters and
//! one crashes (its handle goes away without deregistering); a client watches the set.
//!
//! ```text
//! cargo run -p kv --example service_discovery                     # embedded store
//! cargo run -p kv --features etcd --example service_discovery -- etcd://127.0.0.1:2379/demo
//! ```

use std::time::{Duration, Instant};

use futures::StreamExt;
use kv::discovery::{instances, register, watch_instances};
use kv::Store;

const SERVICE: &str = "services/api";

#[tokio::main]
async fn main() -> kv::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| kv::Error::config(e.to_string()))?;
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("sled://{}", dir.path().display()));
    println!("service discovery on {url}");

    // The client: every different set of instances, first the current one.
    let client = kv::open(&url).await?;
    let mut sets = watch_instances(client.clone(), SERVICE);
    let watcher = tokio::spawn(async move {
        let start = Instant::now();
        let mut seen_some = false;
        while let Some(item) = sets.next().await {
            match item {
                Ok(set) => {
                    let shown: Vec<String> = set
                        .iter()
                        .map(|i| format!("{}={}", i.id, i.payload_str()))
                        .collect();
                    println!("  client at {:>5.1?}: {shown:?}", start.elapsed());
                    if set.is_empty() && seen_some {
                        break;
                    }
                    seen_some |= !set.is_empty();
                }
                Err(e) => println!("  client: watch error (it keeps watching): {e}"),
            }
        }
    });

    let mut regs = Vec::new();
    let mut ttl = Duration::ZERO;
    for (i, id) in ["node-1", "node-2", "node-3"].into_iter().enumerate() {
        let store = kv::open(&url).await?; // one handle per instance, as separate processes
        ttl = store.capabilities().min_ttl.max(Duration::from_secs(2));
        let addr = format!("10.0.0.{}:8080", i + 1);
        regs.push((
            store.clone(),
            register(store, SERVICE, id, addr, ttl).await?,
        ));
    }
    println!("registered: {:?}", ids(&*client).await?);

    let (_, r1) = &regs[0];
    r1.update("10.0.0.1:9090").await?;
    println!("node-1 moved to port 9090");

    let (_, r2) = regs.remove(1);
    r2.deregister().await?;
    println!("node-2 deregistered: {:?}", ids(&*client).await?);

    // node-3 "crashes": its store goes away without deregistering; it expires after its TTL.
    let (s3, _r3) = regs.remove(1);
    s3.close().await?;
    println!("node-3 crashed; it leaves within its TTL of {ttl:?}");
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    println!("after the TTL: {:?}", ids(&*client).await?);

    drop(regs); // node-1 deregisters when its Registration is dropped
    let _ = tokio::time::timeout(Duration::from_secs(10), watcher).await;
    Ok(())
}

async fn ids(store: &dyn Store) -> kv::Result<Vec<String>> {
    Ok(instances(store, SERVICE)
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect())
}
