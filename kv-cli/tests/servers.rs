//! End-to-end tests of the `kvctl` binary against real etcd and ZooKeeper servers (started on
//! loopback by kv-testkit; skipped loudly when not installed, failing under `scripts/test`).

mod common;

use std::time::{Duration, Instant};

use common::{kvctl, run, wait_bounded, Streaming, DEADLINE};
use kv_testkit::etcd::EtcdServer;
use kv_testkit::zookeeper::ZkServer;

/// `watch KEY` in JSON sees the current state, each change and the delete.
fn watch_follows_changes(url: &str) {
    run(url, &["put", "w/key", "one"]).expect(0);
    let watch = Streaming::start(url, &["watch", "w/key", "--output", "json"]);
    let first: serde_json::Value = serde_json::from_str(&watch.next_line()).unwrap();
    assert_eq!(first["value"], "one");
    run(url, &["put", "w/key", "two"]).expect(0);
    let second: serde_json::Value = serde_json::from_str(&watch.next_line()).unwrap();
    assert_eq!(second["value"], "two");
    assert!(second["version"].as_u64() > first["version"].as_u64());
    run(url, &["delete", "w/key"]).expect(0);
    let gone: serde_json::Value = serde_json::from_str(&watch.next_line()).unwrap();
    assert_eq!(gone["deleted"], true);
    let tree = Streaming::start(url, &["watch", "-r", "w", "--output", "json"]);
    let snap: serde_json::Value = serde_json::from_str(&tree.next_line()).unwrap();
    assert_eq!(snap["pairs"].as_array().unwrap().len(), 0);
    run(url, &["put", "w/a/b", "x"]).expect(0);
    let snap: serde_json::Value = serde_json::from_str(&tree.next_line()).unwrap();
    assert_eq!(snap["pairs"][0]["key"], "w/a/b");
    assert_eq!(watch.interrupt(), 0, "Ctrl-C ends a watch with exit 0");
    assert_eq!(tree.interrupt(), 0);
    events_resume(url);
}

/// `events` starts with a resync, prints puts and deletes with cursors, and `--from` resumes.
fn events_resume(url: &str) {
    run(url, &["put", "ev/a", "1"]).expect(0);
    let events = Streaming::start(url, &["events", "ev", "--output", "json"]);
    let first: serde_json::Value = serde_json::from_str(&events.next_line()).unwrap();
    assert_eq!(first["event"], "resync");
    assert_eq!(first["pairs"][0]["key"], "ev/a");
    run(url, &["put", "ev/b", "2"]).expect(0);
    let put: serde_json::Value = serde_json::from_str(&events.next_line()).unwrap();
    assert_eq!(
        (&put["event"], &put["key"]),
        (&"put".into(), &"ev/b".into())
    );
    let cursor = put["cursor"].as_u64().expect("a cursor");
    assert_eq!(events.interrupt(), 0);
    run(url, &["delete", "ev/a"]).expect(0);
    let from = cursor.to_string();
    let resumed = Streaming::start(url, &["events", "ev", "--from", &from, "--output", "json"]);
    let next: serde_json::Value = serde_json::from_str(&resumed.next_line()).unwrap();
    // etcd replays the delete; a backend without history resyncs to the state without ev/a.
    match next["event"].as_str() {
        Some("delete") => assert_eq!(next["key"], "ev/a"),
        Some("resync") => assert_eq!(next["pairs"].as_array().unwrap().len(), 1, "{next}"),
        other => panic!("unexpected {other:?}: {next}"),
    }
    assert_eq!(resumed.interrupt(), 0);
}

