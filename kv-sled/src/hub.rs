//! Fan-out of sled change events to watches and lock holders.
//!
//! One sled subscriber per database is drained by a dedicated thread that never blocks on a
//! consumer: it publishes each change's raw `(key, record bytes)` to the database's
//! [`Fanout`](kv_core::raw::Fanout), which queues it in the unbounded inbox of every
//! subscription of that key or of a prefix of it. So an unread watch stream cannot fill sled's
//! 1024-slot subscriber queue and stall writers, and dispatching costs a hash lookup per
//! `/`-prefix of the key however many watches are open.

use std::sync::Arc;

/// A changed key and its new record bytes (physical removals are not forwarded).
pub(crate) type Change = (sled::IVec, sled::IVec);

/// The interests of one database's watches and lock holders.
pub(crate) type Hub = kv_core::raw::Fanout<Change>;

/// A registered interest; unregisters on drop. `recv` yields `None` once the database closed
/// (after every change queued before).
pub(crate) type Subscription = kv_core::raw::Subscription<Change>;

/// Drains `subscriber` on its own thread until the tree goes away (its subscriber channel then
/// disconnects), then closes `hub`. The blocking iterator is used on purpose: sled 0.34's
/// `next_timeout` reports a write that lost its compare-and-swap (a dropped reservation) as a
/// disconnect.
pub(crate) fn spawn_dispatcher(hub: Arc<Hub>, subscriber: sled::Subscriber) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("kv-sled-watch".into())
        .spawn(move || {
            for event in subscriber {
                if let sled::Event::Insert { key, value } = event {
                    hub.publish(&key.clone(), (key, value));
                }
            }
            hub.close();
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests;
