use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::*;

/// A feed driven by the test: `read` returns `state`, `next` the scripted updates.
struct Script {
    state: Arc<Mutex<(Vec<KvPair>, u64)>>,
    rx: mpsc::UnboundedReceiver<Result<Update>>,
    cursors: Arc<Mutex<Vec<u64>>>,
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
