//! Many watches on one handle against a real etcd started by each test: they share one gRPC
//! watch stream, every put reaches exactly its watchers, dropped watches are cancelled on the
//! server, and a member restart re-creates them all.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::stream::{SelectAll, StreamExt};
use kv_core::{KvPair, PutOptions, Result, Store};
use kv_etcd::EtcdStore;
use kv_testkit::etcd::{metric_sum, metrics, EtcdServer};
use kv_testkit::wait_until;

const DEADLINE: Duration = Duration::from_secs(60);
const GROUPS: usize = 20;
const PER_GROUP: usize = 100;

async fn store(endpoint: &str, ns: &str) -> EtcdStore {
    EtcdStore::from_url(&format!("etcd://{endpoint}/{ns}?timeout=3s"))
        .await
        .expect("connect")
}

/// Watch streams and watchers the member counts.
async fn server_watches(endpoint: &str) -> (u64, u64) {
    let endpoint = endpoint.to_string();
    let text = tokio::task::spawn_blocking(move || metrics(&endpoint).unwrap_or_default())
        .await
        .unwrap();
    (
        metric_sum(&text, "etcd_debugging_mvcc_watch_stream_total", &[]) as u64,
        metric_sum(&text, "etcd_debugging_mvcc_watcher_total", &[]) as u64,
    )
}

async fn wait_watchers(endpoint: &str, what: &str, want: u64) -> (u64, u64) {
    wait_until(what, DEADLINE, || async {
        let counts = server_watches(endpoint).await;
        (counts.1 == want).then_some(counts)
    })
    .await
}

fn key(g: usize, i: usize) -> String {
    format!("g{g}/k{i}")
}

/// A small deterministic generator (xorshift64*), seeded from the clock and printed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        println!("seed {seed}");
        Rng(seed)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

enum Item {
    Key(Result<Option<KvPair>>),
    Tree(Result<Vec<KvPair>>),
}

