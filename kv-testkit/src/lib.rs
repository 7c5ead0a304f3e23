//! Test support shared by kv's driver and reliability tests (not published).
//!
//! - [`free_port`]: a loopback port nobody listens on;
//! - [`wait_until`]: poll a condition with a generous deadline instead of sleeping;
//! - [`ServerProcess`]: a server child process killed when dropped, with SIGSTOP/SIGCONT/SIGKILL;
//! - [`require_binary`]: find a server binary, failing loudly when `KV_REQUIRE_SERVERS=1`;
//! - [`ServerProcess::wait_ready`] and [`log_tail`]: what every launcher does while its server
//!   starts (poll a health probe, fail fast with the log tail if the process dies).
//!
//! Server launchers for each backend live in their own modules (3-member clusters:
//! [`etcd::EtcdCluster`], [`zookeeper::ZkEnsemble`], [`consul_cluster::ConsulCluster`]);
//! [`bench`](mod@bench) is the measuring harness of the `vs_raw` benchmarks. The fault runs use
//! [`faults`] (clients, nemesis), [`partition`] (nftables cuts between members),
//! [`linearizability`] (the history checker), [`lockcheck`] (lock exclusion and fencing) and
//! [`cluster_slot`] (one cluster test at a time per process).

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// One heavy test at a time per test process: a 3-member cluster with a nemesis loads both
/// cores of a small machine, and two of them at once starve each other into timeouts; a test
/// that counts the process's threads or RSS must not share the process with another. Hold
/// the guard for the whole test (`let _slot = kv_testkit::cluster_slot().await;`).
pub async fn cluster_slot() -> tokio::sync::MutexGuard<'static, ()> {
    static SLOT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SLOT.lock().await
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `deadline` naming `what`.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when the test run must have real servers (set by `scripts/test` and CI).
pub fn servers_required() -> bool {
    matches!(
        std::env::var("KV_REQUIRE_SERVERS").as_deref(),
        Ok("1") | Ok("true")
    ) || std::env::var_os("CI").is_some()
}

/// Finds `name` on `PATH` (or at an absolute path). When missing: panics if servers are
/// required, otherwise prints a loud SKIPPED line and returns `None`.
pub fn require_binary(name: &str, install_hint: &str) -> Option<PathBuf> {
    let found = if name.contains('/') {
        let p = PathBuf::from(name);
        p.exists().then_some(p)
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    match found {
        Some(p) => Some(p),
        None if servers_required() => {
            panic!("{name} is required for this test but not installed ({install_hint})")
        }
        None => {
            eprintln!(
                "\n*** SKIPPED: {name} is not installed ({install_hint}); run ./scripts/test to install it ***\n"
            );
            None
        }
    }
}

/// Where [`temp_dir`] puts server data when `KV_TEST_DATA_ROOT` is not set (see
/// [`set_data_root`]).
static DATA_ROOT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Makes [`temp_dir`] create its directories under `root` from now on, unless
/// `KV_TEST_DATA_ROOT` says otherwise; the first call wins. Benchmarks put the servers they
/// start on a tmpfs this way (see [`bench::endpoint_or_start`]).
pub fn set_data_root(root: impl Into<std::path::PathBuf>) {
    let _ = DATA_ROOT.set(root.into());
}

/// The directory [`temp_dir`] uses: `KV_TEST_DATA_ROOT` when set and not empty, else what
/// [`set_data_root`] set, else `None` (the system's temp dir).
pub fn data_root() -> Option<std::path::PathBuf> {
    std::env::var_os("KV_TEST_DATA_ROOT")
        .filter(|r| !r.is_empty())
        .map(Into::into)
        .or_else(|| DATA_ROOT.get().cloned())
}

/// A fresh temporary directory named after `tag`, under [`data_root`] when there is one, else
/// in the system's temp dir.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    let prefix = format!("kv-{tag}-");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix);
    match data_root() {
        Some(root) => b.tempdir_in(&root),
        None => b.tempdir(),
    }
    .unwrap_or_else(|e| panic!("create a temp dir for {tag}: {e}"))
}

/// A server child process; SIGKILLed (and reaped) on drop.
pub struct ServerProcess {
    name: String,
    child: Option<Child>,
}

impl ServerProcess {
    /// Spawns `cmd` with stdout/stderr appended to `log` (or discarded).
    pub fn spawn(name: &str, mut cmd: Command, log: Option<&std::path::Path>) -> Self {
        let (out, err) = match log {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open server log");
                (Stdio::from(f.try_clone().expect("dup log")), Stdio::from(f))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ServerProcess {
            name: name.to_string(),
            child: Some(child),
        }
    }

    /// A launcher's process before its first start: not running, pid 0; signals and `kill` do
    /// nothing, and [`ServerProcess::wait_ready`] does not fail fast on it.
    pub fn not_started(name: &str) -> Self {
        ServerProcess {
            name: name.to_string(),
            child: None,
        }
    }

    /// Process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends a signal (e.g. `libc::SIGSTOP`).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = self.child.as_ref() {
            // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    /// Freezes the process (SIGSTOP).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP)
    }

