//! ZooKeeper server launcher for tests: single servers (optionally with TLS) and 3-node
//! ensembles on loopback, each with its own free ports and temporary data directory.
//!
//! Uses the Debian `zookeeper` package (`/usr/share/java/zookeeper.jar`, 3.8) and
//! `libslf4j-java`, run with `java` directly (`QuorumPeerMain zoo.cfg`), or the class path in
//! `KV_ZK_CLASSPATH` when set (`scripts/servers/zookeeper.sh env` prints it for a version
//! selected with `KV_ZK_VERSION`, e.g. 3.9), so the same tests run on either version. Health is checked
//! with the `srvr` four-letter word: a server serves once `srvr` prints a `Mode:` line
//! (`ruok` answers `imok` earlier, before the server can serve).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::partition::Partitions;
use crate::{free_port, log_tail, require_binary, temp_dir, ServerProcess};

/// The ZooKeeper server jar of the Debian package.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// Jars needed next to [`ZOOKEEPER_JAR`] (logging; netty for TLS).
pub const EXTRA_JARS: &[&str] = &[
    "/usr/share/java/slf4j-simple.jar",
    "/usr/share/java/slf4j-api.jar",
    "/usr/share/java/netty-codec.jar",
    "/usr/share/java/netty-resolver.jar",
    "/usr/share/java/netty-handler.jar",
    "/usr/share/java/netty-buffer.jar",
    "/usr/share/java/netty-common.jar",
    "/usr/share/java/netty-transport.jar",
    "/usr/share/java/netty-transport-native-epoll.jar",
    "/usr/share/java/netty-transport-native-unix-common.jar",
];

const INSTALL_HINT: &str =
    "apt-get install -y zookeeper libslf4j-java, or bash scripts/servers/zookeeper.sh install";

/// The java binary, or `None` (after a loud SKIPPED line) when ZooKeeper cannot run here;
/// panics instead when servers are required (`KV_REQUIRE_SERVERS=1`). With `KV_ZK_CLASSPATH`
/// every entry of it must exist.
pub fn require_zookeeper() -> Option<PathBuf> {
    let java = require_binary("java", INSTALL_HINT)?;
    match classpath_from_env() {
        Some(cp) => {
            for jar in cp.split(':') {
                require_binary(
                    jar,
                    "KV_ZK_CLASSPATH names it: run scripts/servers/zookeeper.sh install",
                )?;
            }
        }
        None => {
            require_binary(ZOOKEEPER_JAR, INSTALL_HINT)?;
        }
    }
    Some(java)
}

