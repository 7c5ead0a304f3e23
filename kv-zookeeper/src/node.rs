//! Read barriers, reads of single znodes, read retries, and small znode helpers.

use std::sync::Arc;
use std::time::Duration;

use kv_core::raw::spawn_cleanup;
use kv_core::Result;
use zookeeper_client as zk;
use zookeeper_client::{Client, CreateMode, Stat};

use crate::codec::{self, Decoded};
use crate::error::is_retryable_read;
use crate::Inner;

/// What a znode read found.
pub(crate) enum Node {
    Missing,
    NoValue(Stat),
    /// Value, stat, TTL (ms) of the header.
    Value(Vec<u8>, Stat, Option<u64>),
    Expired(Stat),
}

/// What a read waits for (see [`ReadBarrier`](crate::ReadBarrier)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Barrier {
    /// Nothing: the connected server's view.
    None,
    /// A `sync` of the path.
    Sync,
    /// A quorum-committed no-op: a `multi` of one `check` of `/` (any version).
    Quorum,
}

/// Sends the barrier's request now (both kinds send when called); the future is its answer.
pub(crate) fn send_barrier<'a>(
    client: &'a Client,
    path: &str,
    barrier: Barrier,
) -> futures::future::BoxFuture<'a, std::result::Result<(), zk::Error>> {
    use futures::FutureExt;
    match barrier {
        Barrier::None => futures::future::ready(Ok(())).boxed(),
        Barrier::Sync => client.sync(path).boxed(),
        Barrier::Quorum => {
            let mut w = client.new_multi_writer();
            if let Err(e) = w.add_check_version("/", -1) {
                return futures::future::ready(Err(e)).boxed();
            }
            let commit = w.commit();
            async move { commit.await.map(|_| ()).map_err(zk::Error::from) }.boxed()
        }
    }
}

/// Runs the read that `read` sends after `barrier`. `read` is called only once the barrier's
/// request has been handed to the session, so a read that sends when created (zookeeper-client
/// sends most requests when a method is called, not when its future is polled) cannot overtake
/// it. The two requests are pipelined (the read is sent without waiting for the barrier's
/// answer; zookeeper-client leaves `TCP_NODELAY` off, so the read can still wait for that
/// answer on the wire and the pair then costs two round trips: [`read_node_after`] sends the
/// read right after the barrier, so that both usually leave in one write).
/// ZooKeeper answers a session's requests in order, and a server holds a session's read until
/// the session's pending `sync` or write is done, so the read reflects every write committed
/// before the barrier. Only the quorum barrier is committed by a quorum: a `sync` is answered
/// by whoever believes it leads.
pub(crate) async fn after_barrier<T, Fut>(
    client: &Client,
    path: &str,
    barrier: Barrier,
    read: impl FnOnce() -> Fut,
) -> std::result::Result<T, zk::Error>
where
    Fut: std::future::Future<Output = std::result::Result<T, zk::Error>>,
{
    if barrier == Barrier::None {
        return read().await;
    }
    let sent = send_barrier(client, path, barrier);
    let read = read();
    let (s, r) = futures::join!(sent, read);
    s?;
    r
}

/// Reads one znode (the request goes out on the first poll).
pub(crate) async fn read_node(client: &Client, path: &str) -> std::result::Result<Node, zk::Error> {
    read_node_now(client, path).await
}

/// Reads one znode; the request goes out now, when called.
fn read_node_now(
    client: &Client,
    path: &str,
) -> impl std::future::Future<Output = std::result::Result<Node, zk::Error>> + Send {
    let reply = client.get_data(path);
    async move {
        match reply.await {
            Ok((data, stat)) => Ok({
                let ttl = codec::header_ttl(&data);
                match codec::decode(data, &stat, codec::now_ms()) {
                    Decoded::Value(v) => Node::Value(v, stat, ttl),
                    Decoded::NoValue => Node::NoValue(stat),
                    Decoded::Expired => Node::Expired(stat),
                }
            }),
            Err(zk::Error::NoNode) => Ok(Node::Missing),
            Err(e) => Err(e),
        }
    }
}

/// Reads one znode after `barrier` (see [`after_barrier`]).
pub(crate) async fn read_node_after(
    client: &Client,
    path: &str,
    barrier: Barrier,
) -> std::result::Result<Node, zk::Error> {
    after_barrier(client, path, barrier, || read_node_now(client, path)).await
}

/// The mzxid of a znode after a write whose stat may be invalid (ZOOKEEPER-4026).
pub(crate) async fn fix_stat(
    client: &Client,
    path: &str,
    stat: Stat,
) -> std::result::Result<Stat, zk::Error> {
    if !stat.is_invalid() {
        return Ok(stat);
    }
    client.check_stat(path).await?.ok_or(zk::Error::NoNode)
}

impl Inner {
    /// Deletes an expired key in the background (only if it was not written since), bounded
    /// by the store timeout.
    pub fn reap(&self, client: &Client, path: &str, stat: &Stat) {
        let client = client.clone();
        let path = path.to_string();
        let version = stat.version;
        spawn_cleanup("remove an expired key", self.cfg.timeout, async move {
            if let Err(zk::Error::NotEmpty) = client.delete(&path, Some(version)).await {
                let _ = client
                    .set_data(&path, codec::TOMBSTONE, Some(version))
                    .await;
            }
        });
    }

    /// Runs a read, retrying on connection loss (with the current session) until it works
    /// or the caller's timeout ends.
    pub async fn read_retry<T, F, Fut>(&self, key: &str, mut f: F) -> Result<T>
    where
        F: FnMut(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, zk::Error>>,
    {
        let mut backoff =
            kv_core::retry::Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        loop {
            let conn = self.conn()?;
            match f(conn.client).await {
                Ok(v) => return Ok(v),
                Err(e) if is_retryable_read(&e) => {
                    self.life.check()?;
                    backoff.wait().await
                }
                Err(e) => return Err(self.err(e, key)),
            }
        }
    }

    /// Reads a key: `Some((value, stat))` if it holds a live value.
    pub async fn get_key(&self, key: &str) -> Result<Option<(Vec<u8>, Stat)>> {
        let path = self.path(key);
        let node = self
            .read_retry(key, |c| {
                let path = path.clone();
                async move {
                    let n = read_node_after(&c, &path, self.read_barrier()).await?;
                    match &n {
                        Node::Expired(stat) => self.reap(&c, &path, stat),
                        Node::Value(_, stat, ttl) => self.known.remember_read(&path, stat, *ttl),
                        _ => {}
                    }
                    Ok(n)
                }
            })
            .await?;
        Ok(match node {
            Node::Value(v, s, _) => Some((v, s)),
            _ => None,
        })
    }

    /// Creates the parents of `path` (plain znodes without value).
    pub async fn make_parents(
        &self,
        client: &Client,
        path: &str,
    ) -> std::result::Result<(), zk::Error> {
        let Some(i) = path.rfind('/') else {
            return Ok(());
        };
        if i == 0 {
            return Ok(());
        }
        client
            .mkdir(&path[..i], &CreateMode::Persistent.with_acls(self.acls()))
            .await
    }
}
