//! Network partitions between the members of a cluster on this machine.
//!
//! Every member runs in a cgroup (v2) of its own; one nftables table on the output hook (all
//! loopback traffic passes it once, in the sender) marks each connection a member opens to a
//! peer port (TCP or UDP) with that member's number (`ct mark`). Cutting member `i` off then drops, in both
//! directions, every packet of a connection it opened, to any of its peer ports, or from them.
//! Client ports stay open: clients connected to an isolated member keep talking to it, which is
//! the case a partition test is about (a deposed leader still answering its clients).
//!
//! Needs root, `nft` and cgroup v2 mounted under `/sys/fs/cgroup` (nft resolves cgroup paths
//! there). [`Partitions::new`] says which is missing. Tables and cgroups are named after the
//! test process's pid; ones left by a process that died are removed by the next
//! [`Partitions::new`].

use std::ffi::CString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const PREFIX: &str = "kv_part_";
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One member's cgroup and peer ports.
struct Net {
    dir: PathBuf,
    /// The cgroup's path as nft names it (relative to `/sys/fs/cgroup`).
    nft_path: String,
    procs: CString,
    peer_ports: Vec<u16>,
}

/// The partition controls of one cluster (see the [module docs](self)).
pub struct Partitions {
    table: String,
    members: Vec<Net>,
    isolated: Mutex<Option<usize>>,
}

impl std::fmt::Debug for Partitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partitions")
            .field("table", &self.table)
            .field("isolated", &self.isolated.lock().unwrap())
            .finish()
    }
}

/// Where cgroup v2 is mounted, if under `/sys/fs/cgroup`.
fn cgroup2_mount() -> Result<PathBuf, String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(|e| e.to_string())?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(at))
        })
        .find(|p| p.starts_with("/sys/fs/cgroup"))
        .ok_or_else(|| "cgroup v2 is not mounted under /sys/fs/cgroup".to_string())
}

fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .map_err(|e| format!("nft stdin: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ports(set: &[u16]) -> String {
    let list: Vec<String> = set.iter().map(|p| p.to_string()).collect();
    format!("{{ {} }}", list.join(", "))
}

/// Removes the tables and cgroups of test processes that are gone.
fn remove_stale(mount: &Path) {
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    if let Ok(out) = Command::new("nft").args(["list", "tables"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.strip_prefix("table inet ") else {
                continue;
            };
            if let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('_').next()) {
                if !alive(pid) {
                    let _ = nft(&format!("delete table inet {name}\n"));
                }
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(mount) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('_').next()) {
                if !alive(pid) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }
}

impl Partitions {
    /// Sets up cgroups and the marking rules for members whose peer (member-to-member)
    /// listening ports are `peer_ports[i]`. Members must be started through
    /// [`Partitions::join`] to be partitionable. `Err` names what this machine lacks.
    pub fn new(peer_ports: Vec<Vec<u16>>) -> Result<Partitions, String> {
        let mount = cgroup2_mount()?;
        let rel = mount
            .strip_prefix("/sys/fs/cgroup")
            .expect("checked above")
            .to_path_buf();
        remove_stale(&mount);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let table = format!("{PREFIX}{}_{n}", std::process::id());
        let mut members = Vec::new();
        for (i, peer_ports) in peer_ports.into_iter().enumerate() {
            let name = format!("{table}_m{i}");
            let dir = mount.join(&name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create cgroup {}: {e}", dir.display()))?;
            let procs = CString::new(dir.join("cgroup.procs").to_string_lossy().into_owned())
                .expect("no NUL in a path");
            members.push(Net {
                nft_path: rel.join(&name).to_string_lossy().into_owned(),
                dir,
                procs,
                peer_ports,
            });
        }
        let all: Vec<u16> = members.iter().flat_map(|m| m.peer_ports.clone()).collect();
        let mut script = format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n"
        );
        for (i, m) in members.iter().enumerate() {
            script.push_str(&format!(
                "  socket cgroupv2 level 1 \"{}\" meta l4proto {{ tcp, udp }} th dport {} ct state new ct mark set {}\n",
                m.nft_path,
                ports(&all),
                i + 1
            ));
        }
        script.push_str("  jump cut\n }\n chain cut {\n }\n}\n");
        let p = Partitions {
            table,
            members,
            isolated: Mutex::new(None),
        };
        nft(&script)?;
        Ok(p)
    }

    /// Makes `cmd` start in member `i`'s cgroup (the child moves itself there before exec).
    pub fn join(&self, i: usize, cmd: &mut Command) {
        let procs = self.members[i].procs.clone();
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
        // functions (open, write, close) on a path prepared before the fork; it allocates
        // nothing.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0\n".as_ptr().cast(), 2);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if r < 0 {
                    return Err(err);
                }
                Ok(())
            });
        }
    }

    /// Cuts member `i` off from every other member (replacing any earlier cut).
    pub fn isolate(&self, i: usize) {
        let m = &self.members[i];
        let own = ports(&m.peer_ports);
        let t = &self.table;
        nft(&format!(
            "flush chain inet {t} cut\n\
             add rule inet {t} cut ct mark {} drop\n\
             add rule inet {t} cut meta l4proto {{ tcp, udp }} th dport {own} drop\n\
             add rule inet {t} cut meta l4proto {{ tcp, udp }} th sport {own} drop\n",
            i + 1
        ))
        .unwrap_or_else(|e| panic!("isolating member {i}: {e}"));
        *self.isolated.lock().unwrap() = Some(i);
    }

    /// Removes the cut: every link works again.
    pub fn heal(&self) {
        nft(&format!("flush chain inet {} cut\n", self.table))
            .unwrap_or_else(|e| panic!("healing the partition: {e}"));
        *self.isolated.lock().unwrap() = None;
    }

    /// The member cut off now, if any.
    pub fn isolated(&self) -> Option<usize> {
        *self.isolated.lock().unwrap()
    }
}

impl Drop for Partitions {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}\n", self.table));
        for m in &self.members {
            // Fails while a member still runs; the next `new` removes it then.
            let _ = std::fs::remove_dir(&m.dir);
        }
    }
}
