//! Watches: a subscription to the store's change batches, fed to kv-core's watch engine.

use std::sync::{Arc, Weak};

use kv_core::raw::{Feed, Namespace, Update};
use kv_core::{async_trait, Error, KvPair, Result};
use tokio::sync::mpsc;

use crate::state::{Scope, Shared, Sub};
use crate::store::MemoryDriver;

type Batch = (Vec<kv_core::raw::Event>, u64);

/// The changes of one watch's scope. Weak: a watch does not keep a dropped store alive (it
/// then ends with `Err(Closed)`).
pub(crate) struct MemFeed {
    shared: Weak<Shared>,
    ns: Namespace,
    scope: Scope,
    rx: Option<mpsc::UnboundedReceiver<Batch>>,
}

impl MemFeed {
    pub fn new(d: &MemoryDriver, scope: Scope) -> Self {
        MemFeed {
            shared: Arc::downgrade(&d.shared),
            ns: d.ns.clone(),
            scope,
            rx: None,
        }
    }
}

#[async_trait]
impl Feed for MemFeed {
    async fn read(&mut self) -> Result<(Vec<KvPair>, u64)> {
        let shared = self.shared.upgrade().ok_or(Error::Closed)?;
        let mut st = shared.lock();
        // Subscribing under the same lock as the read: no change falls between them.
        let (tx, rx) = mpsc::unbounded_channel();
        self.rx = Some(rx);
        st.subs.push(Sub {
            ns: self.ns.clone(),
            scope: self.scope.clone(),
            tx,
        });
        let pairs = match &self.scope {
            Scope::Key(k) => st.pair(&self.ns, k).into_iter().collect(),
            Scope::Tree(start) => st.list(&self.ns, start),
        };
        Ok((pairs, st.rev))
    }

    async fn next(&mut self, _cursor: u64) -> Result<Update> {
        let rx = self.rx.as_mut().ok_or(Error::Closed)?;
        let Some((mut events, mut cursor)) = rx.recv().await else {
            return Err(Error::Closed); // the store is gone
        };
        while let Ok((more, c)) = rx.try_recv() {
            events.extend(more);
            cursor = c;
        }
        Ok(Update::Events(events, cursor))
    }
}
