//! etcd launcher for tests: single members and 3-member loopback clusters.
//!
//! Every server gets free loopback ports, its own temporary data directory and a log file in
//! it; it is killed when dropped. [`EtcdServer::start`] waits (generous deadline) until
//! `etcdctl endpoint health` succeeds and fails fast if the process dies, printing the log tail.
//!
//! The binaries are `etcd` and `etcdctl` on `PATH`, or the paths in `KV_ETCD_BIN` and
//! `KV_ETCDCTL_BIN` (`scripts/servers/etcd.sh env` prints them for a version selected with
//! `KV_ETCD_VERSION`), so the same tests run on etcd 3.4 or 3.5.
//!
//! ```no_run
//! # async fn demo() {
//! let Some(server) = kv_testkit::etcd::EtcdServer::start().await else { return }; // SKIPPED
//! let url = format!("etcd://{}/my-test", server.endpoint());
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::partition::Partitions;
use crate::{free_port, log_tail, require_binary, temp_dir, ServerProcess};

/// Install hint printed when etcd is missing.
pub const INSTALL_HINT: &str = "apt-get install -y etcd-server etcd-client";

/// How long a member may take to become healthy.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// TLS files for a server started with `--cert-file --key-file --trusted-ca-file`.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA that signs client certificates (and the server's).
    pub ca: PathBuf,
    /// Require client certificates (`--client-cert-auth`).
    pub client_cert_auth: bool,
    /// Client certificate etcdctl uses for health checks (needed with `client_cert_auth`).
    pub client_cert: Option<PathBuf>,
    /// Client key etcdctl uses for health checks.
    pub client_key: Option<PathBuf>,
}

/// Options of a single member.
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    /// Serve clients over TLS.
    pub tls: Option<EtcdTls>,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
}

/// The Prometheus text of `GET /metrics` on the first endpoint of `endpoints` (`host:port` or
/// `http://host:port`, comma-separated; plain HTTP on 127.0.0.1 only), or `None`.
pub fn metrics(endpoints: &str) -> Option<String> {
    let first = endpoints.split(',').next()?.trim();
    let hostport = first.strip_prefix("http://").unwrap_or(first);
    let port: u16 = hostport
        .rsplit(':')
        .next()?
        .trim_end_matches('/')
        .parse()
        .ok()?;
    let answer = crate::consul::http_blocking(port, "GET", "/metrics", "", None);
    (answer.status == 200).then_some(answer.body)
}

/// The sum of every sample of metric `name` in Prometheus text `text` whose labels contain
/// all of `labels` (e.g. `grpc_type="unary"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels_part, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            labels
                .iter()
                .all(|want| labels_part.contains(want))
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// Unary gRPC requests (Range, Put, DeleteRange, Txn, LeaseGrant, ...) the etcd member at
/// `endpoints` has started serving so far (`grpc_server_started_total{grpc_type="unary"}`
/// of its `/metrics`). The vs_raw benches read it around each run to report requests per call.
pub fn unary_requests(endpoints: &str) -> Option<u64> {
    let text = metrics(endpoints)?;
    Some(metric_sum(&text, "grpc_server_started_total", &["grpc_type=\"unary\""]) as u64)
}

/// One etcd member started by a test.
pub struct EtcdServer {
    /// The member's name (`n1`, ...).
    pub name: String,
    /// Client port on 127.0.0.1.
    pub client_port: u16,
    /// Peer port on 127.0.0.1.
    pub peer_port: u16,
    /// Data directory (inside [`EtcdServer::dir`]).
    pub data_dir: PathBuf,
    /// Log file.
    pub log: PathBuf,
    process: ServerProcess,
    /// The cluster's partition controls and this member's index, when partitionable.
    net: Option<(Arc<Partitions>, usize)>,
    options: EtcdOptions,
    initial_cluster: String,
    cluster_token: String,
    dir: tempfile::TempDir,
}

/// The `etcd` binary tests run: `KV_ETCD_BIN` if set, else `etcd` on `PATH`.
pub fn etcd_bin() -> String {
    bin_from_env("KV_ETCD_BIN", "etcd")
}

/// The `etcdctl` binary tests run: `KV_ETCDCTL_BIN` if set, else `etcdctl` on `PATH`.
pub fn etcdctl_bin() -> String {
    bin_from_env("KV_ETCDCTL_BIN", "etcdctl")
}

