//! Running the built `kvctl` binary in tests.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generous bound on any wait in these tests.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// `kvctl` with `url` in `KV_URL` and no data home (so nothing outside the test is touched).
pub fn kvctl(url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kvctl"));
    c.env("KV_URL", url)
        .env_remove("XDG_DATA_HOME")
        .env("HOME", "/nonexistent-kvctl-test-home");
    c
}

/// The result of one run: exit code, stdout, stderr.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics unless the exit code is `code`.
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code {} (want {code})\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Each stdout line parsed as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }
}

fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `kvctl ARGS` against `url` and waits (bounded) for it.
pub fn run(url: &str, args: &[&str]) -> Run {
    run_with_stdin(url, args, b"")
}

/// [`run`] with `input` on standard input.
pub fn run_with_stdin(url: &str, args: &[&str], input: &[u8]) -> Run {
    let mut child = kvctl(url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kvctl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    finish(wait_bounded(child))
}

/// Waits for `child`, killing it and panicking after [`DEADLINE`].
pub fn wait_bounded(mut child: Child) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("kvctl did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `kvctl watch …` whose stdout lines are read as they come.
pub struct Streaming {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Streaming {
    /// Starts `kvctl ARGS` with its stdout read line by line on a thread.
    pub fn start(url: &str, args: &[&str]) -> Streaming {
        let mut child = kvctl(url)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn kvctl");
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Streaming { child, lines }
    }

    /// The next line, within [`DEADLINE`].
    pub fn next_line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("a line from kvctl within the deadline")
    }

    /// Sends SIGINT (Ctrl-C) and returns the exit code.
    pub fn interrupt(self) -> i32 {
        let Streaming { child, .. } = self;
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        wait_bounded(child).status.code().unwrap_or(-1)
    }
}
