//! Service discovery on any [`Store`]: register instances that keep themselves alive, list
//! them, and watch the set change.
//!
//! Modelled on Curator's x-discovery `ServiceDiscovery` and moby's `pkg/discovery/kv`, built
//! only on the public [`Store`] API. An instance is the key `{service}/{instance_id}` whose
//! value is the payload (bytes: an address, JSON, protobuf, ...), written with a TTL.
//!
//! - [`register`] writes the instance and returns a [`Registration`] whose background task
//!   rewrites it every `ttl / 3` (each write sets the TTL anew, so there is no gap while the
//!   store is reachable; a failed refresh is retried with back-off, and if the key expired or
//!   was deleted meanwhile the next refresh re-creates it). [`Registration::update`] changes
//!   the payload; [`Registration::deregister`] or dropping it removes the instance. A crashed
//!   process stops refreshing and its instance expires about `ttl` later (backend precision:
//!   see [`Capabilities::min_ttl`](crate::Capabilities::min_ttl); Consul's sessions need
//!   at least 20 s).
//! - [`instances`] reads the current set, [`watch_instances`] streams it: first the current
//!   set, then each different set (refreshes that change nothing are not reported).
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn kv_core::Store>) -> kv_core::Result<()> {
//! use std::time::Duration;
//! use futures::StreamExt;
//! use kv_core::discovery;
//!
//! let reg = discovery::register(store.clone(), "api", "node-1", "10.0.0.1:8080", Duration::from_secs(10)).await?;
//! for i in discovery::instances(&*store, "api").await? {
//!     println!("{} at {}", i.id, i.payload_str());
//! }
//! let mut changes = discovery::watch_instances(store.clone(), "api");
//! if let Some(Ok(set)) = changes.next().await {
//!     println!("{} instances", set.len());
//! }
//! reg.update("10.0.0.1:9090").await?;
//! reg.deregister().await?;
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::election::resilient;
use crate::error::{Error, Result};
use crate::key::normalize_key;
use crate::pair::{KvPair, PutOptions};
use crate::retry::Backoff;
use crate::store::Store;

/// One registered instance of a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance {
    /// The instance id (unique within the service).
    pub id: String,
    /// The payload it registered.
    pub payload: Vec<u8>,
}

impl Instance {
    /// The payload as text (lossy).
    pub fn payload_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.payload)
    }
}

/// A stream of instance sets (see [`watch_instances`]).
pub type InstanceStream = Pin<Box<dyn Stream<Item = Result<Vec<Instance>>> + Send>>;

enum Cmd {
    Update(Vec<u8>, oneshot::Sender<Result<()>>),
    Deregister(oneshot::Sender<Result<()>>),
}

/// A live registration, returned by [`register`]. Dropping it deregisters in the background
/// (needs a running tokio runtime); [`deregister`](Registration::deregister) does so and
/// reports the outcome.
pub struct Registration {
    key: String,
    service: String,
    id: String,
    cmd: mpsc::Sender<Cmd>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .finish()
    }
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.contains('/') {
        return Err(Error::InvalidKey {
            key: id.to_string(),
            reason: "an instance id must be one non-empty key segment (no '/')".into(),
        });
    }
    Ok(())
}