fn bin_from_env(var: &str, default: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => default.to_string(),
    }
}

fn etcd_binaries() -> bool {
    require_binary(&etcd_bin(), INSTALL_HINT).is_some()
        && require_binary(&etcdctl_bin(), INSTALL_HINT).is_some()
}

impl EtcdServer {
    /// Starts a healthy single-member server; `None` (after a loud SKIPPED line) when etcd is not
    /// installed and servers are not required.
    pub async fn start() -> Option<EtcdServer> {
        Self::start_with(EtcdOptions::default()).await
    }

    /// Starts a healthy single-member server with options.
    pub async fn start_with(options: EtcdOptions) -> Option<EtcdServer> {
        if !etcd_binaries() {
            return None;
        }
        let dir = temp_dir("etcd");
        let peer_port = free_port();
        let initial_cluster = format!("n1=http://127.0.0.1:{peer_port}");
        let mut server = EtcdServer::new(
            "n1",
            dir,
            peer_port,
            initial_cluster,
            "kv-test".into(),
            options,
        );
        server.spawn("new");
        server.wait_healthy().await;
        Some(server)
    }

    fn new(
        name: &str,
        dir: tempfile::TempDir,
        peer_port: u16,
        initial_cluster: String,
        cluster_token: String,
        options: EtcdOptions,
    ) -> EtcdServer {
        EtcdServer {
            name: name.to_string(),
            client_port: free_port(),
            peer_port,
            data_dir: dir.path().join("data"),
            log: dir.path().join("etcd.log"),
            process: ServerProcess::not_started(&format!("etcd {name}")),
            net: None,
            options,
            initial_cluster,
            cluster_token,
            dir,
        }
    }

    /// The scheme clients use: `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        scheme(self.options.tls.as_ref())
    }

    /// `127.0.0.1:PORT` of the client listener.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The temporary directory holding data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, state: &str) {
        let client_url = format!("{}://127.0.0.1:{}", self.scheme(), self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(etcd_bin());
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-token")
            .arg(&self.cluster_token)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg(&self.log);
        if let Some(tls) = &self.options.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca);
            if tls.client_cert_auth {
                cmd.arg("--client-cert-auth");
            }
        }
        cmd.args(&self.options.extra_args);
        // etcd reads ETCD_* variables as flags; keep the environment from interfering.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        if let Some((p, i)) = &self.net {
            p.join(*i, &mut cmd);
        }
        self.process = ServerProcess::spawn(
            &format!("etcd {}", self.name),
            cmd,
            Some(&self.stdout_log()),
        );
    }

    /// Where etcd's stdout/stderr go (next to the zap log).
    fn stdout_log(&self) -> PathBuf {
        self.dir.path().join("etcd.stdout")
    }

    /// An `etcdctl` command (API v3) aimed at this member, with its TLS files if any.
    pub fn etcdctl(&self) -> Command {
        etcdctl(self.client_port, self.options.tls.as_ref())
    }

    /// Runs `etcdctl ARGS` against this member; returns stdout or panics with stderr.
    pub fn ctl(&self, args: &[&str]) -> String {
        crate::run(self.etcdctl().args(args))
    }

    /// True when `etcdctl endpoint health` reports this member healthy.
    pub fn is_healthy(&self) -> bool {
        endpoint_healthy(self.etcdctl())
    }

    /// True when this member reports itself as the raft leader (`etcdctl endpoint status`).
    pub fn is_leader(&self) -> bool {
        match self
            .etcdctl()
            .args(["endpoint", "status", "--write-out=simple"])
            .output()
        {
            // "endpoint, id, version, db size, is leader, is learner, term, index, ..."
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .split(',')
                .nth(4)
                .map(|f| f.trim() == "true")
                .unwrap_or(false),
            _ => false,
        }
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&[&self.log, &self.stdout_log()], lines)
    }

    /// Waits until healthy; panics (with the log tail) on deadline or early exit.
    pub async fn wait_healthy(&mut self) {
        let stdout_log = self.stdout_log();
        let (port, tls) = (self.client_port, self.options.tls.as_ref());
        self.process
            .wait_ready("healthy", START_DEADLINE, &[&self.log, &stdout_log], || {
                let cmd = etcdctl(port, tls);
                move || endpoint_healthy(cmd)
            })
            .await;
    }

    /// Restarts a killed member on its data dir (`--initial-cluster-state existing`) and waits
    /// until it is healthy. Kills it first if it still runs.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn("existing");
        self.wait_healthy().await;
    }

    /// Restarts without waiting for health (for cluster members that need a quorum).
    pub fn restart_no_wait(&mut self) {
        self.kill();
        self.spawn("existing");
    }

    /// Cuts this cluster member off from the other members (clients still reach it); panics
    /// when the cluster has no partition controls.
    pub fn isolate(&self) {
        let (p, i) = self
            .net
            .as_ref()
            .expect("not a cluster member with partitions");
        p.isolate(*i)
    }

    /// Undoes [`EtcdServer::isolate`] (every link of the cluster works again).
    pub fn heal(&self) {
        let (p, _) = self
            .net
            .as_ref()
            .expect("not a cluster member with partitions");
        p.heal()
    }
}

