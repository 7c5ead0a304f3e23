use std::future::Future;
use std::pin::pin;
use std::task::Context;
use std::time::{Duration, Instant};

use super::*;

/// The items queued for `s` now, without waiting.
fn got<T: Clone + Send>(s: &mut Subscription<T>) -> Vec<T> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let mut out = Vec::new();
    while let Poll::Ready(Some(c)) = pin!(s.recv()).poll(&mut cx) {
        out.push(c);
    }
    out
}

fn ended<T: Clone + Send>(s: &mut Subscription<T>) -> bool {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    matches!(pin!(s.recv_batch(8)).poll(&mut cx), Poll::Ready(None))
}

/// `recv` within a deadline (a test never waits forever).
async fn recv<T: Clone + Send>(s: &mut Subscription<T>) -> Option<T> {
    let item = tokio::time::timeout(Duration::from_secs(10), s.recv()).await;
    item.expect("an item or the end within 10 s")
}

#[test]
fn routes_by_key_and_prefix_and_unregisters() {
    let f = Fanout::<&str>::new();
    let mut key = f.subscribe_key(&b"a/b"[..]);
    let mut twin = f.subscribe_key(&b"a/b"[..]);
    let mut root = f.subscribe_prefix(&b""[..]);
    let mut a = f.subscribe_prefix(&b"a/"[..]);
    let mut ab = f.subscribe_prefix(&b"a/b/"[..]);
    let mut odd = f.subscribe_prefix(&b"a/b"[..]);
    let idle: Vec<_> = (0..1000)
        .map(|i| f.subscribe_key(format!("x/{i}").as_bytes()))
        .collect();
    assert_eq!(f.len(), 1006);
    for k in ["a/b", "a/b/c", "a/bc", "b"] {
        f.publish(k.as_bytes(), k);
    }
    assert!(f.wants(b"zzz"), "the root subscription");
    assert_eq!(got(&mut key), ["a/b"]);
    assert_eq!(got(&mut twin), ["a/b"]);
    assert_eq!(got(&mut root), ["a/b", "a/b/c", "a/bc", "b"]);
    assert_eq!(got(&mut a), ["a/b", "a/b/c", "a/bc"]);
    assert_eq!(got(&mut ab), ["a/b/c"]);
    assert_eq!(got(&mut odd), ["a/b", "a/b/c", "a/bc"]);
    assert_eq!(f.queued(), 0);
    drop(idle);
    drop(twin);
    f.publish(b"a/b", "w");
    assert_eq!(got(&mut key), ["w"], "a twin's drop keeps the other");
    drop((key, a, ab, odd));
    assert_eq!(f.len(), 1);
    assert!(
        lock(&f.index).keys.is_empty(),
        "no empty slot is left behind"
    );
    assert!(lock(&f.index).other.is_empty());
    f.publish(b"q", "q");
    f.close();
    assert!(f.is_empty() && !f.wants(b"a/b"));
    assert_eq!(got(&mut root), ["w", "q"], "queued items outlive close");
    assert!(ended(&mut root));
    let mut late = f.subscribe_key(&b"late"[..]);
    assert!(ended(&mut late), "a subscription after close ends at once");
}

#[test]
fn batches_take_at_most_max_and_idle_inboxes_hold_no_buffer() {
    let f = Fanout::new();
    let mut s = f.subscribe_prefix(&b""[..]);
    for i in 0..5u8 {
        f.publish(&[i], i);
    }
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let Poll::Ready(Some(b)) = pin!(s.recv_batch(3)).poll(&mut cx) else {
        panic!("a batch is ready")
    };
    assert_eq!(b, [0, 1, 2]);
    let Poll::Ready(Some(b)) = pin!(s.recv_batch(3)).poll(&mut cx) else {
        panic!("the rest is ready")
    };
    assert_eq!(b, [3, 4]);
    assert!(pin!(s.recv_batch(3)).poll(&mut cx).is_pending());
    let inbox = s.inbox.clone();
    let capacity = || lock(&inbox.queue).items.capacity();
    assert_eq!(capacity(), 0, "an idle inbox holds no buffer");
    f.publish(b"x", 9);
    assert_eq!(got(&mut s), [9]);
    assert_eq!(capacity(), 0, "recv frees the buffer too");
    f.publish(b"x", 9);
    s.clear();
    assert_eq!((f.queued(), capacity()), (0, 0));
}

