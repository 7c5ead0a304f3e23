//! Many watches on one store handle (they share one server-side watch): every first item is
//! `Ok`, puts reach exactly their watchers, and a server restart loses no final state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::stream::{select_all, StreamExt};
use kv_core::{KvPair, PutOptions, Result, Store};
use kv_testkit::wait_until;
use kv_testkit::zookeeper::{four_letter, ZkServer};
use kv_zookeeper::{ZkConfig, ZkStore};

const LONG: Duration = Duration::from_secs(60);

async fn store(endpoints: &str, ns: &str) -> ZkStore {
    ZkStore::connect(ZkConfig::new([endpoints]).with_namespace(ns))
        .await
        .unwrap_or_else(|e| panic!("connect to {endpoints}: {e}"))
}

/// The server's total watch count (`wchs`).
fn server_watches(server: &ZkServer) -> Option<u64> {
    four_letter(server.port, "wchs")
        .lines()
        .find_map(|l| l.strip_prefix("Total watches:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A small deterministic generator (no dependency): xorshift64.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

type Tagged = (usize, Result<Option<KvPair>>);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_watches_on_one_handle_get_exactly_their_puts() {
    const W: usize = 2000;
    const PUTS: usize = 400;
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let watcher = store(&ep, "/many").await;
    let writer = store(&ep, "/many").await;
    // Even keys exist before, odd ones do not; 100 keys have a second watch on the same handle.
    for i in (0..W).step_by(2) {
        writer
            .put(&format!("k/{i}"), b"initial", PutOptions::default())
            .await
            .unwrap();
    }
    let mut streams = Vec::new();
    for i in 0..W {
        let s = watcher.watch(&format!("k/{i}")).await.unwrap();
        streams.push(s.map(move |item| (i, item)).boxed());
    }
    for i in 0..100 {
        let s = watcher.watch(&format!("k/{i}")).await.unwrap();
        streams.push(s.map(move |item| (W + i, item)).boxed());
    }
    let mut tree = watcher.watch_tree("k").await.unwrap();
    let watchers = streams.len();
    let mut all = select_all(streams);
    let deadline = Instant::now() + LONG;
    let mut firsts = 0;
    while firsts < watchers {
        let (n, item): Tagged = tokio::time::timeout_at(deadline.into(), all.next())
            .await
            .expect("every first item within 60 s")
            .unwrap();
        let i = n % W;
        let state = item.unwrap_or_else(|e| panic!("first item of k/{i}: {e}"));
        match state {
            Some(p) => {
                assert_eq!(
                    (p.key.as_str(), &p.value[..]),
                    (&*format!("k/{i}"), &b"initial"[..])
                );
                assert_eq!(i % 2, 0, "k/{i} was never written");
            }
            None => assert_eq!(i % 2, 1, "k/{i} exists"),
        }
        firsts += 1;
    }
    assert_eq!(
        server_watches(&server),
        Some(1),
        "all watches of a handle share one server-side watch"
    );

    // Puts to distinct random keys, each with its own value.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut keys: Vec<usize> = (0..W).collect();
    for j in 0..PUTS {
        let r = j + rng.next(W - j);
        keys.swap(j, r);
    }
    let put: HashMap<usize, String> = keys[..PUTS]
        .iter()
        .enumerate()
        .map(|(j, &i)| (i, format!("v{j}")))
        .collect();
    for (&i, v) in &put {
        writer
            .put(&format!("k/{i}"), v.as_bytes(), PutOptions::default())
            .await
            .unwrap();
    }
    let expected: usize = put.keys().map(|&i| if i < 100 { 2 } else { 1 }).sum();
    let mut got: HashMap<usize, usize> = HashMap::new();
    let mut seen = 0;
    while seen < expected {
        let (n, item) = tokio::time::timeout_at(deadline.into(), all.next())
            .await
            .unwrap_or_else(|_| panic!("only {seen} of {expected} put items within 60 s"))
            .unwrap();
        let i = n % W;
        let p = item
            .unwrap_or_else(|e| panic!("error item on k/{i}: {e}"))
            .unwrap_or_else(|| panic!("k/{i} reported deleted"));
        let want = put
            .get(&i)
            .unwrap_or_else(|| panic!("k/{i} was not put: {p:?}"));
        assert_eq!(p.value, want.as_bytes(), "k/{i}");
        *got.entry(n).or_default() += 1;
        assert_eq!(got[&n], 1, "a second item for watcher {n} (k/{i})");
        seen += 1;
    }
    // Nothing more arrives (no duplicates, no item for a key that was not put).
    if let Ok(Some((n, item))) = tokio::time::timeout(Duration::from_millis(500), all.next()).await
    {
        panic!("unexpected item for watcher {n}: {item:?}");
    }
    // The tree watch of the whole prefix reaches the final state.
    let final_len = W / 2 + put.keys().filter(|&&i| i % 2 == 1).count();
    loop {
        let snap = tokio::time::timeout_at(deadline.into(), tree.next())
            .await
            .expect("tree state within 60 s")
            .unwrap()
            .unwrap();
        if snap.len() == final_len
            && put.iter().all(|(i, v)| {
                snap.iter()
                    .any(|p| p.key == format!("k/{i}") && p.value == v.as_bytes())
            })
        {
            break;
        }
    }
    // Dropping every watch removes the shared watch on the server.
    drop(all);
    drop(tree);
    wait_until("the shared watch removed", LONG, || async {
        (server_watches(&server) == Some(0)).then_some(())
    })
    .await;
    watcher.close().await.unwrap();
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restart_during_many_watches_delivers_every_final_state() {
    const W: usize = 300;
    let Some(mut server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let watcher = store(&ep, "/many-restart").await;
    let writer = store(&ep, "/many-restart").await;
    let mut streams = Vec::new();
    for i in 0..W {
        let s = watcher.watch(&format!("k{i}")).await.unwrap();
        streams.push(s.map(move |item| (i, item)).boxed());
    }
    let mut all = select_all(streams);
    let mut last: HashMap<usize, Option<Vec<u8>>> = HashMap::new();
    let deadline = Instant::now() + LONG;
    while last.len() < W {
        let (i, item): Tagged = tokio::time::timeout_at(deadline.into(), all.next())
            .await
            .expect("first items")
            .unwrap();
        assert!(item.unwrap().is_none());
        last.insert(i, None);
    }
    for round in 0..2 {
        server.kill();
        server.restart().await;
        // Write every key through the other handle as soon as it can.
        for i in 0..W {
            let v = format!("r{round}-{i}");
            let t = Instant::now();
            loop {
                match writer
                    .put(&format!("k{i}"), v.as_bytes(), PutOptions::default())
                    .await
                {
                    Ok(_) => break,
                    Err(e) if t.elapsed() < LONG => {
                        eprintln!("put while reconnecting: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("put after restart: {e}"),
                }
            }
        }
        // Every watch reaches its key's final state (error items are allowed meanwhile).
        let deadline = Instant::now() + LONG;
        let done = |last: &HashMap<usize, Option<Vec<u8>>>| {
            (0..W).all(|i| last[&i].as_deref() == Some(format!("r{round}-{i}").as_bytes()))
        };
        while !done(&last) {
            match tokio::time::timeout_at(deadline.into(), all.next()).await {
                Ok(Some((i, Ok(state)))) => {
                    last.insert(i, state.map(|p| p.value));
                }
                Ok(Some((i, Err(e)))) => eprintln!("k{i}: error item during the restart: {e}"),
                Ok(None) => panic!("a watch stream ended"),
                Err(_) => {
                    let missing = (0..W).filter(|i| !done_one(&last, *i, round)).count();
                    panic!("round {round}: {missing} watches without their final state");
                }
            }
        }
    }
    watcher.close().await.unwrap();
    writer.close().await.unwrap();
}

fn done_one(last: &HashMap<usize, Option<Vec<u8>>>, i: usize, round: usize) -> bool {
    last[&i].as_deref() == Some(format!("r{round}-{i}").as_bytes())
}

/// The znode paths the server holds watches on (`wchp`).
fn watched_paths(server: &ZkServer) -> Vec<String> {
    four_letter(server.port, "wchp")
        .lines()
        .filter(|l| l.starts_with('/'))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_watch_covers_the_deepest_common_ancestor() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let s = store(&ep, "/cover").await;
    let paths = |want: &'static [&'static str]| {
        let server = &server;
        async move {
            wait_until(&format!("server watches on {want:?}"), LONG, || async {
                (watched_paths(server) == want).then_some(())
            })
            .await
        }
    };
    let a = s.watch("cfg/a").await.unwrap();
    paths(&["/cover/cfg/a"]).await;
    let b = s.watch("cfg/b/c").await.unwrap();
    paths(&["/cover/cfg"]).await;
    let t = s.watch_tree("cfg/b").await.unwrap();
    paths(&["/cover/cfg"]).await;
    let other = s.watch("other").await.unwrap();
    paths(&["/cover"]).await;
    drop((a, b, t, other));
    paths(&[]).await;
    // A new watch after the last one was dropped starts at its own znode again.
    let _x = s.watch("x/y").await.unwrap();
    paths(&["/cover/x/y"]).await;
    s.close().await.unwrap();
}
