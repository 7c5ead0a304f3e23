//! This process's TCP connections to a port, from `/proc/net/tcp` and `/proc/self/fd`.

use std::collections::HashSet;

/// Local ports of this process's established IPv4 connections to `127.0.0.1:port`.
pub fn connections_to(port: u16) -> HashSet<u16> {
    let mine: HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, rem, state, inode) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(9)?);
            let established = *state == "01" && *rem == remote && mine.contains(*inode);
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            established.then_some(local_port)
        })
        .collect()
}
