use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::*;
use crate::events::{Cursor, WatchEvent};

/// A feed driven by the test: `read` returns `state`, `next` the scripted updates.
struct Script {
    state: Arc<Mutex<(Vec<KvPair>, u64)>>,
    rx: mpsc::UnboundedReceiver<Result<Update>>,
    cursors: Arc<Mutex<Vec<u64>>>,
    replays: bool,
}

#[async_trait]
impl Feed for Script {
    async fn read(&mut self) -> Result<(Vec<KvPair>, u64)> {
        Ok(self.state.lock().unwrap().clone())
    }

    async fn next(&mut self, cursor: u64) -> Result<Update> {
        self.cursors.lock().unwrap().push(cursor);
        match self.rx.recv().await {
            Some(u) => u,
            None => std::future::pending().await,
        }
    }

    fn replays(&self) -> bool {
        self.replays
    }
}

type Handles = (
    mpsc::UnboundedSender<Result<Update>>,
    Arc<Mutex<(Vec<KvPair>, u64)>>,
    Arc<Mutex<Vec<u64>>>,
);

fn script(initial: Vec<KvPair>, cursor: u64) -> (Script, Handles) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(Mutex::new((initial, cursor)));
    let cursors = Arc::new(Mutex::new(Vec::new()));
    (
        Script {
            state: state.clone(),
            rx,
            cursors: cursors.clone(),
            replays: false,
        },
        (tx, state, cursors),
    )
}

fn p(k: &str, v: u64) -> KvPair {
    KvPair::new(k, format!("{v}"), v)
}

async fn item<T>(s: &mut (impl futures::Stream<Item = Result<T>> + Unpin)) -> Result<T> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an item within 10 s")
        .expect("stream not ended")
}

#[tokio::test]
async fn tree_filters_groups_by_version_and_resyncs() {
    let life = Lifecycle::new();
    let (feed, (tx, state, cursors)) = script(vec![p("a/1", 1), p("b/1", 1)], 1);
    let mut s = watch_tree("t", life.clone(), "a".into(), feed)
        .await
        .unwrap();
    assert_eq!(item(&mut s).await.unwrap(), vec![p("a/1", 1)]);
    // Two events of version 2 give one snapshot, version 3 another; keys outside are ignored.
    tx.send(Ok(Update::Events(
        vec![
            Event::Put(p("a/2", 2)),
            Event::Put(p("b/2", 2)),
            Event::Delete {
                key: "a/1".into(),
                version: 2,
            },
            Event::Put(p("a/3", 3)),
        ],
        3,
    )))
    .unwrap();
    assert_eq!(item(&mut s).await.unwrap(), vec![p("a/2", 2)]);
    assert_eq!(item(&mut s).await.unwrap(), vec![p("a/2", 2), p("a/3", 3)]);
    // An event outside the subtree alone wakes nobody.
    tx.send(Ok(Update::Events(vec![Event::Put(p("b/9", 9))], 9)))
        .unwrap();
    *state.lock().unwrap() = (vec![p("a/7", 7)], 10);
    tx.send(Ok(Update::Resync)).unwrap();
    assert_eq!(item(&mut s).await.unwrap(), vec![p("a/7", 7)]);
    tx.send(Ok(Update::State(vec![p("a/7", 7), p("a/8", 11)], 11)))
        .unwrap();
    assert_eq!(item(&mut s).await.unwrap(), vec![p("a/7", 7), p("a/8", 11)]);
    // Cursors handed to next: initial, after events, after the ignored one, after the resync.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cursors.lock().unwrap().len() < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(*cursors.lock().unwrap(), vec![1, 3, 9, 10, 11]);
}

#[tokio::test]
async fn first_failure_is_silent_later_ones_are_items_and_close_ends() {
    let life = Lifecycle::new();
    let (feed, (tx, _state, _)) = script(vec![], 5);
    let mut s = watch_key("t", life.clone(), "k".into(), feed)
        .await
        .unwrap();
    assert_eq!(item(&mut s).await.unwrap(), None);
    let down = || Error::Unreachable {
        endpoint: "e".into(),
        message: "down".into(),
        source: None,
    };
    tx.send(Err(down())).unwrap();
    tx.send(Ok(Update::Events(vec![Event::Put(p("k", 6))], 6)))
        .unwrap();
    assert_eq!(item(&mut s).await.unwrap(), Some(p("k", 6)));
    tx.send(Err(down())).unwrap();
    tx.send(Err(down())).unwrap();
    tx.send(Ok(Update::Events(
        vec![Event::Delete {
            key: "k".into(),
            version: 7,
        }],
        7,
    )))
    .unwrap();
    assert!(matches!(item(&mut s).await, Err(Error::Unreachable { .. })));
    assert_eq!(item(&mut s).await.unwrap(), None);
    assert!(life.close());
    assert!(matches!(item(&mut s).await, Err(Error::Closed)));
    let end = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the stream ends after Closed");
}

#[tokio::test]
async fn dropping_the_stream_stops_the_task() {
    let life = Lifecycle::new();
    let (feed, (tx, _state, _)) = script(vec![], 1);
    let s = watch_key("t", life, "k".into(), feed).await.unwrap();
    drop(s);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !tx.is_closed() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(tx.is_closed(), "the engine dropped its feed");
}

fn put(p: KvPair, c: u64) -> WatchEvent {
    WatchEvent::Put {
        pair: p,
        cursor: Cursor::new(c),
    }
}