process_controls!(EtcdServer);

/// `https` with TLS, else `http`.
fn scheme(tls: Option<&EtcdTls>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// An `etcdctl` command (API v3) aimed at `127.0.0.1:client_port`, with `tls` files if any.
fn etcdctl(client_port: u16, tls: Option<&EtcdTls>) -> Command {
    let mut cmd = Command::new(etcdctl_bin());
    cmd.env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints={}://127.0.0.1:{client_port}",
            scheme(tls)
        ))
        .arg("--command-timeout=5s")
        .arg("--dial-timeout=2s");
    if let Some(tls) = tls {
        cmd.arg(format!("--cacert={}", tls.ca.display()));
        if let (Some(c), Some(k)) = (&tls.client_cert, &tls.client_key) {
            cmd.arg(format!("--cert={}", c.display()))
                .arg(format!("--key={}", k.display()));
        }
    }
    cmd
}

/// Runs `etcdctl endpoint health` (blocking): true when the member reports itself healthy.
fn endpoint_healthy(mut etcdctl: Command) -> bool {
    etcdctl
        .args(["endpoint", "health"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-member etcd cluster on loopback.
pub struct EtcdCluster {
    /// The members, `n1`, `n2`, `n3`.
    pub members: Vec<EtcdServer>,
    /// Why members cannot be partitioned on this machine, if they cannot.
    pub partitions_unavailable: Option<String>,
}

impl EtcdCluster {
    /// Starts three members and waits until each is healthy; `None` when etcd is missing.
    pub async fn start() -> Option<EtcdCluster> {
        if !etcd_binaries() {
            return None;
        }
        let names = ["n1", "n2", "n3"];
        let peers: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let initial_cluster = names
            .iter()
            .zip(&peers)
            .map(|(n, p)| format!("{n}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("kv-test-{}-{}", std::process::id(), peers[0]);
        let (partitions, partitions_unavailable) =
            match Partitions::new(peers.iter().map(|p| vec![*p]).collect()) {
                Ok(p) => (Some(Arc::new(p)), None),
                Err(why) => {
                    eprintln!("NOTE: etcd cluster without partitions: {why}");
                    (None, Some(why))
                }
            };
        let mut members: Vec<EtcdServer> = names
            .iter()
            .zip(&peers)
            .enumerate()
            .map(|(i, (n, p))| {
                let mut m = EtcdServer::new(
                    n,
                    temp_dir(&format!("etcd-{n}")),
                    *p,
                    initial_cluster.clone(),
                    token.clone(),
                    EtcdOptions::default(),
                );
                m.net = partitions.clone().map(|p| (p, i));
                m
            })
            .collect();
        for m in &mut members {
            m.spawn("new");
        }
        for m in &mut members {
            m.wait_healthy().await;
        }
        Some(EtcdCluster {
            members,
            partitions_unavailable,
        })
    }

    /// Client endpoints of every member, comma-separated (`127.0.0.1:P1,127.0.0.1:P2,...`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Index of the current leader, waiting (up to `deadline`) until one is elected.
    pub async fn leader(&mut self, deadline: Duration) -> usize {
        let start = Instant::now();
        loop {
            for (i, m) in self.members.iter_mut().enumerate() {
                if m.is_running() && m.is_leader() {
                    return i;
                }
            }
            if start.elapsed() > deadline {
                panic!("no etcd leader elected within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
