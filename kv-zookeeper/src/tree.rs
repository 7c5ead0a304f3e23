//! Subtree walks: `list` and `delete_tree`.

use futures::future::join_all;
use kv_core::{Error, KvPair, Result};
use zookeeper_client as zk;
use zookeeper_client::Client;

use crate::codec::{self, Decoded};
use crate::Inner;

fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Children of `path` that may hold keys (reserved names at the namespace root skipped).
async fn children(
    inner: &Inner,
    client: &Client,
    path: &str,
    root: &str,
) -> std::result::Result<Vec<String>, zk::Error> {
    let names = match client.get_children(path).await {
        Ok((names, _)) => names,
        Err(zk::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let at_ns_root = path == root && root == inner.prefix_path("");
    Ok(names
        .into_iter()
        .filter(|n| !(at_ns_root && inner.is_reserved_root_child(n)))
        .map(|n| child_path(path, &n))
        .collect())
}

/// Every live key below `prefix` in key order, and the earliest TTL expiry (ms) among them.
pub async fn list(
    inner: &Inner,
    client: &Client,
    prefix: &str,
) -> std::result::Result<(Vec<KvPair>, Option<i64>), zk::Error> {
    let root = inner.prefix_path(prefix);
    let mut pairs = Vec::new();
    let mut earliest: Option<i64> = None;
    let mut level = children(inner, client, &root, &root).await?;
    let now = codec::now_ms();
    while !level.is_empty() {
        let reads = join_all(level.iter().map(|p| client.get_data(p))).await;
        let mut parents = Vec::new();
        for (path, r) in level.iter().zip(reads) {
            let (data, stat) = match r {
                Ok(x) => x,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(e),
            };
            if stat.num_children > 0 {
                parents.push(path.clone());
            }
            let exp = codec::expiry_ms(&data, &stat);
            match codec::decode(data, &stat, now) {
                Decoded::Value(v) => {
                    if let Some(key) = inner.key_of(path) {
                        if let Some(e) = exp {
                            earliest = Some(earliest.map_or(e, |x| x.min(e)));
                        }
                        pairs.push(KvPair::new(key, v, stat.mzxid as u64));
                    }
                }
                Decoded::Expired => inner.reap(client, path, &stat),
                Decoded::NoValue => {}
            }
        }
        let kids = join_all(parents.iter().map(|p| children(inner, client, p, &root))).await;
        let mut next = Vec::new();
        for k in kids {
            next.extend(k?);
        }
        level = next;
    }
    pairs.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((pairs, earliest))
}

/// Deletes every znode below `prefix` (the prefix's own znode is kept).
pub async fn delete_tree(inner: &Inner, prefix: &str) -> Result<()> {
    let root = inner.prefix_path(prefix);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let client = inner.conn()?.client;
        // Collect the subtree level by level.
        let mut levels: Vec<Vec<String>> = Vec::new();
        let mut level = children(inner, &client, &root, &root)
            .await
            .map_err(|e| inner.err(e, prefix))?;
        while !level.is_empty() {
            let kids = join_all(level.iter().map(|p| children(inner, &client, p, &root))).await;
            let mut next = Vec::new();
            for k in kids {
                next.extend(k.map_err(|e| inner.err(e, prefix))?);
            }
            levels.push(std::mem::replace(&mut level, next));
        }
        let mut retry = false;
        for level in levels.iter().rev() {
            let results = join_all(level.iter().map(|p| client.delete(p, None))).await;
            for (p, r) in level.iter().zip(results) {
                match r {
                    Ok(()) | Err(zk::Error::NoNode) => {}
                    Err(zk::Error::NotEmpty) => retry = true,
                    Err(e) => {
                        let key = inner.key_of(p).unwrap_or_default();
                        return Err(inner.err(e, &key));
                    }
                }
            }
        }
        if !retry {
            inner.known.forget_below(&root);
            return Ok(());
        }
        if attempt >= 50 {
            return Err(Error::retryable_backend(
                crate::BACKEND,
                format!("delete_tree {prefix:?}: keys kept being added below it"),
                zk::Error::NotEmpty,
            ));
        }
    }
}
