//! A 3-server Consul cluster on loopback, for fault-injected runs ([`crate::faults`]).
//!
//! Every server agent (`-server -bootstrap-expect=3`, nodes `n1`..`n3`) has its own free
//! loopback ports (HTTP, server RPC which also carries raft, serf LAN, serf WAN; no DNS, no
//! gRPC), its own temporary data directory and a log file next to it, and `-retry-join`s the
//! others' serf LAN ports. Raft runs with Consul's shortest timers
//! (`performance { raft_multiplier = 1 }`: 1 s election and heartbeat timeouts).
//!
//! Where this machine can make partitions ([`crate::partition`]), each agent runs in its own
//! cgroup and [`ConsulMember::isolate`] cuts its server RPC and serf ports off from the other
//! members; its HTTP port stays reachable, so clients connected to it keep talking to it.
//!
//! ```no_run
//! # async fn demo() {
//! let Some(cluster) = kv_testkit::consul_cluster::ConsulCluster::start().await else {
//!     return; // SKIPPED: no consul binary
//! };
//! let url = format!("consul://{}/my-test", cluster.members[0].endpoint());
//! # }
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::consul::{binary, http_blocking, HttpAnswer};
use crate::partition::Partitions;
use crate::{free_port, log_tail, temp_dir, ServerProcess};

/// How long the cluster, or a restarted member, may take to serve.
pub const START_DEADLINE: Duration = Duration::from_secs(90);

/// One server agent of a [`ConsulCluster`].
pub struct ConsulMember {
    /// Node name (`n1`, `n2`, `n3`).
    pub name: String,
    /// HTTP API port on 127.0.0.1 (what clients use).
    pub http_port: u16,
    /// Server RPC port (raft and RPC forwarding between servers).
    pub server_port: u16,
    /// Serf LAN gossip port (TCP and UDP).
    pub serf_lan_port: u16,
    /// Serf WAN gossip port (TCP and UDP).
    pub serf_wan_port: u16,
    /// The agent's log (stdout and stderr).
    pub log: PathBuf,
    process: ServerProcess,
    /// The cluster's partition controls and this member's index, when partitionable.
    net: Option<(Arc<Partitions>, usize)>,
    bin: PathBuf,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

/// Draws a free port not in `taken` (and records it).
fn fresh_port(taken: &mut HashSet<u16>) -> u16 {
    loop {
        let p = free_port();
        if taken.insert(p) {
            return p;
        }
    }
}

/// The port of a `GET /v1/status/leader` answer (`"127.0.0.1:PORT"`), if one is known.
fn leader_port(answer: &HttpAnswer) -> Option<u16> {
    if answer.status != 200 {
        return None;
    }
    answer
        .body
        .trim()
        .trim_matches('"')
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// Blocking probe: the agent at `port` knows a leader and answers a `?consistent` read
/// (200, or 404 for the missing key), so a client request through it can reach the leader.
fn serves(port: u16) -> bool {
    leader_port(&http_blocking(port, "GET", "/v1/status/leader", "", None)).is_some()
        && matches!(
            http_blocking(port, "GET", "/v1/kv/kv-testkit-ready?consistent", "", None).status,
            200 | 404
        )
}

/// Blocking probe: a leader is known and a KV write through the agent at `port` succeeds.
fn writes(port: u16) -> bool {
    if leader_port(&http_blocking(port, "GET", "/v1/status/leader", "", None)).is_none() {
        return false;
    }
    let put = http_blocking(port, "PUT", "/v1/kv/kv-testkit-ready", "x", None);
    put.status == 200 && put.body.contains("true")
}

impl ConsulMember {
    /// `127.0.0.1:<http port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// The temporary directory holding the data directory and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of the agent's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&[&self.log], lines)
    }

    /// Plain HTTP request to this agent (blocking, on tokio's blocking pool).
    pub async fn http(&self, method: &str, path: &str, body: &str) -> HttpAnswer {
        let (port, m, p, b) = (
            self.http_port,
            method.to_string(),
            path.to_string(),
            body.to_string(),
        );
        tokio::task::spawn_blocking(move || http_blocking(port, &m, &p, &b, None))
            .await
            .expect("http task")
    }

    /// The server RPC port of the leader this agent knows (`GET /v1/status/leader`), if any.
    pub async fn leader_port(&self) -> Option<u16> {
        leader_port(&self.http("GET", "/v1/status/leader", "").await)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args);
        if let Some((p, i)) = &self.net {
            p.join(*i, &mut cmd);
        }
        self.process = ServerProcess::spawn(&format!("consul {}", self.name), cmd, Some(&self.log));
    }

