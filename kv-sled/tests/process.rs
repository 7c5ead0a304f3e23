//! Crash and multi-process tests: the test binary re-executes itself as a child process.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use kv_core::{Error, LockOptions, PutOptions, Store};
use kv_sled::{SledConfig, SledStore};

mod strace_log;
use strace_log::{is_call, log_fdatasyncs, returned_zero};

const CHILD_MODE: &str = "KV_SLED_CHILD_MODE";
const CHILD_PATH: &str = "KV_SLED_CHILD_PATH";
/// Writes per strace scenario.
const STRACE_WRITES: u32 = 200;

/// Runs `child_entry` of this test binary in a child process with `mode`.
fn spawn_child(mode: &str, path: &Path) -> (Child, BufReader<ChildStdout>) {
    spawn_child_with(mode, path, Command::new(std::env::current_exe().unwrap()))
}

/// [`spawn_child`] through `command` (the test binary itself, or a tracer that runs it).
fn spawn_child_with(
    mode: &str,
    path: &Path,
    mut command: Command,
) -> (Child, BufReader<ChildStdout>) {
    let mut child = command
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
    // Shared by the writer tasks below (the store is not `Clone`).
    let store = std::sync::Arc::new(SledStore::connect(SledConfig::new(&path)).await.unwrap());
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
        "writers16" => {
            // 16 concurrent writers; each acknowledgement is printed only after `put` returned Ok.
            let out = std::sync::Arc::new(std::sync::Mutex::new(stdout));
            let tasks: Vec<_> = (0..16)
                .map(|t| {
                    let (store, out) = (store.clone(), out.clone());
                    tokio::spawn(async move {
                        for i in 0..100_000u32 {
                            let p = store
                                .put(&format!("c{t}/{i:06}"), b"v", PutOptions::default())
                                .await
                                .unwrap();
                            let mut o = out.lock().unwrap();
                            writeln!(o, "ack {t} {i} {}", p.version).unwrap();
                            o.flush().unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
        "strace-seq" => {
            // Markers around each call, so the parent can place the syncs between them.
            for i in 0..STRACE_WRITES {
                writeln!(stdout, "begin {i}").unwrap();
                stdout.flush().unwrap();
                store
                    .put(&format!("s/{i}"), b"v", PutOptions::default())
                    .await
                    .unwrap();
                writeln!(stdout, "ack {i}").unwrap();
                stdout.flush().unwrap();
            }
            store.close().await.unwrap();
            writeln!(stdout, "done").unwrap();
        }
        "strace-blob" => {
            // A value far above sled's inline limit goes to a blob file of its own.
            writeln!(stdout, "begin blob").unwrap();
            stdout.flush().unwrap();
            store
                .put("b/big", &vec![7u8; 1 << 20], PutOptions::default())
                .await
                .unwrap();
            writeln!(stdout, "ack blob").unwrap();
            stdout.flush().unwrap();
            writeln!(stdout, "done").unwrap();
        }
        "strace-par" => {
            let tasks: Vec<_> = (0..64)
                .map(|t| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        for i in 0..STRACE_WRITES / 10 {
                            store
                                .put(&format!("p{t}/{i}"), b"v", PutOptions::default())
                                .await
                                .unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            store.close().await.unwrap();
            writeln!(stdout, "done").unwrap();
        }
        "strace-noflush" => {
            store.close().await.unwrap();
            let store = SledStore::connect(SledConfig::new(&path).with_flush(false))
                .await
                .unwrap();
            for i in 0..STRACE_WRITES {
                store
                    .put(&format!("n/{i}"), b"v", PutOptions::default())
                    .await
                    .unwrap();
            }
            writeln!(stdout, "done").unwrap();
            stdout.flush().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acknowledged_writes_survive_sigkill() {
    for rep in 0..3 {
        let dir = kv_testkit::temp_dir(&format!("sled-sigkill16-{rep}"));
        let (mut child, mut out) = spawn_child("writers16", dir.path());
        let parse = |line: &str| -> Option<(String, u64)> {
            let rest = &line[line.find("ack ")? + 4..];
            let mut parts = rest.split_whitespace();
            let (t, i, v) = (parts.next()?, parts.next()?, parts.next()?);
            Some((
                format!("c{t}/{:06}", i.parse::<u32>().ok()?),
                v.parse().ok()?,
            ))
        };
        let mut acked = Vec::new();
        while acked.len() < 400 {
            acked.extend(parse(&wait_line(&mut out, "ack ")));
        }
        kill(&mut child);
        let mut line = String::new();
        while out.read_line(&mut line).unwrap() > 0 {
            acked.extend(parse(&line));
            line.clear();
        }
        let store = SledStore::connect(SledConfig::new(dir.path()))
            .await
            .unwrap();
        for (key, version) in &acked {
            let p = store.get(key).await.unwrap_or_else(|e| {
                panic!(
                    "acknowledged {key} lost after SIGKILL ({} acked): {e}",
                    acked.len()
                )
            });
            assert_eq!(p.version, *version, "{key}");
        }
        eprintln!(
            "repetition {rep}: {} acknowledged writes of 16 writers all read back",
            acked.len()
        );
        store.close().await.unwrap();
    }
}

/// Runs child `mode` under `strace -f` and returns the trace lines of the sync calls and of
/// the child's stdout writes, in the order strace saw them (`None`: strace missing, skipped).
fn traced(mode: &str, path: &Path) -> Option<Vec<String>> {
    let strace = kv_testkit::require_binary("strace", "apt-get install strace")?;
    let log = path.with_extension("strace");
    let mut cmd = Command::new(strace);
    cmd.args([
        "-f",
        "-qq",
        "-y",
        "-e",
        "trace=fdatasync,fsync,sync_file_range,write",
        "-o",
    ])
    .arg(&log)
    .arg(std::env::current_exe().unwrap());
    let (mut child, mut out) = spawn_child_with(mode, &path.join("db-dir"), cmd);
    wait_line(&mut out, "done");
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    Some(
        text.lines()
            .filter(|l| !l.contains("write(") || l.contains("write(1"))
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn every_durable_write_waits_for_an_fdatasync_of_the_log() {
    let dir = kv_testkit::temp_dir("sled-strace-seq");
    let Some(lines) = traced("strace-seq", dir.path()) else {
        return;
    };
    // For each put: an fdatasync of the log must START after the put began and END before it
    // returned (sled's own flush is only sync_file_range, which does not reach stable storage).
    let mut begun: Option<u32> = None;
    let mut sync_started_since_begin = false;
    let mut covered = 0;
    for l in &lines {
        if is_call(l, "write") && l.contains("\"begin ") {
            begun = Some(covered);
            sync_started_since_begin = false;
        } else if is_call(l, "fdatasync") {
            // Only the flusher thread calls fdatasync: a "resumed" line ends the last one begun.
            if l.contains("/db>") && begun.is_some() {
                sync_started_since_begin = true;
            }
            if returned_zero(l) && sync_started_since_begin {
                if let Some(i) = begun.take() {
                    covered = i + 1;
                }
            }
        } else if is_call(l, "write") && l.contains("\"ack ") {
            assert!(
                begun.is_none(),
                "put {covered} returned before an fdatasync of the log covered it: {l}"
            );
        }
    }
    assert_eq!(
        covered, STRACE_WRITES,
        "every put was covered by its own fdatasync"
    );
    let n = log_fdatasyncs(&lines);
    eprintln!("{STRACE_WRITES} sequential durable puts: {n} fdatasync calls on the log");
    assert!(n >= STRACE_WRITES as usize);
}

#[test]
fn a_durable_blob_value_is_fsynced_before_the_put_returns() {
    let dir = kv_testkit::temp_dir("sled-strace-blob");
    let Some(lines) = traced("strace-blob", dir.path()) else {
        return;
    };
    let at = |what: &str| {
        lines
            .iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in the trace"))
    };
    let (begin, ack) = (at("\"begin blob"), at("\"ack blob"));
    let blob_syncs = lines[begin..ack]
        .iter()
        .filter(|l| is_call(l, "fsync") && l.contains("/blobs/"))
        .count();
    assert!(
        blob_syncs >= 1,
        "the put returned before its blob file was fsynced:\n{}",
        lines[begin..=ack].join("\n")
    );
}

#[test]
fn concurrent_durable_writers_share_fdatasyncs() {
    let dir = kv_testkit::temp_dir("sled-strace-par");
    let Some(lines) = traced("strace-par", dir.path()) else {
        return;
    };
    let writes = 64 * (STRACE_WRITES / 10) as usize;
    let n = log_fdatasyncs(&lines);
    eprintln!("{writes} durable puts by 64 writers: {n} fdatasync calls on the log");
    assert!(n >= 1, "durable writes without any fdatasync");
    assert!(
        n < writes / 2,
        "{n} fdatasyncs for {writes} writes: no group commit"
    );
}

#[test]
fn writes_without_flush_do_not_wait_for_fdatasync() {
    let dir = kv_testkit::temp_dir("sled-strace-noflush");
    let Some(lines) = traced("strace-noflush", dir.path()) else {
        return;
    };
    // Only the close of the first (flush=true) handle syncs; the puts never do.
    let n = log_fdatasyncs(&lines);
    eprintln!("{STRACE_WRITES} puts with flush=false: {n} fdatasync calls on the log");
    assert!(n <= 2, "{n} fdatasyncs for writes that did not ask for any");
}
