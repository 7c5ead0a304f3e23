//! kv's ZooKeeper driver versus zookeeper-client used directly, on the same server in one run.
//!
//! `cargo bench -p kv-zookeeper --bench vs_raw` — uses `KV_ZK_ENDPOINTS` if set (a server on
//! 127.0.0.1: its `mntr` is read), else starts a server through kv_testkit. `KV_BENCH_N`
//! operations per measurement (default 500; `KV_BENCH_PAR_N`, default 4 × that, with 64
//! tasks), `KV_BENCH_ROUNDS` rounds (default 41), kv and raw alternating; `KV_BENCH_ONLY` picks workloads by name (a delete row needs its
//! new-key row: it deletes the keys that one created).
//!
//! Workloads, 100-byte values, sequential and with 64 concurrent tasks (one session shared by
//! all tasks of a run): put of a **new** key (raw: `create`), put over an existing key
//! (raw: `setData`), get and delete of a key the new-key rows created (raw: `delete`). Gets
//! compare like with like: **get (linearizable)** is kv's default get (a quorum barrier, a
//! `multi` of one `check` of `/`, pipelined with the `getData`) against the raw client sending
//! the same two requests together, **get (sync)** a kv store with `read_barrier=sync` (a
//! `sync` pipelined with the `getData`) against the raw client doing that, **get (stale)** a
//! kv store opened with `consistency=stale` (the `getData` alone) against a plain raw
//! `getData`. Each row gives the best round of each side,
//! the median of the per-round kv ÷ raw ratios, client CPU per call, and requests per call as
//! the server counted them (`mntr` `zk_packets_received` read before and after every run), so a
//! change in round trips shows whatever the machine's noise.
//!
//! Each side has `KV_BENCH_SESSIONS` connections (default 8; on the kv side a store of each
//! kind per connection), and each run uses the next one in turn (`kv_testkit::bench::Turns`):
//! two sessions of the same raw client in one process differed by up to 9 % for the life of the
//! process, so one session per side would measure which side drew the faster one.
//!
//! kv sets `TCP_NODELAY` on its sessions' sockets (zookeeper-client leaves Nagle on); the bench
//! sets it on the raw client's socket too, so both sides send alike: with Nagle, whether a
//! barrier and its read leave in one segment varied per connection, and the ratio of equal
//! clients swung from 0.66 to 1.52. `KV_BENCH_RAW_NAGLE=1` leaves the raw client as it comes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kv_core::{Consistency, PutOptions, Store};
use kv_testkit::bench::{self, Report, Sample, Turns};
use kv_zookeeper::{ReadBarrier, ZkConfig, ZkStore};
use zookeeper_client::{Acls, Client, CreateMode};

const TASKS: usize = 64;

static VALUE: [u8; 100] = [b'x'; 100];

#[derive(Clone, Copy, PartialEq)]
enum Op {
    /// Put of a key nobody wrote before.
    PutNew,
    /// Put over an existing key.
    Overwrite,
    /// Linearizable get: kv's default (quorum barrier + `getData`), raw the same pipelined.
    Get,
    /// kv with `read_barrier=sync` (`sync` + `getData`), raw `sync` + `getData` pipelined.
    GetSync,
    /// Stale get: kv with `consistency=stale`, raw `getData` alone.
    GetStale,
    /// Delete of a key a `PutNew` run created.
    Delete,
}

/// The key of operation `i` of task `t`: new keys and deletes walk one sequence of fresh
/// keys per connection (deletes consume them in creation order, on the connection that
/// created them), the others reuse 100 keys (sequential) or one per task.
struct Keys {
    /// The connection's number, in the new keys' names.
    conn: usize,
    created: AtomicUsize,
    deleted: AtomicUsize,
}

impl Keys {
    fn new(conn: usize) -> Arc<Keys> {
        Arc::new(Keys {
            conn,
            created: AtomicUsize::new(0),
            deleted: AtomicUsize::new(0),
        })
    }

    fn next(&self, op: Op, t: usize, i: usize, tasks: usize) -> String {
        let fresh =
            |n: &AtomicUsize| format!("new/c{}k{}", self.conn, n.fetch_add(1, Ordering::Relaxed));
        match op {
            Op::PutNew => fresh(&self.created),
            Op::Delete => fresh(&self.deleted),
            _ if tasks == 1 => format!("old/k{}", i % 100),
            _ => format!("old/k{t}"),
        }
    }
}