    /// Starts the agent again (same arguments, ports and data directory) without waiting;
    /// kills it first if it still runs.
    pub fn restart_no_wait(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Waits (up to [`START_DEADLINE`]) until the agent knows a leader and answers a
    /// `?consistent` read; panics with the log tail if it exits or does not get there.
    pub async fn wait_serving(&mut self) {
        let port = self.http_port;
        self.process
            .wait_ready("serving", START_DEADLINE, &[&self.log], || {
                move || serves(port)
            })
            .await;
    }

    /// Cuts this member off from the other members (clients still reach its HTTP port);
    /// panics when the cluster has no partition controls.
    pub fn isolate(&self) {
        let (p, i) = self
            .net
            .as_ref()
            .expect("not a cluster member with partitions");
        p.isolate(*i)
    }

    /// Undoes [`ConsulMember::isolate`] (every link of the cluster works again).
    pub fn heal(&self) {
        let (p, _) = self
            .net
            .as_ref()
            .expect("not a cluster member with partitions");
        p.heal()
    }
}

process_controls!(ConsulMember);

impl crate::faults::Member for ConsulMember {
    fn kill(&mut self) {
        ConsulMember::kill(self)
    }
    async fn start_and_wait(&mut self) {
        self.restart_no_wait();
        self.wait_serving().await
    }
    fn pause(&self) {
        ConsulMember::pause(self)
    }
    fn resume(&self) {
        ConsulMember::resume(self)
    }
    fn isolate(&self) {
        ConsulMember::isolate(self)
    }
    fn heal(&self) {
        ConsulMember::heal(self)
    }
}

/// Three Consul server agents on loopback (see the [module docs](self)).
pub struct ConsulCluster {
    /// The members, `n1`, `n2`, `n3`.
    pub members: Vec<ConsulMember>,
    /// Why members cannot be partitioned on this machine, if they cannot.
    pub partitions_unavailable: Option<String>,
}

impl ConsulCluster {
    /// Starts three server agents and waits until every one knows a leader and takes a KV
    /// write. `None` when the binary is missing and the test may be skipped
    /// ([`crate::consul::binary`]).
    pub async fn start() -> Option<ConsulCluster> {
        let bin = binary()?;
        // Ports come from free_port(): another process may take one before consul binds it;
        // consul then exits at once ("address already in use"). Try again with new ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut cluster = ConsulCluster::spawn_new(&bin);
            match cluster.boot().await {
                Ok(()) => return Some(cluster),
                Err(tail) if attempt < 4 && tail.contains("address already in use") => {
                    eprintln!(
                        "consul cluster start attempt {attempt}: a port was taken; retrying with new ports"
                    );
                }
                Err(tail) => panic!("a consul cluster member exited early; log tail:\n{tail}"),
            }
        }
    }