#[test]
fn a_batch_reaches_each_subscription_once() {
    let f = Fanout::<u32>::new();
    let mut root = f.subscribe_prefix(&b""[..]);
    let mut a = f.subscribe_prefix(&b"a/"[..]);
    let mut odd = f.subscribe_prefix(&b"a"[..]);
    let mut a1 = f.subscribe_key(&b"a/1"[..]);
    let mut c = f.subscribe_key(&b"c"[..]);
    let keys = ["a/1", "a/2", "a/1", "b"].map(str::as_bytes);
    f.publish_batch(keys, 1);
    f.publish_batch(["a/2"].map(str::as_bytes), 2);
    f.publish_batch(["b", "c"].map(str::as_bytes), 3);
    assert_eq!(got(&mut root), [1, 2, 3]);
    assert_eq!(got(&mut a), [1, 2]);
    assert_eq!(got(&mut odd), [1, 2]);
    assert_eq!(got(&mut a1), [1]);
    assert_eq!(got(&mut c), [3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_subscribe_while_threads_publish() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 100;
    const THREADS: usize = 4;
    let f = Arc::new(Fanout::<usize>::new());
    let mut tree = f.subscribe_prefix(&b"k/"[..]);
    let started = Arc::new(tokio::sync::Barrier::new(TASKS + 1));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (f, started) = (f.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            let keys: Vec<String> = (0..PER_TASK).map(|i| format!("k/{t}/{i}")).collect();
            let mut subs: Vec<_> = keys.iter().map(|k| f.subscribe_key(k.as_bytes())).collect();
            started.wait().await;
            for s in &mut subs {
                let mut from = Vec::new();
                for _ in 0..THREADS {
                    from.push(recv(s).await.expect("not closed"));
                }
                from.sort_unstable();
                assert_eq!(
                    from,
                    (0..THREADS).collect::<Vec<_>>(),
                    "one item per thread"
                );
            }
            subs.len()
        }));
    }
    started.wait().await;
    assert_eq!(f.len(), TASKS * PER_TASK + 1);
    let publishers: Vec<_> = (0..THREADS)
        .map(|p| {
            let f = f.clone();
            std::thread::spawn(move || {
                for t in 0..TASKS {
                    for i in 0..PER_TASK {
                        f.publish(format!("k/{t}/{i}").as_bytes(), p);
                    }
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), PER_TASK);
    }
    let mut n = 0;
    while n < TASKS * PER_TASK * THREADS {
        n += tree.recv_batch(usize::MAX).await.unwrap().len();
    }
    assert_eq!(
        n,
        TASKS * PER_TASK * THREADS,
        "the subtree got every item once"
    );
    assert_eq!(
        f.len(),
        1,
        "the tasks' subscriptions unregistered when they ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_unregisters_and_close_ends_waiting_receivers() {
    let f = Arc::new(Fanout::<u8>::new());
    let mut s = f.subscribe_key(&b"k"[..]);
    let dropped = f.subscribe_prefix(&b"k/"[..]);
    std::thread::spawn(move || drop(dropped)).join().unwrap();
    assert_eq!(f.len(), 1);
    let waiter = tokio::spawn(async move {
        let first = recv(&mut s).await;
        (first, recv(&mut s).await)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    // Published once the waiter is parked or not: it gets the item either way.
    f.publish(b"k", 7);
    while f.queued() > 0 {
        assert!(Instant::now() < deadline, "the waiter takes the item");
        tokio::task::yield_now().await;
    }
    f.close();
    assert_eq!(
        waiter.await.unwrap(),
        (Some(7), None),
        "close ends a waiting recv"
    );
    let g = Fanout::<u8>::new();
    let mut s = g.subscribe_key(&b"k"[..]);
    g.publish(b"k", 1);
    drop(g);
    assert_eq!(
        (recv(&mut s).await, recv(&mut s).await),
        (Some(1), None),
        "drop closes"
    );
}
