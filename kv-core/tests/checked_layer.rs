//! The checking layer: every rule is applied before the driver is called, in one order.
//! A recording driver (tests/common) shows which calls reach the backend.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{calls, store};
use kv_core::{Error, KvPair, LockOptions, PutOptions, Store, Txn};

#[tokio::test]
async fn bad_input_never_reaches_the_driver() {
    let s = store();
    let ttl = |secs| PutOptions::with_ttl(Duration::from_secs(secs));
    let e = s
        .put("a//b", b"v", PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidKey { .. }), "{e}");
    let e = s
        .put("k", b"123456789", PutOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::ValueTooLarge {
                size: 9,
                max: 8,
                ..
            }
        ),
        "{e}"
    );
    let e = s.put("k", b"v", ttl(61)).await.unwrap_err();
    assert!(e.to_string().contains("longest"), "{e}");
    let e = s
        .put("k", b"v", PutOptions::with_ttl(Duration::from_millis(10)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    let e = s.get(".locks/x").await.unwrap_err();
    assert!(e.to_string().contains("reserved"), "{e}");
    let e = s.list("/.locks/").await.unwrap_err();
    assert!(matches!(e, Error::InvalidKey { .. }), "{e}");
    let other = KvPair::new("other", "v", 3);
    let e = s
        .atomic_put("k", b"v", Some(&other), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = s.atomic_delete("k", &other).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = s
        .new_lock("l", LockOptions::default().ttl(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("lock TTL"), "{e}");
    let e = s
        .txn(Txn::new().put("a", "1").put("a", "2"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = s.txn(Txn::new().put(".locks/a", "1")).await.unwrap_err();
    assert!(e.to_string().contains("reserved"), "{e}");
    assert!(
        s.txn(Txn::new()).await.unwrap().is_empty(),
        "an empty txn is Ok(vec![])"
    );
    assert_eq!(calls(&s), 0, "no invalid call reached the driver");
    // Valid calls do, with normalized keys; NotFound is made by the layer.
    assert_eq!(s.put("/k/", b"v", ttl(1)).await.unwrap().key, "k");
    assert!(matches!(s.get("k").await, Err(Error::NotFound { key }) if key == "k"));
    assert!(matches!(s.delete("k").await, Err(Error::NotFound { .. })));
    assert_eq!(calls(&s), 3);
}

#[tokio::test]
async fn closed_comes_first_and_close_runs_once() {
    let s = store();
    s.close().await.unwrap();
    s.close().await.unwrap();
    assert_eq!(s.driver().closes.load(Ordering::SeqCst), 1);
    // Closed wins over an invalid key: one order for every backend.
    assert!(matches!(s.get("a//b").await, Err(Error::Closed)));
    assert!(matches!(
        s.put("k", b"123456789", PutOptions::default()).await,
        Err(Error::Closed)
    ));
    assert!(matches!(s.txn(Txn::new()).await, Err(Error::Closed)));
    assert_eq!(calls(&s), 0);
}

#[tokio::test]
async fn every_call_is_bounded_by_the_timeout() {
    let s = store();
    let start = std::time::Instant::now();
    let e = s
        .put("slow", b"v", PutOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Timeout { ref operation, .. } if operation == "put"),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}