/// Every put to random keys reaches exactly the key's watch and its group's tree watch, in
/// order, once; all 2,020 watches use one stream; dropped ones are cancelled on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watches_share_one_stream_and_reach_exactly_their_watchers() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let (watching, writer) = (store(&ep, "many").await, store(&ep, "many").await);
    // Every third key exists before the watches open.
    for g in 0..GROUPS {
        for i in (0..PER_GROUP).step_by(3) {
            writer
                .put(&key(g, i), b"pre", PutOptions::default())
                .await
                .unwrap();
        }
    }
    let mut all = SelectAll::new();
    let mut firsts = 0;
    let mut last_tree: HashMap<usize, Vec<KvPair>> = HashMap::new();
    for g in 0..GROUPS {
        // Even groups open one watch after the other, odd ones all at once (batched reads).
        let open = |i: usize| {
            let watching = &watching;
            async move {
                let mut w = watching.watch(&key(g, i)).await.unwrap();
                let first = w.next().await.expect("a first item");
                (i, w, first.expect("first item Ok"))
            }
        };
        let opened = if g % 2 == 0 {
            let mut v = Vec::new();
            for i in 0..PER_GROUP {
                v.push(open(i).await);
            }
            v
        } else {
            futures::future::join_all((0..PER_GROUP).map(open)).await
        };
        for (i, w, first) in opened {
            assert_eq!(
                first.map(|p| (p.key, p.value)),
                (i % 3 == 0).then(|| (key(g, i), b"pre".to_vec()))
            );
            firsts += 1;
            all.push(w.map(move |r| ((g, Some(i)), Item::Key(r))).boxed());
        }
        let mut t = watching.watch_tree(&format!("g{g}")).await.unwrap();
        let first = t
            .next()
            .await
            .expect("a first item")
            .expect("first item Ok");
        assert_eq!(first.len(), PER_GROUP.div_ceil(3));
        last_tree.insert(g, first);
        firsts += 1;
        all.push(t.map(move |r| ((g, None), Item::Tree(r))).boxed());
    }
    assert_eq!(firsts, GROUPS * (PER_GROUP + 1));
    let (streams, _) = wait_watchers(&ep, "every watch created", firsts as u64).await;
    assert_eq!(streams, 1, "one shared watch stream");

    // Random puts, then "end" on every key: each stream must see exactly its puts, then end.
    let mut rng = Rng::new();
    let mut expected: HashMap<(usize, Option<usize>), Vec<String>> = HashMap::new();
    for n in 0..600 {
        let (g, i) = (rng.below(GROUPS), rng.below(PER_GROUP));
        let value = format!("v{n}");
        writer
            .put(&key(g, i), value.as_bytes(), PutOptions::default())
            .await
            .unwrap();
        expected
            .entry((g, Some(i)))
            .or_default()
            .push(value.clone());
        expected.entry((g, None)).or_default().push(value);
    }
    let ends = futures::stream::iter((0..GROUPS).flat_map(|g| (0..PER_GROUP).map(move |i| (g, i))))
        .map(|(g, i)| {
            let writer = &writer;
            async move {
                writer
                    .put(&key(g, i), b"end", PutOptions::default())
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(16)
        .count();
    let reader = async move {
        let mut got: HashMap<(usize, Option<usize>), Vec<String>> = HashMap::new();
        let mut ended = 0;
        while ended < firsts {
            let ((g, i), item) = all.next().await.expect("streams go on");
            let seen = got.entry((g, i)).or_default();
            match item {
                Item::Key(r) => {
                    let pair = r.expect("no error item").expect("no delete");
                    assert_eq!(pair.key, key(g, i.unwrap()), "an item of another key");
                    let value = String::from_utf8(pair.value).unwrap();
                    if value == "end" {
                        ended += 1;
                    } else {
                        seen.push(value);
                    }
                }
                Item::Tree(r) => {
                    let pairs = r.expect("no error item");
                    assert!(pairs.iter().all(|p| p.key.starts_with(&format!("g{g}/"))));
                    // Exactly one pair changed since the last snapshot, to the newest version.
                    let before = last_tree.insert(g, pairs.clone()).unwrap_or_default();
                    let newest = pairs.iter().max_by_key(|p| p.version).unwrap();
                    let changed: Vec<_> = pairs.iter().filter(|p| !before.contains(p)).collect();
                    assert_eq!(changed, vec![newest], "one change per snapshot");
                    let value = String::from_utf8(newest.value.clone()).unwrap();
                    if value != "end" {
                        seen.push(value);
                    } else if pairs.iter().all(|p| p.value == b"end") && pairs.len() == PER_GROUP {
                        ended += 1;
                    }
                }
            }
        }
        got
    };
    let (got, puts) = tokio::time::timeout(DEADLINE, futures::future::join(reader, ends))
        .await
        .expect("every put delivered within the deadline");
    assert_eq!(puts, GROUPS * PER_GROUP);
    for (watch, values) in &expected {
        assert_eq!(got.get(watch).unwrap_or(&Vec::new()), values, "{watch:?}");
    }
    for (watch, values) in &got {
        assert_eq!(
            expected.get(watch).unwrap_or(&Vec::new()),
            values,
            "{watch:?}"
        );
    }

    // Dropped watches are cancelled on the server; the others go on; without watches the
    // stream closes.
    // (The reader owned every stream: they are dropped.)
    wait_watchers(&ep, "every watch cancelled", 0).await;
    let mut w = watching.watch(&key(0, 0)).await.unwrap();
    w.next().await.unwrap().unwrap();
    wait_watchers(&ep, "a new watch", 1).await;
    let put = writer
        .put(&key(0, 0), b"again", PutOptions::default())
        .await
        .unwrap();
    let got = tokio::time::timeout(DEADLINE, w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Some(put));
    drop(w);
    wait_until("the idle stream closed", DEADLINE, || async {
        (server_watches(&ep).await == (0, 0)).then_some(())
    })
    .await;
}

/// A member restart under 505 watches: every watch (re-created on the new stream from its
/// own revision) delivers the final state of its key or subtree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_many_watches_delivers_every_final_state() {
    let Some(mut server) = EtcdServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let s = store(&ep, "restart").await;
    let (groups, per_group) = (5, 100);
    let mut keys = Vec::new();
    let mut trees = Vec::new();
    for g in 0..groups {
        for i in 0..per_group {
            let mut w = s.watch(&key(g, i)).await.unwrap();
            assert_eq!(w.next().await.unwrap().unwrap(), None);
            keys.push(w);
        }
        let mut t = s.watch_tree(&format!("g{g}")).await.unwrap();
        assert_eq!(t.next().await.unwrap().unwrap(), Vec::new());
        trees.push(t);
    }
    wait_watchers(
        &ep,
        "every watch created",
        (groups * (per_group + 1)) as u64,
    )
    .await;
    // Changes before the restart, one per group.
    for g in 0..groups {
        s.put(&key(g, 0), b"before", PutOptions::default())
            .await
            .unwrap();
    }

    server.kill();
    server.restart().await;
    wait_until("writes after restart", DEADLINE, || async {
        s.put("probe", b"x", PutOptions::default()).await.ok()
    })
    .await;
    let mut last = HashMap::new();
    for g in 0..groups {
        for i in 0..per_group {
            let p = s
                .put(&key(g, i), b"final", PutOptions::default())
                .await
                .unwrap();
            last.insert(key(g, i), p.version);
        }
    }

    let start = Instant::now();
    let mut errors = 0;
    for (n, w) in keys.iter_mut().enumerate() {
        let k = key(n / per_group, n % per_group);
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match tokio::time::timeout(left, w.next()).await.expect(&k) {
                Some(Err(e)) => {
                    assert!(e.is_transient(), "{e:?}");
                    errors += 1;
                }
                Some(Ok(Some(p))) if p.version == last[&k] => break,
                Some(Ok(_)) => {}
                None => panic!("{k}: the stream ended"),
            }
        }
    }
    for (g, t) in trees.iter_mut().enumerate() {
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match tokio::time::timeout(left, t.next()).await.expect("tree") {
                Some(Err(e)) => {
                    assert!(e.is_transient(), "{e:?}");
                    errors += 1;
                }
                Some(Ok(pairs))
                    if pairs.len() == per_group
                        && pairs.iter().all(|p| p.version == last[&p.key]) =>
                {
                    break
                }
                Some(Ok(_)) => {}
                None => panic!("g{g}: the stream ended"),
            }
        }
    }
    println!("error items during the restart: {errors}");
    let (streams, _) = wait_watchers(
        &ep,
        "every watch re-created",
        (groups * (per_group + 1)) as u64,
    )
    .await;
    assert_eq!(streams, 1);
}