    fn spawn_new(bin: &Path) -> ConsulCluster {
        let names = ["n1", "n2", "n3"];
        let mut taken = HashSet::new();
        // (http, server rpc, serf lan, serf wan) per member.
        let ports: Vec<[u16; 4]> = names
            .iter()
            .map(|_| std::array::from_fn(|_| fresh_port(&mut taken)))
            .collect();
        let (partitions, partitions_unavailable) =
            match Partitions::new(ports.iter().map(|p| p[1..].to_vec()).collect()) {
                Ok(p) => (Some(Arc::new(p)), None),
                Err(why) => {
                    eprintln!("NOTE: consul cluster without partitions: {why}");
                    (None, Some(why))
                }
            };
        let hcl = "performance { raft_multiplier = 1 }\n";
        let mut members = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let [http, server, lan, wan] = ports[i];
            let dir = temp_dir(&format!("consul-{name}"));
            let data = dir.path().join("data");
            std::fs::create_dir_all(&data).expect("create consul data dir");
            let mut args = vec![
                "agent".to_string(),
                "-server".into(),
                "-bootstrap-expect=3".into(),
                format!("-node={name}"),
                "-disable-host-node-id=true".into(),
                "-bind=127.0.0.1".into(),
                "-advertise=127.0.0.1".into(),
                "-client=127.0.0.1".into(),
                format!("-data-dir={}", data.display()),
                format!("-http-port={http}"),
                "-dns-port=-1".into(),
                "-grpc-port=-1".into(),
                format!("-server-port={server}"),
                format!("-serf-lan-port={lan}"),
                format!("-serf-wan-port={wan}"),
                "-retry-interval=1s".into(),
                "-hcl".into(),
                hcl.into(),
            ];
            for (j, other) in ports.iter().enumerate() {
                if j != i {
                    args.push(format!("-retry-join=127.0.0.1:{}", other[2]));
                }
            }
            members.push(ConsulMember {
                name: name.to_string(),
                http_port: http,
                server_port: server,
                serf_lan_port: lan,
                serf_wan_port: wan,
                log: dir.path().join("consul.log"),
                process: ServerProcess::not_started(&format!("consul {name}")),
                net: partitions.clone().map(|p| (p, i)),
                bin: bin.to_path_buf(),
                args,
                dir,
            });
        }
        for m in &mut members {
            m.spawn();
        }
        ConsulCluster {
            members,
            partitions_unavailable,
        }
    }

    /// The log tails of every member, each under its name.
    pub fn log_tails(&self, lines: usize) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.name, m.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until every member knows a leader and takes a KV write; `Err(log tails)` when
    /// a member exits first, panics after [`START_DEADLINE`].
    async fn boot(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let mut ready = [false; 3];
        loop {
            for (i, m) in self.members.iter_mut().enumerate() {
                if !m.is_running() {
                    return Err(format!("--- {} ---\n{}", m.name, m.log_tail(40)));
                }
                if !ready[i] {
                    let port = m.http_port;
                    ready[i] = tokio::task::spawn_blocking(move || writes(port))
                        .await
                        .unwrap_or(false);
                }
            }
            if ready.iter().all(|r| *r) {
                self.members[0]
                    .http("DELETE", "/v1/kv/kv-testkit-ready", "")
                    .await;
                return Ok(());
            }
            if start.elapsed() > START_DEADLINE {
                panic!(
                    "the consul cluster did not get a leader and take KV writes within {START_DEADLINE:?}; log tails:\n{}",
                    self.log_tails(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The member whose server RPC port is `port`.
    pub fn member_with_server_port(&self, port: u16) -> Option<usize> {
        self.members.iter().position(|m| m.server_port == port)
    }

    /// The leader as member `i` knows it (`GET /v1/status/leader` on `i`), if any. A paused
    /// member holds the answer up to the request's 5 s read timeout.
    pub async fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let port = self.members[i].leader_port().await?;
        self.member_with_server_port(port)
    }

    /// The member a majority (two) of the members name as leader now, if any.
    pub async fn leader_index(&self) -> Option<usize> {
        let mut votes = [0usize; 3];
        for i in 0..self.members.len() {
            if let Some(l) = self.leader_seen_by(i).await {
                votes[l] += 1;
            }
        }
        votes.iter().position(|v| *v >= 2)
    }

    /// Waits (up to `deadline`) until a majority names the same leader; returns its index.
    pub async fn leader(&self, deadline: Duration) -> usize {
        let start = Instant::now();
        loop {
            if let Some(i) = self.leader_index().await {
                return i;
            }
            if start.elapsed() > deadline {
                panic!(
                    "no consul leader within {deadline:?}; log tails:\n{}",
                    self.log_tails(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Client endpoints of every member, comma-separated (`127.0.0.1:P1,...`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }
}