    /// Resumes a frozen process (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT)
    }

    /// SIGKILLs the process and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the server is `ready` (a word for messages: "healthy", "serving"): every
    /// 100 ms, `probe` makes a blocking check that runs on tokio's blocking pool, until one
    /// returns true. Panics with the last 40 lines of `logs` when the (started) process exits
    /// first or after `deadline`.
    pub async fn wait_ready<Q>(
        &mut self,
        ready: &str,
        deadline: Duration,
        logs: &[&Path],
        mut probe: impl FnMut() -> Q,
    ) where
        Q: FnOnce() -> bool + Send + 'static,
    {
        let start = Instant::now();
        loop {
            if self.child.is_some() && !self.is_running() {
                panic!(
                    "{} exited during start-up; log tail:\n{}",
                    self.name,
                    log_tail(logs, 40)
                );
            }
            if tokio::task::spawn_blocking(probe()).await.unwrap_or(false) {
                return;
            }
            if start.elapsed() > deadline {
                panic!(
                    "{} not {ready} after {deadline:?}; log tail:\n{}",
                    self.name,
                    log_tail(logs, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The last `lines` lines of the text of `files` read one after another (a missing file reads
/// as empty).
pub fn log_tail(files: &[&Path], lines: usize) -> String {
    let mut text = String::new();
    for f in files {
        text.push_str(&std::fs::read_to_string(f).unwrap_or_default());
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            // A stopped process must be continued before it can die cleanly.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGCONT);
            }
        }
        self.kill();
    }
}

/// Runs a shell command to completion and returns its stdout; panics with stderr on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Gives a launcher whose server runs in its `process: ServerProcess` field the process
/// controls tests use: `pid`, `is_running`, `kill`, `pause`, `resume`.
macro_rules! process_controls {
    ($launcher:ty) => {
        impl $launcher {
            /// Process id (0 when not running).
            pub fn pid(&self) -> u32 {
                self.process.pid()
            }

            /// True while the process runs.
            pub fn is_running(&mut self) -> bool {
                self.process.is_running()
            }

            /// SIGKILLs the server and waits for it to exit (its data directory is kept).
            pub fn kill(&mut self) {
                self.process.kill()
            }

            /// Freezes the server (SIGSTOP).
            pub fn pause(&self) {
                self.process.pause()
            }

            /// Resumes a frozen server (SIGCONT).
            pub fn resume(&self) {
                self.process.resume()
            }
        }
    };
}

pub mod bench;
pub mod consul;
pub mod consul_cluster;
pub mod etcd;
pub mod faults;
pub mod fuzz;
pub mod linearizability;
pub mod lockcheck;
pub mod partition;
pub mod watchbench;
pub mod zookeeper;

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[test]
    fn log_tail_reads_files_in_order() {
        let dir = temp_dir("log-tail");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "1\n2\n3\n").unwrap();
        std::fs::write(&b, "4\n5\n").unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(log_tail(&[&a, &missing, &b], 3), "3\n4\n5");
        assert_eq!(log_tail(&[&a], 10), "1\n2\n3");
    }

    #[tokio::test]
    async fn wait_ready_returns_once_the_probe_passes() {
        let mut p = ServerProcess::spawn("sleeper", sh("sleep 30"), None);
        let mut calls = 0;
        p.wait_ready("ready", Duration::from_secs(30), &[], || {
            calls += 1;
            let ok = calls >= 3;
            move || ok
        })
        .await;
        assert_eq!(calls, 3);
        assert!(p.is_running());
    }

    #[tokio::test]
    #[should_panic(expected = "quitter exited during start-up; log tail:\nboom")]
    async fn wait_ready_fails_fast_with_the_log_tail_when_the_process_dies() {
        let dir = temp_dir("wait-ready");
        let log = dir.path().join("log");
        let mut p = ServerProcess::spawn("quitter", sh("echo boom; exit 3"), Some(&log));
        p.wait_ready("ready", Duration::from_secs(60), &[&log], || || false)
            .await;
    }

    #[tokio::test]
    #[should_panic(expected = "sleeper not serving after 300ms")]
    async fn wait_ready_panics_after_the_deadline() {
        let mut p = ServerProcess::spawn("sleeper", sh("sleep 30"), None);
        p.wait_ready("serving", Duration::from_millis(300), &[], || || false)
            .await;
    }

    #[tokio::test]
    #[should_panic(expected = "never not ready after 300ms")]
    async fn wait_ready_on_a_process_never_started_waits_for_the_deadline() {
        let mut p = ServerProcess::not_started("never");
        assert_eq!((p.pid(), p.is_running()), (0, false));
        p.wait_ready("ready", Duration::from_millis(300), &[], || || false)
            .await;
    }
}
