//! The pause-and-resume fencing test against a real etcd (Jepsen's etcd 3.4 lock hazard): a
//! leader *process* is frozen with SIGSTOP past its TTL, another candidate is elected with a
//! higher term, the frozen one is resumed with SIGCONT and writes as if it still led. Its
//! guarded write (`Txn::when_held`) must be rejected with `FencingFailed` (0 stale writes),
//! while the same write unguarded lands (the hazard is real).
//!
//! The test re-runs its own binary as the child (`KV_PAUSE_CHILD_URL` set); they talk over
//! the child's stdin/stdout.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::election::Candidate;
use kv_core::{PutOptions, Store};
use kv_etcd::EtcdStore;
use kv_testkit::etcd::EtcdServer;

const CHILD_ENV: &str = "KV_PAUSE_CHILD_URL";
const TTL: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(30);
const LEADER: &str = "leader";
const DATA: &str = "data";

async fn open(url: &str) -> Arc<dyn Store> {
    Arc::new(EtcdStore::from_url(url).await.expect("connect"))
}

async fn read_command() -> String {
    tokio::task::spawn_blocking(|| {
        let mut l = String::new();
        std::io::stdin()
            .read_line(&mut l)
            .map(|_| l.trim().to_string())
    })
    .await
    .expect("stdin task")
    .expect("read stdin")
}

/// The child: campaign, report the term, write guarded on "WRITE", unguarded on "UNGUARDED".
async fn child(url: String) {
    let store = open(&url).await;
    let leadership = Candidate::new(store.clone(), LEADER, "child", TTL)
        .campaign()
        .await
        .expect("child campaign");
    println!("CHILD ELECTED {}", leadership.term());
    assert_eq!(read_command().await, "WRITE");
    // Resumed: it still "believes" it leads (it does not look at lost()).
    let guarded = store
        .txn(leadership.guard().put(DATA, b"stale-guarded".to_vec()))
        .await;
    match guarded {
        Ok(_) => println!("CHILD GUARDED LANDED"),
        Err(e) if e.is_fencing_failure() => println!("CHILD GUARDED REJECTED"),
        Err(e) => println!("CHILD GUARDED ERROR {e}"),
    }
    assert_eq!(read_command().await, "UNGUARDED");
    match store
        .put(DATA, b"stale-unguarded", PutOptions::default())
        .await
    {
        Ok(_) => println!("CHILD UNGUARDED LANDED"),
        Err(e) => println!("CHILD UNGUARDED ERROR {e}"),
    }
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("a line from the child in time")
        .expect("the child ended early")
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_is_fenced() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
        return child(url).await;
    }
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let url = format!("etcd://{}/pause", server.endpoint());
    let (mut proc, pid, mut stdin, mut rx, child_term) = spawn_leader(&url).await;

    let store = open(&url).await;
    signal(pid, libc::SIGSTOP);
    let t0 = Instant::now();
    let lead = tokio::time::timeout(
        TTL + DEADLINE,
        Candidate::new(store.clone(), LEADER, "successor", TTL).campaign(),
    )
    .await
    .expect("the successor elected in time")
    .expect("campaign");
    let failover = t0.elapsed();
    eprintln!("figure etcd SIGSTOP: leader frozen -> new leader after {failover:?} (ttl {TTL:?})");
    assert!(
        failover >= TTL * 3 / 4,
        "elected after {failover:?}, before the TTL"
    );
    assert!(
        lead.term() > child_term,
        "successor term {} <= frozen leader's {child_term}",
        lead.term()
    );
    store
        .txn(lead.guard().put(DATA, b"successor".to_vec()))
        .await
        .expect("the successor's guarded write");

    signal(pid, libc::SIGCONT);
    writeln!(stdin, "WRITE").expect("tell the child to write");
    assert_eq!(
        next(&mut rx).await,
        "GUARDED REJECTED",
        "0 stale guarded writes"
    );
    assert_eq!(
        store.get(DATA).await.expect("get data").value,
        b"successor",
        "data after the resumed leader's guarded write"
    );
    writeln!(stdin, "UNGUARDED").expect("tell the child to write unguarded");
    assert_eq!(next(&mut rx).await, "UNGUARDED LANDED");
    assert_eq!(
        store.get(DATA).await.expect("get data").value,
        b"stale-unguarded",
        "the unguarded stale write lands: the hazard fencing prevents"
    );
    let status = proc.wait().expect("wait for the child");
    assert!(status.success(), "child exit: {status:?}");
    lead.resign().await.expect("resign");
    drop(server);
}

