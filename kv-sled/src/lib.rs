#![doc = include_str!("docs.md")]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod connect;
mod db;
mod error;
mod expiry;
mod flusher;
mod hub;
mod lock;
mod parse;
mod record;
mod store;
mod txn;
mod watch;

use std::time::Duration;

use kv_core::raw::{Checked, DriverDescriptor, NamespaceIn};
use kv_core::Capabilities;

pub use config::SledConfig;
pub use store::SledDriver;

/// A [`kv_core::Store`] on a local sled database: the [`SledDriver`] behind kv-core's checking
/// layer. `SledStore::connect(config)` and `SledStore::from_url(url)` open one; driver methods
/// (`store.path()`, `store.namespace()`) are reachable through `Deref`. Share it with `Arc`.
pub type SledStore = Checked<SledDriver>;

/// The URL scheme of this driver.
pub const URL_SCHEME: &str = "sled";

/// This driver, as `kv::open` sees it (`sled:///path?namespace=app`).
pub const DRIVER: DriverDescriptor = DriverDescriptor {
    name: BACKEND,
    schemes: &[URL_SCHEME],
    default_port: None,
    namespace_in: NamespaceIn::Query,
    open: kv_core::raw::open::<SledDriver>,
};

pub(crate) const BACKEND: &str = "sled";

/// Largest value accepted (16 MiB).
pub const MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// Most compares + operations in one transaction.
pub const MAX_TXN_OPS: usize = 1024;

pub(crate) const CAPABILITIES: Capabilities = Capabilities {
    watch: true,
    watch_tree: true,
    watch_every_change: true,
    lock: true,
    ttl: true,
    txn: true,
    max_value_size: MAX_VALUE_SIZE,
    max_txn_ops: MAX_TXN_OPS,
    min_ttl: Duration::from_millis(1),
    max_ttl: None,
    lock_min_ttl: Duration::ZERO,
};
