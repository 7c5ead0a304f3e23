//! Consul server launcher for tests: one single-node agent per call, on its own loopback ports
//! and temporary data directory, killed on drop.
//!
//! The binary is `$KV_CONSUL_BIN`, else [`DEFAULT_BIN`] (put there by
//! `scripts/servers/consul.sh install`, which fetches Debian bullseye's consul 1.8.7). When it
//! is missing: if `KV_CONSUL_NOT_RUN=1` (the install script could not fetch it and the test
//! script reports Consul as NOT RUN) a loud NOT RUN line is printed and the test returns early;
//! otherwise [`crate::require_binary`] panics under CI / `KV_REQUIRE_SERVERS=1` or prints a loud
//! SKIPPED line.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_port, temp_dir, ServerProcess};

/// Where `scripts/servers/consul.sh install` puts the binary.
pub const DEFAULT_BIN: &str = "/var/cache/kv-test/consul/root/usr/bin/consul";

/// The Consul binary, or `None` (after a loud NOT RUN / SKIPPED line) when it is missing.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var("KV_CONSUL_BIN").unwrap_or_else(|_| DEFAULT_BIN.to_string());
    if Path::new(&path).is_file() {
        return Some(PathBuf::from(path));
    }
    if matches!(std::env::var("KV_CONSUL_NOT_RUN").as_deref(), Ok("1")) {
        eprintln!(
            "\n!!!! CONSUL NOT RUN: {path} is missing and scripts/servers/consul.sh could not fetch it; this test did NOT run !!!!\n"
        );
        return None;
    }
    crate::require_binary(&path, "run `bash scripts/servers/consul.sh install`")
}

/// TLS files for the agent's HTTPS port.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// CA that signed the server certificate (and the clients' certificates for mTLS).
    pub ca: PathBuf,
    /// Server certificate (PEM), valid for 127.0.0.1.
    pub cert: PathBuf,
    /// Server key (PEM).
    pub key: PathBuf,
    /// Require client certificates signed by `ca` (mutual TLS).
    pub verify_incoming: bool,
}

/// How to start the agent.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Enable ACLs with `default_policy = "deny"`; the launcher bootstraps a management token.
    pub acl: bool,
    /// Serve HTTPS on a second port with these files (plain HTTP stays on for the launcher).
    pub tls: Option<TlsFiles>,
}

/// A running single-node Consul agent.
pub struct Consul {
    /// The process (killed on drop).
    pub process: ServerProcess,
    /// Plain HTTP API port.
    pub http_port: u16,
    /// HTTPS API port, with [`Options::tls`].
    pub https_port: Option<u16>,
    /// The management token bootstrapped with [`Options::acl`].
    pub management_token: Option<String>,
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    dir: tempfile::TempDir,
}

/// Answer of [`Consul::http`]: status and body.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// HTTP status code (0 when the connection failed).
    pub status: u16,
    /// Body text.
    pub body: String,
}

