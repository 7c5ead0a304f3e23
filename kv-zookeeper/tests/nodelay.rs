//! kv's ZooKeeper sessions send with Nagle's algorithm off (`TCP_NODELAY`), after connect and
//! after a reconnection; read from the sockets themselves (`getsockopt`). Linux only (kv sets
//! the option only there).
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use kv_core::{PutOptions, Store};
use kv_testkit::wait_until;
use kv_testkit::zookeeper::ZkServer;
use kv_zookeeper::{ZkConfig, ZkStore};

const LONG: Duration = Duration::from_secs(60);

/// This process's TCP sockets connected to `peer`: descriptor → `TCP_NODELAY` on.
fn sockets_to(peer: SocketAddr) -> BTreeMap<i32, bool> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if !std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            continue;
        }
        // SAFETY: zeroed storage of the full size; getpeername writes at most `len` bytes.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = unsafe { libc::getpeername(fd, std::ptr::addr_of_mut!(sa).cast(), &mut len) };
        if rc != 0 || sa.sin_family as i32 != libc::AF_INET {
            continue;
        }
        let ip = std::net::Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
        if SocketAddr::from((ip, u16::from_be(sa.sin_port))) != peer {
            continue;
        }
        let mut on: libc::c_int = 0;
        let mut olen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `on` is a live c_int of the given size.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                std::ptr::addr_of_mut!(on).cast(),
                &mut olen,
            )
        };
        if rc == 0 {
            out.insert(fd, on != 0);
        }
    }
    out
}

/// Waits until this process has sockets to `peer` and all have `TCP_NODELAY` on.
async fn wait_all_nodelay(peer: SocketAddr, what: &str) -> BTreeMap<i32, bool> {
    wait_until(what, LONG, || async move {
        let s = sockets_to(peer);
        (!s.is_empty() && s.values().all(|on| *on)).then_some(s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_send_without_nagle_after_connect_and_reconnect() {
    let Some(mut server) = ZkServer::start().await else {
        return;
    };
    let ep = server.endpoint();
    let peer: SocketAddr = ep.parse().unwrap();
    // Control: the raw client leaves Nagle on, and the check sees it.
    let raw = zookeeper_client::Client::connect(&ep).await.unwrap();
    let before = sockets_to(peer);
    assert_eq!(before.len(), 1, "one socket, the raw client's: {before:?}");
    assert!(
        before.values().all(|on| !on),
        "zookeeper-client leaves TCP_NODELAY off: {before:?}"
    );
    drop(raw);
    wait_until("the raw client's socket to close", LONG, || async move {
        sockets_to(peer).is_empty().then_some(())
    })
    .await;

    let cfg = ZkConfig::new([&ep])
        .with_namespace("/nodelay")
        .with_session_timeout(Duration::from_secs(30));
    let store = ZkStore::connect(cfg).await.unwrap();
    let first = wait_all_nodelay(peer, "TCP_NODELAY on the new session's socket").await;
    store.put("k", b"v", PutOptions::default()).await.unwrap();

    // The server restarts: the session reconnects on a new socket, which gets it too.
    server.restart().await;
    wait_until("a put after the restart", LONG, || {
        let store = &store;
        async move {
            store
                .put("k", b"after", PutOptions::default())
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    let after = wait_all_nodelay(peer, "TCP_NODELAY on the socket after reconnecting").await;
    eprintln!("sockets before the restart {first:?}, after {after:?}");
    assert_eq!(store.get("k").await.unwrap().value, b"after");
    store.close().await.unwrap();
}
