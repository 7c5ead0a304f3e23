//! TTL keys: expiry close to the TTL, a watch sees the deletion, a write without TTL makes the
//! key permanent, a rewrite with TTL starts the TTL anew.

mod common;

use std::time::{Duration, Instant};

use common::{next_ok, until};
use kv_consul::ConsulStore;
use kv_core::{PutOptions, Store, Txn, TxnResult};
use kv_testkit::consul::{Consul, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_keys_expire_on_time() {
    let Some(consul) = Consul::start(Options::default()).await else {
        return;
    };
    let url = format!("consul://{}/ttl", consul.addr());
    let s = ConsulStore::from_url(&url).await.unwrap();
    let ttl = s.capabilities().min_ttl;
    assert_eq!(ttl, Duration::from_secs(20));

    let mut w = s.watch("e").await.unwrap();
    assert_eq!(next_ok(&mut w, Duration::from_secs(10)).await, None);
    let t0 = Instant::now();
    let p = s.put("e", b"x", PutOptions::with_ttl(ttl)).await.unwrap();
    // plain key, then TTL put on it; then TTL key, then plain put on it (made permanent)
    s.put("perm", b"1", PutOptions::with_ttl(ttl))
        .await
        .unwrap();
    let perm = s.put("perm", b"2", PutOptions::default()).await.unwrap();
    let re = s
        .put("renew", b"1", PutOptions::with_ttl(ttl))
        .await
        .unwrap();
    let c = s
        .atomic_put("cas", b"1", None, PutOptions::with_ttl(ttl))
        .await
        .unwrap();
    let r = s
        .txn(Txn::new().put_with("txn", b"t".to_vec(), PutOptions::with_ttl(ttl)))
        .await
        .unwrap();
    assert!(matches!(&r[0], TxnResult::Put(_)));
    assert_eq!(next_ok(&mut w, Duration::from_secs(10)).await, Some(p));
    tokio::time::sleep(Duration::from_secs(8)).await;
    // rewrite with TTL 8 s after the first write: must outlive the first deadline
    let t_re = Instant::now();
    let re2 = s
        .atomic_put("renew", b"2", Some(&re), PutOptions::with_ttl(ttl))
        .await
        .unwrap();
    assert!(re2.version > re.version);
    assert!(s.exists("e").await.unwrap());
    let gone = until(&mut w, Duration::from_secs(40), |v| v.is_none()).await;
    assert!(gone.is_none());
    let after = t0.elapsed();
    eprintln!("TTL {ttl:?}: watch saw the deletion after {after:?}");
    assert!(
        after >= ttl - Duration::from_millis(200),
        "expired early: {after:?}"
    );
    assert!(
        after < ttl + Duration::from_secs(3),
        "expired late: {after:?}"
    );
    for k in ["e", "cas", "txn"] {
        // written a few milliseconds after "e"
        kv_testkit::wait_until(&format!("{k} expires"), Duration::from_secs(3), || {
            let s = s.clone();
            async move { (!s.exists(k).await.unwrap()).then_some(()) }
        })
        .await;
    }
    assert_eq!(s.get("perm").await.unwrap(), perm);
    assert!(
        s.exists("renew").await.unwrap(),
        "rewritten TTL key expired with its old TTL"
    );
    kv_testkit::wait_until("renewed key expires", Duration::from_secs(40), || {
        let s = s.clone();
        async move { (!s.exists("renew").await.unwrap()).then_some(()) }
    })
    .await;
    let renew_after = t_re.elapsed();
    eprintln!("rewritten key expired {renew_after:?} after its rewrite");
    assert!(
        renew_after >= ttl - Duration::from_millis(200)
            && renew_after < ttl + Duration::from_secs(3)
    );
    // still there after every deadline passed
    assert_eq!(s.get("perm").await.unwrap(), perm);
    let _ = c;
}
