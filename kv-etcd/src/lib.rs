#![doc = include_str!("docs.md")]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod client;
mod config;
mod connect;
mod error;
mod hub;
mod lease;
mod lock;
mod store;
mod txn;
mod watch;

use std::time::Duration;

use kv_core::raw::{self, Checked, DriverDescriptor, NamespaceIn};
use kv_core::Capabilities;

pub use config::{EtcdConfig, DEFAULT_PORT};
pub use connect::EtcdDriver;

/// A kv store on an etcd v3 cluster: [`EtcdDriver`] behind kv-core's checking layer.
/// `EtcdStore::connect(config)` and `EtcdStore::from_url(url)` open one.
pub type EtcdStore = Checked<EtcdDriver>;

/// URL scheme handled by this driver (`etcd://...`).
pub const URL_SCHEME: &str = "etcd";

/// Backend name used in errors.
pub const BACKEND: &str = "etcd";

/// This driver, as `kv::open` sees it.
pub const DRIVER: DriverDescriptor = DriverDescriptor {
    name: BACKEND,
    schemes: &[URL_SCHEME],
    default_port: Some(DEFAULT_PORT),
    namespace_in: NamespaceIn::Path,
    open: raw::open::<EtcdDriver>,
};

/// Largest value accepted, in bytes (below etcd's default 1.5 MiB request limit).
pub const MAX_VALUE_SIZE: usize = 1_500_000;

/// Most compares + operations in one transaction (etcd's default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// Shortest TTL etcd honours with its default election timeout.
pub const MIN_TTL: Duration = Duration::from_secs(2);

/// What etcd supports.
fn capabilities() -> Capabilities {
    Capabilities {
        watch: true,
        watch_tree: true,
        watch_every_change: true,
        lock: true,
        ttl: true,
        txn: true,
        max_value_size: MAX_VALUE_SIZE,
        max_txn_ops: MAX_TXN_OPS,
        min_ttl: MIN_TTL,
        max_ttl: None,
        lock_min_ttl: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor() {
        assert!(DRIVER.handles("etcd") && !DRIVER.handles("zk"));
        assert_eq!(DRIVER.default_port, Some(2379));
        assert_eq!(
            DRIVER.with_namespace("etcd://h:1?timeout=1s", "app"),
            "etcd://h:1/app?timeout=1s"
        );
    }
}
