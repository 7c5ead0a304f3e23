//! `TCP_NODELAY` on the sockets of kv's ZooKeeper sessions.
//!
//! zookeeper-client opens its TCP connections itself and leaves Nagle's algorithm on, with no
//! setting to turn it off. A read barrier and its read are two requests, often written to the
//! socket one after the other; with Nagle on, the second waits until the server acknowledges
//! the first, which it usually does only with the first's answer, so a linearizable get costs
//! two round trips instead of one (measured: 2,700–2,900 sequential linearizable gets/s with
//! Nagle, 3,500–4,800 without, same server; `benches/README.md`). Whether a given connection
//! coalesces the pair also varies run to run, which made the bench's ratios swing from 0.66 to
//! 1.52.
//!
//! So, on Linux, after each session is opened and after each reconnection, kv sets
//! `TCP_NODELAY` on this process's TCP sockets whose peer is one of the configured servers
//! (found through `/proc/self/fd`; the option changes only when segments leave, never what
//! they carry). Other ZooKeeper clients of the same process connected to the same servers get
//! it too, which only makes their small requests leave sooner. Elsewhere nothing is done.

use std::net::{SocketAddr, ToSocketAddrs};

/// The addresses `hosts` (`host:port` each) resolve to; names that do not resolve are left out.
/// Blocking (name resolution): call it off the async workers.
pub(crate) fn resolve(hosts: &[String]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = hosts
        .iter()
        .filter_map(|h| h.to_socket_addrs().ok())
        .flatten()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Sets `TCP_NODELAY` on every TCP socket of this process connected to one of `peers`; the
/// number of sockets set. Blocking (reads `/proc/self/fd`): call it off the async workers.
/// Public only for kv's benches (the raw client's socket gets the same option); not part of
/// the stable API.
#[cfg(target_os = "linux")]
pub fn set_nodelay_to(peers: &[SocketAddr]) -> std::io::Result<usize> {
    let mut set = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // `getpeername` fails on anything but a connected socket. The descriptor may be closed
        // (and its number reused) meanwhile: the calls below only query and set socket
        // options, so the worst case is `TCP_NODELAY` on another socket connected to the same
        // server, or an error that is skipped.
        if peer(fd).is_some_and(|p| peers.contains(&p)) && nodelay(fd) {
            set += 1;
        }
    }
    Ok(set)
}

/// Not Linux: nothing is done (public only for kv's benches).
#[cfg(not(target_os = "linux"))]
pub fn set_nodelay_to(_peers: &[SocketAddr]) -> std::io::Result<usize> {
    Ok(0)
}

/// The peer of socket `fd`, if it is a connected IPv4/IPv6 socket.
#[cfg(target_os = "linux")]
fn peer(fd: i32) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    // SAFETY: `getpeername` writes at most `len` bytes into the zeroed storage, which is
    // large enough for any address; it reads nothing else of ours.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc = unsafe { libc::getpeername(fd, std::ptr::addr_of_mut!(storage).cast(), &mut len) };
    if rc != 0 {
        return None;
    }
    match storage.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`.
            let a: libc::sockaddr_in = unsafe { *std::ptr::addr_of!(storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a `sockaddr_in6`.
            let a: libc::sockaddr_in6 = unsafe { *std::ptr::addr_of!(storage).cast() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sets `TCP_NODELAY` on `fd`; whether it took.
#[cfg(target_os = "linux")]
fn nodelay(fd: i32) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live `c_int` of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Sets `TCP_NODELAY` on the sockets to `hosts` (resolved now) on a blocking thread, waiting
/// at most `bound` (a slow name lookup goes on in the background), and logs the outcome.
pub(crate) async fn apply(hosts: std::sync::Arc<Vec<String>>, bound: std::time::Duration) {
    if cfg!(not(target_os = "linux")) {
        return; // no name lookup for nothing
    }
    let work = tokio::task::spawn_blocking(move || set_nodelay_to(&resolve(&hosts)));
    match tokio::time::timeout(bound, work).await {
        Ok(Ok(Ok(n))) => tracing::debug!(backend = crate::BACKEND, sockets = n, "TCP_NODELAY set"),
        Ok(Ok(Err(e))) => {
            tracing::debug!(backend = crate::BACKEND, error = %e, "TCP_NODELAY not set")
        }
        Ok(Err(_)) | Err(_) => {
            tracing::debug!(backend = crate::BACKEND, "TCP_NODELAY not set in time")
        }
    }
}