fn classpath_from_env() -> Option<String> {
    std::env::var("KV_ZK_CLASSPATH")
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The class path for the server: `KV_ZK_CLASSPATH` if set, else [`ZOOKEEPER_JAR`] and
/// those [`EXTRA_JARS`] that exist.
pub fn classpath() -> String {
    if let Some(cp) = classpath_from_env() {
        return cp;
    }
    let mut parts = vec![ZOOKEEPER_JAR.to_string()];
    parts.extend(
        EXTRA_JARS
            .iter()
            .filter(|j| Path::new(j).exists())
            .map(|j| j.to_string()),
    );
    parts.join(":")
}

/// TLS files for a server: PKCS12 key store (server certificate and key) and trust store.
#[derive(Clone, Debug)]
pub struct ZkTls {
    /// PKCS12 key store with the server's certificate and key.
    pub keystore: PathBuf,
    /// Its password.
    pub keystore_password: String,
    /// PKCS12 trust store with the CA that signs client certificates.
    pub truststore: PathBuf,
    /// Its password.
    pub truststore_password: String,
    /// Require client certificates (`ssl.clientAuth=need`) instead of not asking (`none`).
    pub client_auth: bool,
}

/// Options of a single server.
#[derive(Clone, Debug)]
pub struct ZkOptions {
    /// `tickTime` in ms (session timeouts are negotiated between 2 and 20 ticks).
    pub tick_ms: u32,
    /// `extendedTypesEnabled` (TTL nodes).
    pub extended_types: bool,
    /// Serve TLS on a second port.
    pub tls: Option<ZkTls>,
}

impl Default for ZkOptions {
    fn default() -> Self {
        ZkOptions {
            tick_ms: 500,
            extended_types: true,
            tls: None,
        }
    }
}

/// Sends a four-letter word to `127.0.0.1:port` and returns the answer (empty on failure).
pub fn four_letter(port: u16, word: &str) -> String {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(word.as_bytes()).is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The `Mode:` of the server on `port` (`standalone`, `leader`, `follower`), if it serves.
pub fn mode(port: u16) -> Option<String> {
    four_letter(port, "srvr")
        .lines()
        .find_map(|l| l.strip_prefix("Mode:").map(|m| m.trim().to_string()))
}

/// The port of the first `host:port` of `endpoints` (comma-separated; only 127.0.0.1 servers
/// are asked).
fn first_port(endpoints: &str) -> Option<u16> {
    endpoints
        .split(',')
        .next()?
        .trim()
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// A counter of the `mntr` answer of the server at `endpoints` (its first `127.0.0.1:port`),
/// e.g. `zk_packets_received`; `None` when the server does not answer.
pub fn mntr_counter(endpoints: &str, name: &str) -> Option<u64> {
    let port = first_port(endpoints)?;
    four_letter(port, "mntr").lines().find_map(|l| {
        let (k, v) = l.split_once('\t')?;
        (k.trim() == name).then(|| v.trim().parse().ok())?
    })
}

/// Requests the server at `endpoints` has received from clients so far (`mntr`
/// `zk_packets_received`: every request packet, pings included; four-letter words are not
/// counted). The vs_raw benches read it around each run to report requests per call.
pub fn packets_received(endpoints: &str) -> Option<u64> {
    mntr_counter(endpoints, "zk_packets_received")
}

/// One ZooKeeper server process (standalone or an ensemble member).
pub struct ZkServer {
    java: PathBuf,
    /// Client port (plain text).
    pub port: u16,
    /// TLS client port, when TLS is on.
    pub secure_port: Option<u16>,
    dir: PathBuf,
    cfg: PathBuf,
    log: PathBuf,
    process: ServerProcess,
    /// The ensemble's partition controls and this member's index, when partitionable.
    net: Option<(Arc<Partitions>, usize)>,
    _tmp: Option<tempfile::TempDir>,
}

fn write_cfg(
    dir: &Path,
    port: u16,
    options: &ZkOptions,
    secure_port: Option<u16>,
    quorum: &[String],
) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("create data dir");
    let mut cfg = format!(
        "tickTime={}\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
         4lw.commands.whitelist=*\nadmin.enableServer=false\nmaxClientCnxns=0\n\
         extendedTypesEnabled={}\n",
        options.tick_ms,
        data.display(),
        options.extended_types
    );
    if let (Some(tls), Some(sp)) = (&options.tls, secure_port) {
        cfg.push_str(&format!(
            "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\nsecureClientPort={sp}\n\
             secureClientPortAddress=127.0.0.1\n\
             ssl.keyStore.location={}\nssl.keyStore.password={}\nssl.keyStore.type=PKCS12\n\
             ssl.trustStore.location={}\nssl.trustStore.password={}\nssl.trustStore.type=PKCS12\n\
             ssl.protocol=TLSv1.2\nssl.enabledProtocols=TLSv1.2\nssl.clientAuth={}\n",
            tls.keystore.display(),
            tls.keystore_password,
            tls.truststore.display(),
            tls.truststore_password,
            if tls.client_auth { "need" } else { "none" }
        ));
    }
    for (i, line) in quorum.iter().enumerate() {
        cfg.push_str(&format!("server.{}={line}\n", i + 1));
    }
    let path = dir.join("zoo.cfg");
    std::fs::write(&path, cfg).expect("write zoo.cfg");
    path
}

impl ZkServer {
    /// Starts a standalone server with default options; `None` if ZooKeeper is not installed
    /// (and servers are not required).
    pub async fn start() -> Option<ZkServer> {
        Self::start_with(ZkOptions::default()).await
    }

    /// Starts a standalone server with `options` and waits until it serves.
    pub async fn start_with(options: ZkOptions) -> Option<ZkServer> {
        let java = require_zookeeper()?;
        let tmp = temp_dir("zk");
        let port = free_port();
        let secure_port = options.tls.as_ref().map(|_| free_port());
        let cfg = write_cfg(tmp.path(), port, &options, secure_port, &[]);
        let mut s = ZkServer {
            java,
            port,
            secure_port,
            dir: tmp.path().to_path_buf(),
            log: tmp.path().join("zk.log"),
            cfg,
            process: ServerProcess::not_started("zookeeper"),
            net: None,
            _tmp: Some(tmp),
        };
        s.spawn();
        s.wait_serving().await;
        Some(s)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(&self.java);
        cmd.arg("-Xmx512m")
            .arg("-XX:-UsePerfData")
            .arg("-Dznode.container.checkIntervalMs=1000")
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg("-cp")
            .arg(classpath())
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&self.cfg)
            .current_dir(&self.dir);
        if let Some((p, i)) = &self.net {
            p.join(*i, &mut cmd);
        }
        self.process = ServerProcess::spawn("zookeeper", cmd, Some(&self.log));
    }

    /// `127.0.0.1:port` of the plain-text client port.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:port` of the TLS client port (panics without TLS).
    pub fn secure_endpoint(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.secure_port.expect("server started without TLS")
        )
    }

    /// The server's directory (config, data, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&[&self.log], lines)
    }

    /// The server's `Mode:` (`standalone`, `leader`, `follower`) if it serves.
    pub fn mode(&self) -> Option<String> {
        mode(self.port)
    }

    /// Waits (up to 60 s) until the server serves; panics with the log tail if it dies or
    /// does not come up.
    pub async fn wait_serving(&mut self) {
        let port = self.port;
        self.process
            .wait_ready("serving", Duration::from_secs(60), &[&self.log], || {
                move || mode(port).is_some()
            })
            .await;
        // The TLS port (Netty) may start listening after the plain one answers `mntr`.
        if let Some(sp) = self.secure_port {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], sp));
            crate::wait_until(
                "the ZooKeeper TLS port to accept",
                Duration::from_secs(60),
                || async move {
                    let ok = tokio::net::TcpStream::connect(addr).await.is_ok();
                    ok.then_some(())
                },
            )
            .await;
        }
    }

    /// Starts the process again (same ports and data) without waiting.
    pub fn start_again(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills (if running) and restarts the server with the same ports and data, and waits
    /// until it serves.
    pub async fn restart(&mut self) {
        self.start_again();
        self.wait_serving().await;
    }

    /// Cuts this ensemble member off from the other members (clients still reach it); panics
    /// when the ensemble has no partition controls.
    pub fn isolate(&self) {
        let (p, i) = self
            .net
            .as_ref()
            .expect("not an ensemble member with partitions");
        p.isolate(*i)
    }

    /// Undoes [`ZkServer::isolate`] (every link of the ensemble works again).
    pub fn heal(&self) {
        let (p, _) = self
            .net
            .as_ref()
            .expect("not an ensemble member with partitions");
        p.heal()
    }
}

