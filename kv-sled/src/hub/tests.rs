use std::time::Duration;

use super::*;

async fn recv(s: &mut Subscription) -> Option<Change> {
    let item = tokio::time::timeout(Duration::from_secs(10), s.recv()).await;
    item.expect("a change or the end within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_routes_inserts_and_closes_when_the_tree_goes_away() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let tree = db.open_tree("t").unwrap();
    let hub = Arc::new(Hub::default());
    spawn_dispatcher(hub.clone(), tree.watch_prefix(vec![])).unwrap();
    let mut key = hub.subscribe_key(&b"a/b"[..]);
    let mut sub = hub.subscribe_prefix(&b"a/"[..]);
    let other = hub.subscribe_key(&b"c"[..]);
    tree.insert("a/x", "1").unwrap();
    tree.insert("a/b", "2").unwrap();
    tree.remove("a/b").unwrap(); // removals are not forwarded
    let got = |c: Option<Change>| c.map(|(k, v)| (k.to_vec(), v.to_vec()));
    assert_eq!(
        got(recv(&mut sub).await),
        Some((b"a/x".to_vec(), b"1".to_vec()))
    );
    assert_eq!(
        got(recv(&mut sub).await),
        Some((b"a/b".to_vec(), b"2".to_vec()))
    );
    assert_eq!(
        got(recv(&mut key).await),
        Some((b"a/b".to_vec(), b"2".to_vec()))
    );
    assert_eq!(hub.queued(), 0, "nothing for another key");
    drop(other);
    assert_eq!(hub.len(), 2);
    drop((tree, db));
    assert!(
        recv(&mut sub).await.is_none(),
        "the tree's end closes the hub"
    );
    assert!(recv(&mut key).await.is_none());
    assert!(hub.is_empty());
}