/// One connection of the kv side: three stores on the same server and namespace, kv's
/// default (linearizable, quorum barrier), `read_barrier=sync`, and `consistency=stale`, and
/// the keys of its new-key and delete rows.
struct Stores {
    linearizable: Arc<ZkStore>,
    sync: Arc<ZkStore>,
    stale: Arc<ZkStore>,
    keys: Arc<Keys>,
}

impl Stores {
    async fn connect(ep: &str, conn: usize) -> Stores {
        let open = |cfg: ZkConfig| async move { Arc::new(ZkStore::connect(cfg).await.unwrap()) };
        let cfg = || ZkConfig::new([ep]).with_namespace("/bench-kv");
        Stores {
            linearizable: open(cfg()).await,
            sync: open(cfg().with_read_barrier(ReadBarrier::Sync)).await,
            stale: open(cfg().with_consistency(Consistency::Stale)).await,
            keys: Keys::new(conn),
        }
    }

    async fn close(&self) {
        self.stale.close().await.unwrap();
        self.sync.close().await.unwrap();
        self.linearizable.close().await.unwrap();
    }
}

/// One connection of the raw side: a zookeeper-client session and its new keys.
struct Raw {
    client: Client,
    keys: Arc<Keys>,
}

async fn kv_run(st: &Stores, op: Op, n: usize, tasks: usize) -> Sample {
    let s = match op {
        Op::GetStale => st.stale.clone(),
        Op::GetSync => st.sync.clone(),
        _ => st.linearizable.clone(),
    };
    let keys = st.keys.clone();
    bench::par(n, tasks, move |t, i| {
        let key = keys.next(op, t, i, tasks);
        let s = s.clone();
        async move {
            match op {
                Op::PutNew | Op::Overwrite => {
                    s.put(&key, &VALUE, PutOptions::default()).await.unwrap();
                }
                Op::Get | Op::GetSync | Op::GetStale => {
                    s.get(&key).await.unwrap();
                }
                Op::Delete => s.delete(&key).await.unwrap(),
            }
        }
    })
    .await
}

