use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use super::*;

/// The changes queued for `s` now (its keys), without waiting.
fn got(s: &mut Subscription) -> Vec<Vec<u8>> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let mut out = Vec::new();
    while let Poll::Ready(Some(c)) = pin!(s.recv()).poll(&mut cx) {
        out.push(c.0.to_vec());
    }
    out
}

fn ended(s: &mut Subscription) -> bool {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    matches!(pin!(s.recv_batch(8)).poll(&mut cx), Poll::Ready(None))
}

#[test]
fn index_routes_by_key_and_subtree_and_unregisters() {
    let hub = Arc::new(Hub::default());
    let mut key = hub.key(b"a/b");
    let mut twin = hub.key(b"a/b");
    let mut root = hub.prefix(b"");
    let mut a = hub.prefix(b"a/");
    let mut ab = hub.prefix(b"a/b/");
    let mut odd = hub.prefix(b"a/b");
    let idle: Vec<_> = (0..1000)
        .map(|i| hub.key(format!("x/{i}").as_bytes()))
        .collect();
    assert_eq!(hub.len(), 1006);
    for k in ["a/b", "a/b/c", "a/bc", "b"] {
        hub.dispatch(&k.as_bytes().into(), &b"v".into());
    }
    let v = |ks: &[&str]| ks.iter().map(|k| k.as_bytes().to_vec()).collect::<Vec<_>>();
    assert_eq!(got(&mut key), v(&["a/b"]));
    assert_eq!(got(&mut twin), v(&["a/b"]));
    assert_eq!(got(&mut root), v(&["a/b", "a/b/c", "a/bc", "b"]));
    assert_eq!(got(&mut a), v(&["a/b", "a/b/c", "a/bc"]));
    assert_eq!(got(&mut ab), v(&["a/b/c"]));
    assert_eq!(got(&mut odd), v(&["a/b", "a/b/c", "a/bc"]));
    drop(idle);
    drop(twin);
    hub.dispatch(&b"a/b".into(), &b"w".into());
    assert_eq!(got(&mut key), v(&["a/b"]), "a twin's drop keeps the other");
    drop((key, a, ab, odd));
    assert_eq!(hub.len(), 1);
    assert!(hub.lock().keys.is_empty(), "no empty slot is left behind");
    hub.dispatch(&b"q".into(), &b"v".into());
    hub.shutdown();
    assert_eq!(hub.len(), 0);
    assert_eq!(
        got(&mut root),
        v(&["a/b", "q"]),
        "queued changes outlive the shutdown"
    );
    assert!(ended(&mut root));
    assert!(
        ended(&mut hub.key(b"late")),
        "a subscription after shutdown ends at once"
    );
}

#[test]
fn batches_take_at_most_max_and_keep_the_rest() {
    let hub = Arc::new(Hub::default());
    let mut s = hub.prefix(b"");
    for i in 0..5u8 {
        hub.dispatch(&[i][..].into(), &b"v".into());
    }
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let Poll::Ready(Some(b)) = pin!(s.recv_batch(3)).poll(&mut cx) else {
        panic!("a batch is ready")
    };
    assert_eq!(b.iter().map(|c| c.0[0]).collect::<Vec<_>>(), [0, 1, 2]);
    let Poll::Ready(Some(b)) = pin!(s.recv_batch(3)).poll(&mut cx) else {
        panic!("the rest is ready")
    };
    assert_eq!(b.iter().map(|c| c.0[0]).collect::<Vec<_>>(), [3, 4]);
    assert!(pin!(s.recv_batch(3)).poll(&mut cx).is_pending());
    assert_eq!(
        s.inbox.lock().changes.capacity(),
        0,
        "an idle inbox holds no buffer"
    );
}
