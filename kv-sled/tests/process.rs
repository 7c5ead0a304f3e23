//! Crash and multi-process tests: the test binary re-executes itself as a child process.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use kv_core::{Error, LockOptions, PutOptions, Store};
use kv_sled::{SledConfig, SledStore};

const CHILD_MODE: &str = "KV_SLED_CHILD_MODE";
const CHILD_PATH: &str = "KV_SLED_CHILD_PATH";

/// Runs `child_entry` of this test binary in a child process with `mode`.
fn spawn_child(mode: &str, path: &Path) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .env(CHILD_PATH, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child test process");
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// Reads lines until one starts with `prefix`; panics if the child ends first.
fn wait_line(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "the child ended before printing {prefix:?}");
        // libtest prints "test child_entry ... " before the child's first line.
        if let Some(at) = line.find(prefix) {
            return line[at..].trim_end().to_string();
        }
    }
}

fn kill(child: &mut Child) {
    child.kill().expect("SIGKILL the child"); // SIGKILL on unix
    child.wait().unwrap();
}

/// The child side; does nothing unless started by one of the tests below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process entry point, started by the tests in this file"]
async fn child_entry() {
    let mode = std::env::var(CHILD_MODE).expect("started as a child");
    let path = std::env::var(CHILD_PATH).unwrap();
    let store = SledStore::connect(SledConfig::new(&path)).await.unwrap();
    let mut stdout = std::io::stdout();
    match mode.as_str() {
        "writer" => {
            for i in 0..100_000u32 {
                let p = store
                    .put(
                        &format!("w/{i:06}"),
                        format!("value {i}").as_bytes(),
                        PutOptions::default(),
                    )
                    .await
                    .unwrap();
                writeln!(stdout, "ack {i} {}", p.version).unwrap();
                stdout.flush().unwrap();
            }
        }
        "holder" => {
            store
                .put("h/plain", b"kept", PutOptions::default())
                .await
                .unwrap();
            store
                .put(
                    "h/ttl",
                    b"short",
                    PutOptions::with_ttl(Duration::from_millis(500)),
                )
                .await
                .unwrap();
            let _lock = store
                .new_lock(
                    "h/lock",
                    LockOptions::with_value("child").ttl(Duration::from_secs(1)),
                )
                .await
                .unwrap();
            writeln!(stdout, "ready").unwrap();
            stdout.flush().unwrap();
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
        "opener" => {
            let p = store.get("c/key").await.unwrap();
            writeln!(stdout, "opened {}", p.value_str()).unwrap();
            stdout.flush().unwrap();
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = kv_testkit::temp_dir("sled-sigkill");
    let (mut child, mut out) = spawn_child("writer", dir.path());
    let mut acked: Vec<(u32, u64)> = Vec::new();
    while acked.len() < 50 {
        let line = wait_line(&mut out, "ack ");
        let mut parts = line.split(' ').skip(1);
        let i = parts.next().unwrap().parse().unwrap();
        let v = parts.next().unwrap().parse().unwrap();
        acked.push((i, v));
    }
    kill(&mut child);
    // Acks the child printed before it died count too.
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.find("ack ").map(|at| &line.trim_end()[at + 4..]) {
            let mut parts = rest.split(' ');
            if let (Some(i), Some(v)) = (parts.next(), parts.next()) {
                if let (Ok(i), Ok(v)) = (i.parse(), v.parse()) {
                    acked.push((i, v));
                }
            }
        }
        line.clear();
    }
    let store = SledStore::connect(SledConfig::new(dir.path()))
        .await
        .unwrap();
    for (i, v) in &acked {
        let p = store.get(&format!("w/{i:06}")).await.unwrap_or_else(|e| {
            panic!(
                "acknowledged write {i} lost after SIGKILL ({} acked): {e}",
                acked.len()
            )
        });
        assert_eq!(p.value, format!("value {i}").as_bytes());
        assert_eq!(p.version, *v);
    }
    // Versions keep growing after the crash.
    let max = acked.iter().map(|(_, v)| *v).max().unwrap();
    let p = store
        .put("w/after", b"x", PutOptions::default())
        .await
        .unwrap();
    assert!(
        p.version > max,
        "{} after the crash vs {max} before",
        p.version
    );
    let p = store
        .put("w/000000", b"again", PutOptions::default())
        .await
        .unwrap();
    assert!(p.version > max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_process_gets_a_clear_error_and_reopen_after_kill_works() {
    let dir = kv_testkit::temp_dir("sled-twoproc");
    let (mut child, mut out) = spawn_child("holder", dir.path());
    wait_line(&mut out, "ready");

    let start = Instant::now();
    let err = SledStore::connect(SledConfig::new(dir.path()))
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let msg = err.to_string();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    let canonical = dir.path().canonicalize().unwrap();
    assert!(msg.contains(&canonical.display().to_string()), "{msg}");
    assert!(msg.contains("in use by another process"), "{msg}");

    kill(&mut child);
    let store = SledStore::connect(SledConfig::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(store.get("h/plain").await.unwrap().value, b"kept");
    // The dead holder's TTL key and lock lease expire by themselves.
    let start = Instant::now();
    let lock = tokio::time::timeout(
        Duration::from_secs(20),
        store.new_lock("h/lock", LockOptions::with_value("parent")),
    )
    .await
    .expect("the dead holder's lock frees itself")
    .unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(!store.exists("h/ttl").await.unwrap());
    assert_eq!(store.get("h/lock").await.unwrap().value, b"parent");
    lock.unlock().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_last_handle_releases_the_database() {
    let dir = kv_testkit::temp_dir("sled-release");
    let a = SledStore::connect(SledConfig::new(dir.path()))
        .await
        .unwrap();
    let b = SledStore::connect(SledConfig::new(dir.path()))
        .await
        .unwrap();
    a.put("c/key", b"from parent", PutOptions::default())
        .await
        .unwrap();
    let _w = b.watch("c/key").await.unwrap();
    // A lock handle kept after close does not keep the database open.
    let kept = a.new_lock("c/lock", LockOptions::default()).await.unwrap();
    a.close().await.unwrap();
    assert!(kept.is_lost());
    b.close().await.unwrap();
    // Another process can now open it (sled's file lock is gone).
    let (mut child, mut out) = spawn_child("opener", dir.path());
    assert_eq!(wait_line(&mut out, "opened"), "opened from parent");
    assert!(child.wait().unwrap().success());
    // And this process can open it again afterwards.
    let c = SledStore::connect(SledConfig::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(c.get("c/key").await.unwrap().value, b"from parent");
}