/// Two `kvctl lock` processes never run their commands at the same time.
fn locks_exclude_each_other(url: &str, tag: &str) {
    let dir = kv_testkit::temp_dir(tag);
    let log = dir.path().join("log");
    let script = format!(
        "echo start $$ >> {0}; sleep 0.3; echo end $$ >> {0}",
        log.display()
    );
    for _round in 0..3 {
        let children: Vec<_> = (0..2)
            .map(|_| {
                kvctl(url)
                    .args(["lock", "l/job", "--", "sh", "-c", &script])
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            assert!(wait_bounded(c).status.success());
        }
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12, "{text}");
    for pair in lines.chunks(2) {
        let (s, e) = (pair[0].strip_prefix("start "), pair[1].strip_prefix("end "));
        assert!(s.is_some() && s == e, "overlapping lock holders:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_commands_watch_and_locks() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let url = format!("etcd://{}/kvctl", server.endpoint());
    let j = run(&url, &["put", "a", "1", "--output", "json"])
        .expect(0)
        .json_lines();
    assert_eq!(j[0]["key"], "a");
    assert_eq!(run(&url, &["get", "a", "--raw"]).expect(0).stdout, "1");
    let caps = run(&url, &["capabilities", "--output", "json"])
        .expect(0)
        .json_lines();
    assert_eq!(caps[0]["backend"], "etcd");
    watch_follows_changes(&url);
    locks_exclude_each_other(&url, "kvctl-etcd-lock");
    election_hands_over(&url);
}

/// `elect` prints the term; `leader` shows the leader; after Ctrl-C the waiting candidate is
/// elected with a higher term.
fn election_hands_over(url: &str) {
    run(url, &["leader", "e/leader"]).expect(1);
    let first = Streaming::start(url, &["elect", "e/leader", "node-1", "--output", "json"]);
    let elected: serde_json::Value = serde_json::from_str(&first.next_line()).unwrap();
    let term1 = elected["term"].as_u64().unwrap();
    let shown = run(url, &["leader", "e/leader", "--output", "json"])
        .expect(0)
        .json_lines();
    assert_eq!(shown[0]["leader"], "node-1");
    assert_eq!(shown[0]["term"].as_u64(), Some(term1));
    let follow = Streaming::start(url, &["leader", "e/leader", "--watch"]);
    assert_eq!(
        follow.next_line(),
        format!("e/leader: node-1 (term {term1})")
    );
    let second = Streaming::start(url, &["elect", "e/leader", "node-2", "--output", "json"]);
    assert_eq!(first.interrupt(), 0, "Ctrl-C resigns with exit 0");
    let elected: serde_json::Value = serde_json::from_str(&second.next_line()).unwrap();
    assert_eq!(elected["name"], "node-2");
    let term2 = elected["term"].as_u64().unwrap();
    assert!(term2 > term1, "terms grow: {term1} then {term2}");
    // The follower saw the hand-over (possibly with "no leader" in between).
    let mut line = follow.next_line();
    if line.ends_with("no leader") {
        line = follow.next_line();
    }
    assert_eq!(line, format!("e/leader: node-2 (term {term2})"));
    assert_eq!(second.interrupt(), 0);
    assert_eq!(follow.interrupt(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_lost_lock_kills_the_command() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let url = format!("etcd://{}/lost", server.endpoint());
    let child = kvctl(&url)
        .args(["lock", "held", "--ttl", "5s", "--", "sleep", "600"])
        .spawn()
        .unwrap();
    // Wait until the lock is held (its key exists), then revoke its lease behind its back.
    let start = Instant::now();
    let lease = loop {
        let leases = server.ctl(&["lease", "list"]);
        if let Some(id) = leases
            .lines()
            .nth(1)
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            if run(&url, &["get", "held"]).code == 0 {
                break id.to_string();
            }
        }
        assert!(start.elapsed() < DEADLINE, "the lock was never taken");
        std::thread::sleep(Duration::from_millis(50));
    };
    server.ctl(&["lease", "revoke", &lease]);
    let start = Instant::now();
    let out = wait_bounded(child);
    assert_eq!(out.status.code(), Some(4), "lock lost is exit 4");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_commands_and_watch() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let url = format!("zk://{}/kvctl", server.endpoint());
    run(&url, &["put", "a/b", "1"]).expect(0);
    let keys = run(&url, &["ls", "--keys-only"]).expect(0);
    assert_eq!(keys.stdout, "a/b\n");
    watch_follows_changes(&url);
    locks_exclude_each_other(&url, "kvctl-zk-lock");
}