#[tokio::test]
async fn typed_events_carry_cursors_that_replay_whole_revisions() {
    let life = Lifecycle::new();
    let (feed, (tx, state, _)) = script(vec![p("a/1", 1), p("b/1", 1)], 4);
    let mut s = watch_events("t", life.clone(), "a".into(), None, feed)
        .await
        .unwrap();
    let first = item(&mut s).await.unwrap();
    assert_eq!(
        first,
        WatchEvent::Resync {
            pairs: vec![p("a/1", 1)],
            cursor: Cursor::new(4)
        }
    );
    // Revision 5 writes two keys of the subtree (and one outside), revision 6 deletes one.
    tx.send(Ok(Update::Events(
        vec![
            Event::Put(p("a/2", 5)),
            Event::Put(p("b/2", 5)),
            Event::Put(p("a/3", 5)),
            Event::Delete {
                key: "a/1".into(),
                version: 6,
            },
        ],
        6,
    )))
    .unwrap();
    assert_eq!(
        item(&mut s).await.unwrap(),
        put(p("a/2", 5), 4),
        "not the last of rev 5"
    );
    assert_eq!(item(&mut s).await.unwrap(), put(p("a/3", 5), 5));
    let del = WatchEvent::Delete {
        key: "a/1".into(),
        version: 6,
        cursor: Cursor::new(6),
    };
    assert_eq!(item(&mut s).await.unwrap(), del);
    // A State update (ZooKeeper/Consul style) is diffed into events.
    tx.send(Ok(Update::State(vec![p("a/3", 5), p("a/4", 9)], 9)))
        .unwrap();
    assert_eq!(item(&mut s).await.unwrap(), put(p("a/4", 9), 8));
    let gone = WatchEvent::Delete {
        key: "a/2".into(),
        version: 9,
        cursor: Cursor::new(9),
    };
    assert_eq!(item(&mut s).await.unwrap(), gone);
    // Lost history: a Resync with the re-read state.
    *state.lock().unwrap() = (vec![p("a/9", 12)], 12);
    tx.send(Ok(Update::Resync)).unwrap();
    let resync = WatchEvent::Resync {
        pairs: vec![p("a/9", 12)],
        cursor: Cursor::new(12),
    };
    assert_eq!(item(&mut s).await.unwrap(), resync);
    life.close();
    assert!(matches!(item(&mut s).await, Err(Error::Closed)));
}

#[tokio::test]
async fn resuming_replays_or_starts_with_a_resync() {
    let life = Lifecycle::new();
    // A feed that replays history: no read, the changes after the cursor.
    let (mut feed, (tx, _, cursors)) = script(vec![p("a/1", 1)], 9);
    feed.replays = true;
    let mut s = watch_events("t", life.clone(), "a".into(), Some(Cursor::new(3)), feed)
        .await
        .unwrap();
    tx.send(Ok(Update::Events(vec![Event::Put(p("a/5", 5))], 5)))
        .unwrap();
    assert_eq!(item(&mut s).await.unwrap(), put(p("a/5", 5), 5));
    assert_eq!(
        cursors.lock().unwrap()[0],
        3,
        "next() resumed from the saved cursor"
    );
    // A feed that cannot: a Resync of the current state first.
    let (feed, _h) = script(vec![p("a/1", 1)], 9);
    let mut s = watch_events("t", life, "a".into(), Some(Cursor::new(3)), feed)
        .await
        .unwrap();
    let resync = WatchEvent::Resync {
        pairs: vec![p("a/1", 1)],
        cursor: Cursor::new(9),
    };
    assert_eq!(item(&mut s).await.unwrap(), resync);
}

/// A reader that falls behind by more than the queue gets a Resync, never a silent gap: the
/// state rebuilt from the items equals the truth.
#[tokio::test]
async fn a_slow_reader_gets_a_resync_instead_of_a_gap() {
    let life = Lifecycle::new();
    let (feed, (tx, state, cursors)) = script(vec![], 0);
    let mut s = watch_events("t", life, "a".into(), None, feed)
        .await
        .unwrap();
    assert!(matches!(
        item(&mut s).await.unwrap(),
        WatchEvent::Resync { .. }
    ));
    let n = crate::watch::WATCH_QUEUE as u64 * 2 + 10;
    let truth: Vec<KvPair> = (1..=n).map(|v| p(&format!("a/{:05}", v % 50), v)).collect();
    let mut last = std::collections::BTreeMap::new();
    for t in &truth {
        last.insert(t.key.clone(), t.clone());
    }
    *state.lock().unwrap() = (last.values().cloned().collect(), n);
    for t in truth {
        let v = t.version;
        tx.send(Ok(Update::Events(vec![Event::Put(t)], v))).unwrap();
    }
    // Do not read until the engine has taken every update (and overflowed the queue).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cursors.lock().unwrap().len() <= n as usize && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut model = std::collections::BTreeMap::new();
    let mut resyncs = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while model != last && tokio::time::Instant::now() < deadline {
        match item(&mut s).await.unwrap() {
            WatchEvent::Put { pair, .. } => {
                model.insert(pair.key.clone(), pair);
            }
            WatchEvent::Resync { pairs, .. } => {
                resyncs += 1;
                model = pairs.into_iter().map(|p| (p.key.clone(), p)).collect();
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(model, last, "the reader's state converged to the truth");
    assert!(resyncs >= 1, "the overflow was reported as a Resync");
}