/// Registers `instance_id` of `service` with `payload`, kept alive with a TTL of `ttl`
/// (at least the backend's [`Capabilities::min_ttl`](crate::Capabilities::min_ttl), or
/// [`Error::Unsupported`]). The instance is visible when this returns.
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn kv_core::Store>) -> kv_core::Result<()> {
/// let ttl = store.capabilities().min_ttl.max(std::time::Duration::from_secs(5));
/// let reg = kv_core::discovery::register(store, "api", "node-1", "10.0.0.1:8080", ttl).await?;
/// assert_eq!(reg.instance_id(), "node-1");
/// # Ok(()) }
/// ```
pub async fn register(
    store: Arc<dyn Store>,
    service: &str,
    instance_id: &str,
    payload: impl Into<Vec<u8>>,
    ttl: Duration,
) -> Result<Registration> {
    let service = normalize_key(service)?;
    check_id(instance_id)?;
    let key = normalize_key(&format!("{service}/{instance_id}"))?;
    let payload = payload.into();
    store.capabilities().check_ttl(Some(ttl), store.backend())?;
    store.put(&key, &payload, PutOptions::with_ttl(ttl)).await?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(keep_alive(store, key.clone(), payload, ttl, rx));
    Ok(Registration {
        key,
        service,
        id: instance_id.to_string(),
        cmd: tx,
    })
}

impl Registration {
    /// The instance's key (`{service}/{instance_id}`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The service name (normalized).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The instance id.
    pub fn instance_id(&self) -> &str {
        &self.id
    }

    /// Replaces the payload (written at once; later refreshes keep it).
    pub async fn update(&self, payload: impl Into<Vec<u8>>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Update(payload.into(), tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Stops the keep-alive and removes the instance.
    pub async fn deregister(self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Deregister(tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

async fn remove(store: &dyn Store, key: &str) -> Result<()> {
    match store.delete(key).await {
        Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The keep-alive task: the only writer of the instance key, so an update, a refresh and the
/// final delete never race each other.
async fn keep_alive(
    store: Arc<dyn Store>,
    key: String,
    mut payload: Vec<u8>,
    ttl: Duration,
    mut rx: mpsc::Receiver<Cmd>,
) {
    let period = ttl / 3;
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        (period / 2).max(Duration::from_millis(100)),
    );
    let mut next = Instant::now() + period;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Cmd::Update(p, reply)) => {
                    payload = p;
                    let r = store.put(&key, &payload, PutOptions::with_ttl(ttl)).await.map(|_| ());
                    if r.is_ok() {
                        next = Instant::now() + period;
                    }
                    let _ = reply.send(r);
                }
                Some(Cmd::Deregister(reply)) => {
                    let _ = reply.send(remove(&*store, &key).await);
                    return;
                }
                None => {
                    let _ = remove(&*store, &key).await;
                    return;
                }
            },
            _ = tokio::time::sleep_until(next) => {
                match store.put(&key, &payload, PutOptions::with_ttl(ttl)).await {
                    Ok(_) => {
                        backoff.reset();
                        next = Instant::now() + period;
                    }
                    Err(Error::Closed) => return,
                    Err(_) => next = Instant::now() + backoff.next_delay(),
                }
            }
        }
    }
}

fn instance_of(service: &str, p: KvPair) -> Option<Instance> {
    let id = p.key.strip_prefix(service)?.strip_prefix('/')?;
    (!id.is_empty() && !id.contains('/')).then(|| Instance {
        id: id.to_string(),
        payload: p.value,
    })
}

fn instances_of(service: &str, pairs: Vec<KvPair>) -> Vec<Instance> {
    let mut v: Vec<Instance> = pairs
        .into_iter()
        .filter_map(|p| instance_of(service, p))
        .collect();
    v.sort();
    v
}

/// The registered instances of `service`, sorted by id (keys deeper than
/// `{service}/{id}` are ignored).
///
/// ```no_run
/// # async fn demo(store: &dyn kv_core::Store) -> kv_core::Result<()> {
/// let ids: Vec<String> = kv_core::discovery::instances(store, "api").await?.into_iter().map(|i| i.id).collect();
/// # Ok(()) }
/// ```
pub async fn instances(store: &dyn Store, service: &str) -> Result<Vec<Instance>> {
    let service = normalize_key(service)?;
    Ok(instances_of(&service, store.list(&service).await?))
}

/// Watches the instances of `service`: the first item is the current set, then each
/// different set (sorted by id; refreshes that change nothing are not reported). Watch
/// errors arrive as `Err` items and the stream keeps going; it ends only after a final
/// `Err(Error::Closed)` (store closed). An invalid service name gives one `Err` item and ends.
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn kv_core::Store>) {
/// use futures::StreamExt;
/// let mut sets = kv_core::discovery::watch_instances(store, "api");
/// while let Some(Ok(set)) = sets.next().await {
///     println!("{:?}", set.iter().map(|i| &i.id).collect::<Vec<_>>());
/// }
/// # }
/// ```
pub fn watch_instances(store: Arc<dyn Store>, service: &str) -> InstanceStream {
    let service = match normalize_key(service) {
        Ok(s) => s,
        Err(e) => return Box::pin(futures::stream::iter([Err(e)])),
    };
    let prefix = service.clone();
    let inner = resilient(move || {
        let store = store.clone();
        let prefix = prefix.clone();
        async move { store.watch_tree(&prefix).await }
    });
    let mut last: Option<Vec<Instance>> = None;
    Box::pin(inner.filter_map(move |item| {
        let out = match item {
            Ok(pairs) => {
                let set = instances_of(&service, pairs);
                if last.as_ref() == Some(&set) {
                    None
                } else {
                    last = Some(set.clone());
                    Some(Ok(set))
                }
            }
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_direct_children_are_instances() {
        let pairs = vec![
            KvPair::new("svc/b", "2", 1),
            KvPair::new("svc/a", "1", 2),
            KvPair::new("svc/a/deeper", "x", 3),
            KvPair::new("svcx/c", "x", 4),
        ];
        let set = instances_of("svc", pairs);
        let ids: Vec<_> = set.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(check_id("a/b").is_err());
        assert!(check_id("").is_err());
    }
}
