//! The initial reads of key watches, batched: reads asked for while a batch is in flight go
//! out together as one read-only transaction of up to [`MAX_TXN_OPS`] gets (one request and
//! one ReadIndex on the server instead of one each), all answered at the transaction's
//! revision. A batch that fails is read again key by key, so one key's error stays its own.

use std::sync::{Arc, Weak};

use etcd_client::{Txn, TxnOp, TxnOpResponse};
use kv_core::{Error, KvPair, Result};
use tokio::sync::{mpsc, oneshot};

use crate::client::{header_rev, version_of};
use crate::connect::Inner;
use crate::MAX_TXN_OPS;

type Read = (String, oneshot::Sender<Result<(Option<KvPair>, i64)>>);

/// The queue of a handle's batched reads; its task ends with the handle.
pub(crate) struct Reads {
    tx: mpsc::UnboundedSender<Read>,
}

impl Inner {
    /// Reads one key (as the store's read consistency says) and the revision of the read,
    /// batched with the concurrent reads of other watches. Bounded by the caller.
    pub(crate) async fn read_key_batched(
        self: &Arc<Self>,
        key: &str,
    ) -> Result<(Option<KvPair>, i64)> {
        if self.stale {
            // Serializable reads are served by the member asked: nothing to share.
            return self.read_key(key, true).await;
        }
        let reads = self.reads.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(Arc::downgrade(self), rx));
            Reads { tx }
        });
        let (tx, rx) = oneshot::channel();
        if reads.tx.send((key.to_string(), tx)).is_err() {
            return Err(Error::Closed);
        }
        rx.await.unwrap_or(Err(Error::Closed))
    }
}

async fn run(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Read>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_TXN_OPS {
            match rx.try_recv() {
                Ok(read) => batch.push(read),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if batch.len() > 1 {
            batch = match read_all(&inner, batch).await {
                Ok(()) => continue,
                Err(batch) => batch,
            };
        }
        futures::future::join_all(batch.into_iter().map(|(key, answer)| {
            let inner = &inner;
            async move {
                let _ = answer.send(inner.bounded("get", inner.read_key(&key, true)).await);
            }
        }))
        .await;
    }
}

/// Answers every read of `batch` from one transaction; gives the batch back if it failed.
async fn read_all(inner: &Inner, batch: Vec<Read>) -> std::result::Result<(), Vec<Read>> {
    let ops: Vec<TxnOp> = batch
        .iter()
        .map(|(key, _)| TxnOp::get(inner.full(key), None))
        .collect();
    let txn = Txn::new().and_then(ops);
    let Ok(resp) = inner
        .bounded("get", inner.kv_txn("get", "", None, txn))
        .await
    else {
        return Err(batch);
    };
    let rev = header_rev(resp.header());
    let gets = resp.op_responses();
    if gets.len() != batch.len() {
        return Err(batch);
    }
    for ((key, answer), get) in batch.into_iter().zip(gets) {
        let pair = match get {
            TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next().map(|kv| KvPair {
                key,
                version: version_of(kv.mod_revision()),
                value: kv.into_key_value().1,
            }),
            _ => None,
        };
        let _ = answer.send(Ok((pair, rev)));
    }
    Ok(())
}
