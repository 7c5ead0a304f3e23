//! Requests per call, as the ZooKeeper server counts them (`mntr` `zk_packets_received`), and
//! the version rule across the put paths (create, setData, replace) and delete/re-create.

use std::time::Duration;

use kv_core::{Error, PutOptions, Store};
use kv_testkit::zookeeper::{packets_received, ZkServer};
use kv_zookeeper::{ZkConfig, ZkStore};

/// Calls per measured batch: pings of idle sessions may add one or two packets to a batch,
/// which the bound below allows; an extra request per call would add `N`.
const N: u64 = 20;

async fn store(ep: &str, ns: &str) -> ZkStore {
    ZkStore::connect(ZkConfig::new([ep]).with_namespace(ns))
        .await
        .unwrap()
}

/// Requests the server received while `run` ran, less the `mntr` that read the counter.
async fn requests<F: std::future::Future<Output = ()>>(ep: &str, run: F) -> u64 {
    let before = packets_received(ep).expect("mntr");
    run.await;
    let after = packets_received(ep).expect("mntr");
    after - before - 1
}

fn assert_one_per_call(what: &str, requests: u64) {
    assert_per_call(what, requests, 1)
}

fn assert_per_call(what: &str, requests: u64, per: u64) {
    assert!(
        (per * N..=per * N + 2).contains(&requests),
        "{what}: {requests} requests for {N} calls (want {per} each)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_cost_one_request_each() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let s = store(&ep, "/rt").await;
    // Parents that do not exist cost extra only the first time.
    s.put("dir/first", b"v", PutOptions::default())
        .await
        .unwrap();
    let keys: Vec<String> = (0..N).map(|i| format!("dir/k{i}")).collect();
    let r = requests(&ep, async {
        for k in &keys {
            s.put(k, b"new", PutOptions::default()).await.unwrap();
        }
    })
    .await;
    assert_one_per_call("put of a new key", r);
    let r = requests(&ep, async {
        for k in &keys {
            s.put(k, b"again", PutOptions::default()).await.unwrap();
        }
    })
    .await;
    assert_one_per_call("put over a key", r);
    // A default (linearizable) get is a `sync` pipelined with the read: two requests, one
    // round trip; with `consistency=stale` it is the read alone.
    let r = requests(&ep, async {
        for k in &keys {
            assert_eq!(s.get(k).await.unwrap().value, b"again");
        }
    })
    .await;
    assert_per_call("get (sync + getData)", r, 2);
    let stale = ZkStore::connect(
        ZkConfig::new([&ep])
            .with_namespace("/rt")
            .with_consistency(kv_core::Consistency::Stale),
    )
    .await
    .unwrap();
    let r = requests(&ep, async {
        for k in &keys {
            assert_eq!(stale.get(k).await.unwrap().value, b"again");
        }
    })
    .await;
    assert_one_per_call("get with consistency=stale", r);
    stale.close().await.unwrap();
    let r = requests(&ep, async {
        for k in &keys {
            s.delete(k).await.unwrap();
        }
    })
    .await;
    assert_one_per_call("delete", r);
    let r = requests(&ep, async {
        for k in &keys {
            s.put(k, b"re-created", PutOptions::default())
                .await
                .unwrap();
        }
    })
    .await;
    assert_one_per_call("put of a key deleted by the same store", r);

    // A key written by another store: its first put here reads the type along (two
    // requests in one round trip), then one request again; a get teaches the type too.
    let other = store(&ep, "/rt").await;
    let r = requests(&ep, async {
        for k in &keys {
            other.put(k, b"other", PutOptions::default()).await.unwrap();
        }
    })
    .await;
    // The first costs a failed create too; then the store reads and writes first (two).
    assert!(r <= 2 * N + 3, "first put of an existing key: {r}");
    let r = requests(&ep, async {
        for k in &keys {
            other
                .put(k, b"other2", PutOptions::default())
                .await
                .unwrap();
        }
    })
    .await;
    assert_one_per_call("put over a key this store wrote", r);
    let third = store(&ep, "/rt").await;
    let r = requests(&ep, async {
        for k in &keys {
            third.get(k).await.unwrap();
            third.put(k, b"third", PutOptions::default()).await.unwrap();
        }
    })
    .await;
    // get = sync + getData, put = setData.
    assert!(
        (3 * N..=3 * N + 2).contains(&r),
        "get then put of a key read first: {r} requests for {N} pairs"
    );
    for st in [s, other, third] {
        st.close().await.unwrap();
    }
}

/// Versions never repeat: across every put path, a delete and re-create by the same store or
/// another one, and a compare-and-swap on a version from before the re-create fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_grow_across_delete_and_re_create() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let a = store(&ep, "/versions").await;
    let b = store(&ep, "/versions").await;
    let ttl = PutOptions::with_ttl(Duration::from_secs(30));
    let mut seen = Vec::new();
    let mut push = |v: u64| {
        assert!(
            seen.last().is_none_or(|&last| v > last),
            "version {v} after {seen:?}"
        );
        seen.push(v);
    };
    push(
        a.put("k", b"1", PutOptions::default())
            .await
            .unwrap()
            .version,
    ); // create
    push(
        a.put("k", b"2", PutOptions::default())
            .await
            .unwrap()
            .version,
    ); // setData
    let before_delete = a.get("k").await.unwrap();
    a.delete("k").await.unwrap();
    push(
        a.put("k", b"3", PutOptions::default())
            .await
            .unwrap()
            .version,
    ); // create again
    assert!(matches!(
        a.atomic_delete("k", &before_delete).await,
        Err(Error::KeyModified { .. })
    ));
    push(a.put("k", b"4", ttl.clone()).await.unwrap().version); // replace: TTL znode
    push(a.put("k", b"5", ttl.clone()).await.unwrap().version); // setData, same TTL
    push(
        a.put("k", b"6", PutOptions::default())
            .await
            .unwrap()
            .version,
    ); // replace
    let held_by_a = a.get("k").await.unwrap();
    // Another store deletes and re-creates the key with as many writes since the create.
    b.delete("k").await.unwrap();
    push(
        b.put("k", b"7", PutOptions::default())
            .await
            .unwrap()
            .version,
    );
    push(
        a.put("k", b"8", PutOptions::default())
            .await
            .unwrap()
            .version,
    ); // czxid mismatch
    assert_eq!(a.get("k").await.unwrap().value, b"8");
    assert!(matches!(
        a.atomic_delete("k", &held_by_a).await,
        Err(Error::KeyModified { .. })
    ));
    assert!(matches!(
        b.atomic_put("k", b"x", Some(&held_by_a), PutOptions::default())
            .await,
        Err(Error::KeyModified { .. })
    ));
    // A delete by the store that knows a stale version falls back to reading: still deletes.
    b.delete("k").await.unwrap();
    assert!(matches!(a.get("k").await, Err(Error::NotFound { .. })));
    assert!(matches!(a.delete("k").await, Err(Error::NotFound { .. })));
    push(
        a.put("k", b"9", PutOptions::default())
            .await
            .unwrap()
            .version,
    );
    assert_eq!(b.get("k").await.unwrap().version, *seen.last().unwrap());
    a.close().await.unwrap();
    b.close().await.unwrap();
}
