//! `demo`: a guided tour of the API — config keys, list, watch, TTL, lock, CAS and a
//! transaction — on a fresh embedded database (or on `--url`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kv::{Error, LockOptions, PutOptions, Store, Txn, TxnResult};

use crate::output::show;

/// A tour of the API: config keys, list, watch, TTL, lock, CAS and a transaction.
pub async fn run(url: Option<String>) -> kv::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::config(format!("temp dir: {e}")))?;
    let url = url.unwrap_or_else(|| format!("sled://{}", dir.path().display()));
    println!("kv demo on {url}\n");
    let store: Arc<dyn Store> = kv::open(&url).await?;
    let caps = store.capabilities();
    println!("backend {} — capabilities: {caps:?}\n", store.backend());

    println!("## put / get / list");
    for (k, v) in [
        ("app/db/host", "10.0.0.5"),
        ("app/db/port", "5432"),
        ("app/web/port", "8080"),
    ] {
        let p = store.put(k, v.as_bytes(), PutOptions::default()).await?;
        println!(
            "put  {:<14} = {:<12} version {}",
            p.key,
            show(&p.value),
            p.version
        );
    }
    let p = store.get("/app/db/port/").await?;
    println!(
        "get  /app/db/port/ -> key {:?} = {} (slashes are normalized)",
        p.key,
        show(&p.value)
    );
    match store.get("app/db/user").await {
        Err(Error::NotFound { key }) => println!("get  {key} -> not found"),
        other => println!("get  app/db/user -> unexpected {other:?}"),
    }
    println!("list app/db:");
    for p in store.list("app/db").await? {
        println!("     {} = {}", p.key, show(&p.value));
    }

    println!("\n## watch (first item = current state, then every change)");
    let mut watch = store.watch("app/feature").await?;
    let watcher = tokio::spawn(async move {
        let mut seen = 0;
        while let Some(item) = watch.next().await {
            match item {
                Ok(Some(p)) => println!(
                    "     watch: app/feature = {} (version {})",
                    show(&p.value),
                    p.version
                ),
                Ok(None) => println!("     watch: app/feature is absent"),
                Err(e) => println!("     watch error: {e}"),
            }
            seen += 1;
            if seen == 4 {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    store
        .put("app/feature", b"on", PutOptions::default())
        .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    store
        .put("app/feature", b"off", PutOptions::default())
        .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.delete("app/feature").await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), watcher).await;

    if caps.ttl {
        let ttl = caps.min_ttl.max(Duration::from_secs(1));
        println!("\n## TTL: app/session expires after {ttl:?}");
        store
            .put("app/session", b"token", PutOptions::with_ttl(ttl))
            .await?;
        println!("     exists now: {}", store.exists("app/session").await?);
        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        println!(
            "     exists after {ttl:?}: {}",
            store.exists("app/session").await?
        );
    }

    if caps.lock {
        println!("\n## lock");
        let lock = store
            .new_lock("app/leader", LockOptions::with_value("node-1"))
            .await?;
        println!(
            "     node-1 holds app/leader; others read: {}",
            show(&store.get("app/leader").await?.value)
        );
        let contender = {
            let store = store.clone();
            tokio::spawn(async move {
                let l = store
                    .new_lock("app/leader", LockOptions::with_value("node-2"))
                    .await?;
                println!("     node-2 acquired app/leader after node-1 unlocked");
                l.unlock().await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!("     node-2 is waiting; node-1 unlocks");
        lock.unlock().await?;
        contender
            .await
            .map_err(|e| Error::config(e.to_string()))??;
    }

    println!("\n## compare-and-swap");
    let counter = store
        .atomic_put("app/counter", b"1", None, PutOptions::default())
        .await?;
    println!("     created app/counter = 1 (version {})", counter.version);
    let next = store
        .atomic_put("app/counter", b"2", Some(&counter), PutOptions::default())
        .await?;
    println!(
        "     CAS with version {} -> 2 (version {})",
        counter.version, next.version
    );
    match store
        .atomic_put("app/counter", b"3", Some(&counter), PutOptions::default())
        .await
    {
        Err(e @ Error::KeyModified { .. }) => println!("     CAS with stale version -> {e}"),
        other => println!("     unexpected: {other:?}"),
    }

    if caps.txn {
        println!("\n## transaction: move 30 from a to b, only if a is unchanged");
        let a = store.put("bank/a", b"100", PutOptions::default()).await?;
        store.put("bank/b", b"0", PutOptions::default()).await?;
        let txn = Txn::new()
            .when_version("bank/a", a.version)
            .put("bank/a", b"70".to_vec())
            .put("bank/b", b"30".to_vec())
            .get("app/db/host");
        for r in store.txn(txn.clone()).await? {
            match r {
                TxnResult::Put(p) => println!("     put {} = {}", p.key, show(&p.value)),
                TxnResult::Get(Some(p)) => println!("     get {} = {}", p.key, show(&p.value)),
                other => println!("     {other:?}"),
            }
        }
        match store.txn(txn).await {
            Err(e) => println!("     same transaction again -> {e}"),
            Ok(_) => println!("     unexpected: applied twice"),
        }
    }

    store.close().await?;
    println!("\ndone.");
    Ok(())
}