/// The leader child process, once it reports its term: (process, pid, its stdin, its lines,
/// its term).
async fn spawn_leader(
    url: &str,
) -> (
    std::process::Child,
    u32,
    std::process::ChildStdin,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    u64,
) {
    let mut proc = Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "--exact",
            "paused_leader_is_fenced",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let pid = proc.id();
    let stdin = proc.stdin.take().expect("child stdin");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = proc.stdout.take().expect("child stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print "test ... " on the same line before the child's first line.
            if let Some(i) = line.find("CHILD ") {
                let _ = tx.send(line[i + "CHILD ".len()..].to_string());
            }
        }
    });
    let line = next(&mut rx).await;
    let term: u64 = line
        .strip_prefix("ELECTED ")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("child said {line:?}"));
    (proc, pid, stdin, rx, term)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_within_its_ttl() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let url = format!("etcd://{}/kill", server.endpoint());
    let (mut proc, pid, _stdin, _rx, child_term) = spawn_leader(&url).await;
    let store = open(&url).await;
    signal(pid, libc::SIGKILL);
    let _ = proc.wait();
    let t0 = Instant::now();
    let lead = tokio::time::timeout(
        TTL + DEADLINE,
        Candidate::new(store.clone(), LEADER, "successor", TTL).campaign(),
    )
    .await
    .expect("the successor elected in time")
    .expect("campaign");
    let failover = t0.elapsed();
    eprintln!("figure etcd SIGKILL: leader killed -> new leader after {failover:?} (ttl {TTL:?})");
    assert!(lead.term() > child_term);
    // Lease expiry (TTL) plus etcd's lease checkpoint and our keep-alive cadence.
    assert!(
        failover < TTL + Duration::from_secs(5),
        "new leader only after {failover:?}"
    );
    lead.resign().await.expect("resign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reports_the_final_leader_across_a_server_restart() {
    let Some(mut server) = EtcdServer::start().await else {
        return;
    };
    let url = format!("etcd://{}/follow?timeout=3s", server.endpoint());
    let (a, b, watcher) = (open(&url).await, open(&url).await, open(&url).await);
    let mut leaders = kv_core::election::observe(watcher.clone(), LEADER);
    let first = Candidate::new(a.clone(), LEADER, "a", TTL)
        .campaign()
        .await
        .expect("a elected");
    // Wait until the follower has seen "a".
    loop {
        if let Ok(Some(l)) = next_leader(&mut leaders).await {
            if l.value == b"a" {
                break;
            }
        }
    }
    server.restart().await;
    // After the restart, a hands over to b; the follower must end on b, whatever errors the
    // restart caused in between.
    let _ = first.resign().await;
    let second = tokio::time::timeout(
        TTL + DEADLINE,
        Candidate::new(b.clone(), LEADER, "b", TTL).campaign(),
    )
    .await
    .expect("b elected in time")
    .expect("campaign");
    let mut errors = 0;
    loop {
        match next_leader(&mut leaders).await {
            Ok(Some(l)) if l.value == b"b" => {
                assert_eq!(l.term, second.term());
                break;
            }
            Ok(_) => {}
            Err(_) => errors += 1,
        }
    }
    eprintln!("follower across a restart: final leader b seen ({errors} error items on the way)");
    second.resign().await.expect("resign");
}

async fn next_leader(
    s: &mut kv_core::election::LeaderStream,
) -> kv_core::Result<Option<kv_core::election::Leader>> {
    use futures::StreamExt;
    tokio::time::timeout(DEADLINE, s.next())
        .await
        .expect("an item from the follower in time")
        .expect("the follower never ends silently")
}