async fn raw_run(raw: &Raw, op: Op, n: usize, tasks: usize) -> Sample {
    let (c, keys) = (raw.client.clone(), raw.keys.clone());
    let opts = Arc::new(CreateMode::Persistent.with_acls(Acls::anyone_all()));
    bench::par(n, tasks, move |t, i| {
        let path = format!("/bench-raw/{}", keys.next(op, t, i, tasks));
        let (c, opts) = (c.clone(), opts.clone());
        async move {
            match op {
                Op::PutNew => {
                    c.create(&path, &VALUE, &opts).await.unwrap();
                }
                Op::Overwrite => {
                    c.set_data(&path, &VALUE, None).await.unwrap();
                }
                Op::Get => {
                    // What kv's default get sends, the way it sends it: the barrier, then at
                    // once the `getData` (both go out when called), pipelined; the server
                    // answers the read after the commit.
                    let mut w = c.new_multi_writer();
                    w.add_check_version("/", -1).unwrap();
                    let barrier = w.commit();
                    let read = c.get_data(&path);
                    let (b, r) = futures::join!(barrier, read);
                    b.unwrap();
                    r.unwrap();
                }
                Op::GetSync => {
                    // kv's get with `read_barrier=sync`: `sync` and `getData` pipelined.
                    let synced = c.sync(&path);
                    let read = c.get_data(&path);
                    let (s, r) = futures::join!(synced, read);
                    s.unwrap();
                    r.unwrap();
                }
                Op::GetStale => {
                    c.get_data(&path).await.unwrap();
                }
                Op::Delete => c.delete(&path, None).await.unwrap(),
            }
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let n = bench::ops_per_run(500, 1);
    let rounds = bench::rounds();
    let Some((ep, _server)) = bench::endpoint_or_start(
        "KV_ZK_ENDPOINTS",
        kv_testkit::zookeeper::ZkServer::start(),
        |s| s.endpoint(),
    )
    .await
    else {
        eprintln!("zookeeper not installed; benchmark not run");
        return;
    };
    // Several connections per side, used in turn from run to run (see `kv_testkit::bench::
    // Turns`): on this VM one session is faster than another for the process's life whatever
    // drives it, so one connection per side would measure which side drew the faster one.
    let conns = bench::sessions();
    let mut kv = Vec::new();
    let mut raw = Vec::new();
    for c in 0..conns {
        kv.push(Stores::connect(&ep, c).await);
        raw.push(Raw {
            client: Client::connect(&ep).await.unwrap(),
            keys: Keys::new(c),
        });
    }
    // kv turns Nagle's algorithm off on its sessions' sockets; the raw client gets the same,
    // so both sides put the same segments on the wire (`KV_BENCH_RAW_NAGLE` set: the raw
    // client as zookeeper-client leaves it, Nagle on).
    if std::env::var_os("KV_BENCH_RAW_NAGLE").is_none() {
        let peers: Vec<std::net::SocketAddr> = ep.parse().into_iter().collect();
        kv_zookeeper::set_nodelay_to(&peers).unwrap();
    }
    let opts = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let first = &raw[0].client;
    first.mkdir("/bench-raw/old", &opts).await.unwrap();
    first.mkdir("/bench-raw/new", &opts).await.unwrap();
    // New keys left by an earlier run that stopped early or ran a new-key row without its
    // delete row: they would make this run's creates fail (raw) or overwrite (kv).
    for child in first.list_children("/bench-raw/new").await.unwrap() {
        let _ = first.delete(&format!("/bench-raw/new/{child}"), None).await;
    }
    kv[0].linearizable.delete_tree("new").await.unwrap();
    // The keys overwrites and gets use (written once by each side, then read by every kv
    // store, so that each knows them), then a warm-up of every connection (the first new key
    // creates the parent `new` on the kv side: a once-only cost outside the measurements).
    for i in 0..100 {
        let _ = first
            .create(&format!("/bench-raw/old/k{i}"), &VALUE, &opts)
            .await;
        let key = format!("old/k{i}");
        kv[0]
            .linearizable
            .put(&key, &VALUE, PutOptions::default())
            .await
            .unwrap();
        for st in &kv {
            st.linearizable.get(&key).await.unwrap();
        }
    }
    for (st, r) in kv.iter().zip(&raw) {
        for op in [
            Op::PutNew,
            Op::Delete,
            Op::Overwrite,
            Op::Get,
            Op::GetSync,
            Op::GetStale,
        ] {
            kv_run(st, op, 200, 1).await;
            raw_run(r, op, 200, 1).await;
        }
    }
    let (kv, raw) = (Turns::new(kv), Turns::new(raw));

    println!(
        "kv-zookeeper vs zookeeper-client, server {ep}: N = {n} ops per measurement ({} with \
         {TASKS} tasks), {rounds} rounds, {conns} connections per side used in turn, 100-byte \
         values; requests/op from the server's mntr zk_packets_received",
        bench::ops_per_run(500, TASKS)
    );
    let report = Report::best_of_rounds();
    report.print_header();
    let count = || kv_testkit::zookeeper::packets_received(&ep);
    for (name, op, tasks) in [
        ("sequential put, new key", Op::PutNew, 1),
        ("sequential put, overwrite", Op::Overwrite, 1),
        ("sequential get (linearizable)", Op::Get, 1),
        ("sequential get (sync)", Op::GetSync, 1),
        ("sequential get (stale)", Op::GetStale, 1),
        ("sequential delete", Op::Delete, 1),
        ("64-task put, new key", Op::PutNew, TASKS),
        ("64-task put, overwrite", Op::Overwrite, TASKS),
        ("64-task get (linearizable)", Op::Get, TASKS),
        ("64-task get (sync)", Op::GetSync, TASKS),
        ("64-task get (stale)", Op::GetStale, TASKS),
        ("64-task delete", Op::Delete, TASKS),
    ] {
        if !bench::selected(name) {
            continue;
        }
        let m = bench::ops_per_run(500, tasks);
        kv.restart();
        raw.restart();
        let samples = bench::alternate(
            rounds,
            || bench::counted(count, kv_run(kv.next(), op, m, tasks)),
            || bench::counted(count, raw_run(raw.next(), op, m, tasks)),
        )
        .await;
        report.best_of_rounds_row(name, &samples);
    }
    let _ = kv.all()[0].linearizable.delete_tree("").await;
    for st in kv.all() {
        st.close().await;
    }
}
