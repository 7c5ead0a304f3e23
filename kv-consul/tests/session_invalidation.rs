//! Destroying a lock's session behind the driver's back: the holder's lost signal fires and
//! another client takes the lock.

use std::time::{Duration, Instant};

use kv_consul::ConsulStore;
use kv_core::{Error, LockOptions, Store};
use kv_testkit::consul::{Consul, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_session_fires_lost() {
    let Some(consul) = Consul::start(Options::default()).await else {
        return;
    };
    let url = format!("consul://{}/inval", consul.addr());
    let a = ConsulStore::from_url(&url).await.unwrap();
    let b = ConsulStore::from_url(&url).await.unwrap();
    let lock = a
        .new_lock("l", LockOptions::with_value(b"a".to_vec()))
        .await
        .unwrap();
    let lost = lock.lost_signal();
    assert!(!lost.is_lost());

    let ans = consul.http("GET", "/v1/kv/inval/l", "").await;
    assert_eq!(ans.status, 200, "{ans:?}");
    let session = ans
        .body
        .split("\"Session\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the lock key names its session")
        .to_string();
    let t0 = Instant::now();
    let d = consul
        .http("PUT", &format!("/v1/session/destroy/{session}"), "")
        .await;
    assert_eq!(d.status, 200, "{d:?}");

    let e = tokio::time::timeout(Duration::from_secs(30), lost.wait())
        .await
        .expect("lost signal within 30 s");
    assert!(matches!(e, Error::LockLost { .. }), "{e:?}");
    eprintln!("lost signal after {:?}: {e}", t0.elapsed());

    // No lock-delay: the other client gets it at once.
    let t1 = Instant::now();
    let lb = tokio::time::timeout(
        Duration::from_secs(10),
        b.new_lock("l", LockOptions::with_value(b"b".to_vec())),
    )
    .await
    .expect("b acquires within 10 s (no lock-delay)")
    .unwrap();
    eprintln!("b acquired after {:?}", t1.elapsed());
    assert_eq!(b.get("l").await.unwrap().value, b"b");
    assert!(matches!(lock.unlock().await, Err(Error::LockLost { .. })));
    // a's clean-up must not have touched b's lock
    assert_eq!(a.get("l").await.unwrap().value, b"b");
    assert!(!lb.is_lost());
    lb.unlock().await.unwrap();
    assert!(!a.exists("l").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_holder_and_lease() {
    let Some(consul) = Consul::start(Options::default()).await else {
        return;
    };
    let url = format!("consul://{}/silent", consul.addr());
    let a = ConsulStore::from_url(&url).await.unwrap();
    let b = ConsulStore::from_url(&url).await.unwrap();
    // keep_alive = false: the lease ends after ttl, precisely, on the driver's side.
    let ttl = Duration::from_secs(10);
    let t0 = Instant::now();
    let lease = a
        .new_lock("lease", LockOptions::default().ttl(ttl).keep_alive(false))
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(30), lease.lost_signal().wait())
        .await
        .unwrap();
    let after = t0.elapsed();
    assert!(
        after >= ttl && after < ttl + Duration::from_secs(3),
        "{after:?}: {e}"
    );
    let lb = tokio::time::timeout(
        Duration::from_secs(10),
        b.new_lock("lease", LockOptions::default()),
    )
    .await
    .unwrap()
    .unwrap();
    lb.unlock().await.unwrap();
    drop(lease);
}

#[test]
fn crashed_holder_frees_the_lock() {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(consul) = main.block_on(Consul::start(Options::default())) else {
        return;
    };
    let url = format!("consul://{}/crash", consul.addr());
    // The holder lives in its own runtime, shut down without any clean-up: a crashed process.
    let holder_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let t0 = holder_rt.block_on(async {
        let a = ConsulStore::from_url(&url).await.unwrap();
        let lock = a
            .new_lock("l", LockOptions::with_value(b"a".to_vec()))
            .await
            .unwrap();
        std::mem::forget(lock);
        std::mem::forget(a);
        Instant::now()
    });
    holder_rt.shutdown_background();
    main.block_on(async {
        let b = ConsulStore::from_url(&url).await.unwrap();
        assert_eq!(b.get("l").await.unwrap().value, b"a");
        let lb = tokio::time::timeout(
            Duration::from_secs(60),
            b.new_lock("l", LockOptions::with_value(b"b".to_vec())),
        )
        .await
        .expect("the crashed holder's lock frees itself")
        .unwrap();
        let after = t0.elapsed();
        eprintln!("default 15 s lock of a crashed holder freed after {after:?}");
        // session TTL max(15/2, 10) = 10 s, invalidated after twice that since the last renewal
        assert!(after >= Duration::from_secs(15), "{after:?}");
        assert!(after < Duration::from_secs(25), "{after:?}");
        lb.unlock().await.unwrap();
    });
}