process_controls!(ZkServer);

/// A 3-node ensemble on loopback.
pub struct ZkEnsemble {
    /// The members, index 0..3 (`myid` = index + 1).
    pub nodes: Vec<ZkServer>,
    /// Why members cannot be partitioned on this machine, if they cannot.
    pub partitions_unavailable: Option<String>,
    _tmp: tempfile::TempDir,
}

impl ZkEnsemble {
    /// Starts a 3-node ensemble and waits until every node serves (one is the leader).
    pub async fn start() -> Option<ZkEnsemble> {
        let java = require_zookeeper()?;
        let tmp = temp_dir("zk-ensemble");
        let options = ZkOptions::default();
        let peer_ports: Vec<Vec<u16>> = (0..3).map(|_| vec![free_port(), free_port()]).collect();
        let quorum: Vec<String> = peer_ports
            .iter()
            .map(|p| format!("127.0.0.1:{}:{}", p[0], p[1]))
            .collect();
        let (partitions, partitions_unavailable) = match Partitions::new(peer_ports) {
            Ok(p) => (Some(Arc::new(p)), None),
            Err(why) => {
                eprintln!("NOTE: zookeeper ensemble without partitions: {why}");
                (None, Some(why))
            }
        };
        let mut nodes = Vec::new();
        for i in 0..3 {
            let dir = tmp.path().join(format!("node{}", i + 1));
            std::fs::create_dir_all(dir.join("data")).expect("create node dir");
            std::fs::write(dir.join("data").join("myid"), format!("{}\n", i + 1))
                .expect("write myid");
            let port = free_port();
            let cfg = write_cfg(&dir, port, &options, None, &quorum);
            nodes.push(ZkServer {
                java: java.clone(),
                port,
                secure_port: None,
                log: dir.join("zk.log"),
                dir,
                cfg,
                process: ServerProcess::not_started("zookeeper"),
                net: partitions.clone().map(|p| (p, i)),
                _tmp: None,
            });
        }
        for n in nodes.iter_mut() {
            n.spawn();
        }
        for n in nodes.iter_mut() {
            n.wait_serving().await;
        }
        Some(ZkEnsemble {
            nodes,
            partitions_unavailable,
            _tmp: tmp,
        })
    }

    /// Comma-separated client endpoints of every node.
    pub fn endpoints(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Index of the current leader (polls `srvr`, up to `deadline`).
    pub async fn leader(&self, deadline: Duration) -> usize {
        let start = Instant::now();
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                let port = n.port;
                let m = tokio::task::spawn_blocking(move || mode(port))
                    .await
                    .ok()
                    .flatten();
                if m.as_deref() == Some("leader") {
                    return i;
                }
            }
            if start.elapsed() > deadline {
                panic!("no zookeeper leader within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
