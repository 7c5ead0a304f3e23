//! Test support shared by kv's driver and reliability tests (not published).
//!
//! - [`free_port`]: a loopback port nobody listens on;
//! - [`wait_until`]: poll a condition with a generous deadline instead of sleeping;
//! - [`ServerProcess`]: a server child process killed when dropped, with SIGSTOP/SIGCONT/SIGKILL;
//! - [`require_binary`]: find a server binary, failing loudly when `KV_REQUIRE_SERVERS=1`.
//!
//! Server launchers for each backend live in their own modules.

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
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
    matches!(std::env::var("KV_REQUIRE_SERVERS").as_deref(), Ok("1") | Ok("true"))
        || std::env::var_os("CI").is_some()
}

/// Finds `name` on `PATH` (or at an absolute path). When missing: panics if servers are
/// required, otherwise prints a loud SKIPPED line and returns `None`.
pub fn require_binary(name: &str, install_hint: &str) -> Option<PathBuf> {
    let found = if name.contains('/') {
        let p = PathBuf::from(name);
        p.exists().then_some(p)
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file())
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

/// A fresh temporary directory named after `tag`.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("kv-{tag}-")).tempdir().expect("create temp dir")
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
        ServerProcess { name: name.to_string(), child: Some(child) }
    }

    /// Process id.
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

    /// Panics (naming the server) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("{} exited early with {status}", self.name);
            }
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
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub mod etcd;
pub mod zookeeper;
pub mod consul;
