#![doc = include_str!("docs.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod config;
mod lock;
mod state;
mod store;
mod watch;

pub use config::MemoryConfig;
pub use store::MemoryDriver;

use kv_core::raw::{open, Checked, DriverDescriptor, NamespaceIn};

/// The URL scheme of this driver.
pub const URL_SCHEME: &str = "memory";

/// Largest value accepted (16 MiB).
pub const MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// Most compares + operations in one transaction.
pub const MAX_TXN_OPS: usize = 1024;

/// A memory store: [`MemoryDriver`] behind kv-core's checking layer (implements
/// [`kv_core::Store`]). `MemoryStore::from_url("memory://name")` and
/// `MemoryStore::connect(config)` open one; [`new_store`] is the shortest way to a private one.
pub type MemoryStore = Checked<MemoryDriver>;

/// This driver, as `kv::open` sees it (`memory://`, namespace in `?namespace=`).
pub const DRIVER: DriverDescriptor = DriverDescriptor {
    name: "memory",
    schemes: &[URL_SCHEME],
    default_port: None,
    namespace_in: NamespaceIn::Query,
    open: open::<MemoryDriver>,
};

/// A fresh, private, empty store (the same as `memory://`), without `await`.
pub fn new_store() -> MemoryStore {
    Checked::new(MemoryDriver::open(MemoryConfig::default()).expect("no namespace is valid"))
}
