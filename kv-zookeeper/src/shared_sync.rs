//! One read barrier (see [`crate::ReadBarrier`]) shared by the watch reads of a store that
//! start at the same moment (many watches opened together, every watch re-reading after a
//! reconnect).
//!
//! The first read to come opens a batch and yields once, so reads started meanwhile join it;
//! then it closes the batch and sends the barrier; each member sends its read only after that
//! barrier was sent. ZooKeeper answers a session's requests in order and holds a read until
//! the session's pending barrier is done, so each read reflects every write committed before
//! the barrier, which was sent after the read started: as with a barrier of its own.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::watch;
use zookeeper_client as zk;

use crate::inner::Conn;
use crate::node::Barrier;

#[derive(Clone)]
enum Phase {
    /// The batch is open: members may still join.
    Open,
    /// The barrier was sent: members send their reads.
    Sent,
    /// The barrier's answer.
    Done(Result<(), zk::Error>),
}

/// The open batch of a store (at most one, for one session).
#[derive(Default)]
pub(crate) struct SharedSync {
    open: Mutex<Option<(u64, watch::Receiver<Phase>)>>,
}

impl SharedSync {
    /// Runs `read` after a `barrier` (a `sync` of `path`, or a quorum no-op) sent after this
    /// call started, shared with the reads started at the same moment on the same session.
    pub async fn read_after<T, Fut>(
        &self,
        conn: &Conn,
        path: &str,
        barrier: Barrier,
        read: Fut,
    ) -> std::result::Result<T, zk::Error>
    where
        Fut: Future<Output = std::result::Result<T, zk::Error>>,
    {
        let joined = {
            let mut open = self.open.lock().unwrap();
            match open.as_ref() {
                // A live, still open batch of this session.
                Some((gen, rx))
                    if *gen == conn.gen
                        && rx.has_changed().is_ok()
                        && matches!(*rx.borrow(), Phase::Open) =>
                {
                    Ok(rx.clone())
                }
                _ => {
                    let (tx, rx) = watch::channel(Phase::Open);
                    *open = Some((conn.gen, rx));
                    Err(tx)
                }
            }
        };
        match joined {
            Err(tx) => {
                // Leader: let the reads started meanwhile join, close the batch, send the barrier.
                tokio::task::yield_now().await;
                {
                    let mut open = self.open.lock().unwrap();
                    if open
                        .as_ref()
                        .is_some_and(|(_, rx)| rx.same_channel(&tx.subscribe()))
                    {
                        *open = None;
                    }
                }
                let syncing = crate::node::send_barrier(&conn.client, path, barrier);
                tx.send_replace(Phase::Sent);
                let (s, r) = futures::join!(syncing, read);
                tx.send_replace(Phase::Done(s.clone()));
                s?;
                r
            }
            Ok(mut rx) => {
                // Member: send the read once the barrier is on its way; if the leader gave up
                // (its future dropped), with a barrier of its own.
                if rx.wait_for(|p| !matches!(p, Phase::Open)).await.is_err() {
                    return crate::node::after_barrier(&conn.client, path, barrier, || read).await;
                }
                let r = read.await;
                // If the leader gave up after sending (an `Err` here), its barrier still went
                // before this read on the session, and the read's own answer tells whether the
                // session carried both.
                if let Ok(p) = rx.wait_for(|p| matches!(p, Phase::Done(_))).await {
                    if let Phase::Done(Err(e)) = &*p {
                        return Err(e.clone());
                    }
                }
                r
            }
        }
    }
}