/// One plain HTTP/1.0 request to 127.0.0.1:`port` (blocking, 5 s timeout).
pub fn http_blocking(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> HttpAnswer {
    let fail = HttpAnswer {
        status: 0,
        body: String::new(),
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return fail;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let tok = token
        .map(|t| format!("X-Consul-Token: {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{tok}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return fail;
    }
    let mut buf = Vec::new();
    if s.read_to_end(&mut buf).is_err() && buf.is_empty() {
        return fail;
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    HttpAnswer { status, body }
}

/// The raft log index of the agent at `addr` (`127.0.0.1:port`): `Stats.raft.last_log_index` of
/// `GET /v1/agent/self`. Every write (KV set, txn, session) is one raft entry, so the vs_raw
/// bench reads it around each write run to report server writes per call. `None` when the
/// agent does not answer.
pub fn raft_last_index(addr: &str) -> Option<u64> {
    let port: u16 = addr
        .split(',')
        .next()?
        .trim()
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    let answer = http_blocking(port, "GET", "/v1/agent/self", "", None);
    let at = answer.body.find("\"last_log_index\"")?;
    let digits: String = answer.body[at + "\"last_log_index\"".len()..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

impl Consul {
    /// Starts an agent (see [`Options`]) and waits until it has a leader and accepts a KV
    /// write. `None` when the binary is missing and the test may be skipped (see [`binary`]).
    pub async fn start(opts: Options) -> Option<Consul> {
        let bin = binary()?;
        // Ports come from free_port(): another process may grab one before consul binds it.
        // Consul then exits at once ("address already in use"); try again with new ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut c = Consul::spawn_new(&bin, &opts);
            match c.boot(opts.acl).await {
                Ok(()) => return Some(c),
                Err(tail) if attempt < 4 && tail.contains("address already in use") => {
                    eprintln!(
                        "consul start attempt {attempt}: a port was taken; retrying with new ports"
                    );
                }
                Err(tail) => panic!("consul exited early; log tail:\n{tail}"),
            }
        }
    }

    fn spawn_new(bin: &Path, opts: &Options) -> Consul {
        let dir = temp_dir("consul");
        let http_port = free_port();
        let https_port = opts.tls.as_ref().map(|_| free_port());
        let mut hcl = String::from("performance { raft_multiplier = 1 }\n");
        if let (Some(t), Some(p)) = (&opts.tls, https_port) {
            hcl.push_str(&format!(
                "ports {{ https = {p} }}\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\nverify_incoming = {}\nverify_incoming_https = {}\nverify_incoming_rpc = false\n",
                t.cert.display().to_string(),
                t.key.display().to_string(),
                t.ca.display().to_string(),
                t.verify_incoming,
                t.verify_incoming,
            ));
        }
        if opts.acl {
            hcl.push_str("acl { enabled = true\n default_policy = \"deny\" }\n");
        }
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("create consul data dir");
        let args = vec![
            "agent".to_string(),
            "-server".into(),
            "-bootstrap-expect=1".into(),
            "-node=n1".into(),
            "-bind=127.0.0.1".into(),
            "-advertise=127.0.0.1".into(),
            "-client=127.0.0.1".into(),
            format!("-data-dir={}", data.display()),
            format!("-http-port={http_port}"),
            "-dns-port=-1".into(),
            "-grpc-port=-1".into(),
            format!("-server-port={}", free_port()),
            format!("-serf-lan-port={}", free_port()),
            format!("-serf-wan-port={}", free_port()),
            "-hcl".into(),
            hcl,
        ];
        let log = dir.path().join("consul.log");
        let process = spawn(bin, &args, &log);
        Consul {
            process,
            http_port,
            https_port,
            management_token: None,
            bin: bin.to_path_buf(),
            args,
            log,
            dir,
        }
    }

    /// Waits until ready (bootstrapping ACLs first if enabled); `Err(log tail)` if the process
    /// exited.
    async fn boot(&mut self, acl: bool) -> Result<(), String> {
        if acl {
            self.wait_leader().await?;
            let token = self.bootstrap_acl().await?;
            self.management_token = Some(token);
        }
        self.wait_ready().await
    }

    /// `127.0.0.1:<http port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// The temporary directory holding data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the agent's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Plain HTTP request to this agent (off the async runtime's threads).
    pub async fn http(&self, method: &str, path: &str, body: &str) -> HttpAnswer {
        let (port, m, p, b) = (
            self.http_port,
            method.to_string(),
            path.to_string(),
            body.to_string(),
        );
        let tok = self.management_token.clone();
        tokio::task::spawn_blocking(move || http_blocking(port, &m, &p, &b, tok.as_deref()))
            .await
            .expect("http task")
    }

    /// Starts the agent again on the same ports and data directory and waits until ready.
    pub async fn restart(&mut self) {
        self.process.kill();
        self.process = spawn(&self.bin, &self.args, &self.log);
        if let Err(tail) = self.wait_ready().await {
            panic!("consul exited after its restart; log tail:\n{tail}");
        }
    }

    /// Restarts the agent with an empty data directory (same ports): Consul's raft index
    /// starts again from scratch, as after a loss of its state. Only for agents without ACLs
    /// (a fresh agent would need a new bootstrap).
    pub async fn restart_empty(&mut self) {
        assert!(self.management_token.is_none(), "restart_empty with ACLs");
        self.process.kill();
        let data = self.dir.path().join("data");
        std::fs::remove_dir_all(&data).expect("remove consul data dir");
        std::fs::create_dir_all(&data).expect("create consul data dir");
        self.process = spawn(&self.bin, &self.args, &self.log);
        if let Err(tail) = self.wait_ready().await {
            panic!("consul exited after its restart; log tail:\n{tail}");
        }
    }

    async fn wait_leader(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let a = self.http("GET", "/v1/status/leader", "").await;
            if a.status == 200 && a.body.contains("127.0.0.1") {
                return Ok(());
            }
            self.check_deadline(start, "a leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn bootstrap_acl(&mut self) -> Result<String, String> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let a = self.http("PUT", "/v1/acl/bootstrap", "").await;
            if a.status == 200 {
                if let Some(id) = a
                    .body
                    .split("\"SecretID\":\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                {
                    return Ok(id.to_string());
                }
            }
            self.check_deadline(start, "ACL bootstrap");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let leader = self.http("GET", "/v1/status/leader", "").await;
            if leader.status == 200 && leader.body.contains("127.0.0.1") {
                let put = self.http("PUT", "/v1/kv/kv-testkit-ready", "x").await;
                if put.status == 200 && put.body.contains("true") {
                    self.http("DELETE", "/v1/kv/kv-testkit-ready", "").await;
                    return Ok(());
                }
            }
            self.check_deadline(start, "a leader and a KV write");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn check_alive(&mut self) -> Result<(), String> {
        if self.process.is_running() {
            Ok(())
        } else {
            Err(self.log_tail())
        }
    }

    fn check_deadline(&self, start: Instant, what: &str) {
        if start.elapsed() > Duration::from_secs(90) {
            panic!(
                "consul did not reach {what} within 90 s; log tail:\n{}",
                self.log_tail()
            );
        }
    }
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> ServerProcess {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    ServerProcess::spawn("consul", cmd, Some(log))
}

process_controls!(Consul);
