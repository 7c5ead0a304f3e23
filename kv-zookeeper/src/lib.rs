#![doc = include_str!("docs.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod codec;
pub mod config;
mod connect;
mod error;
mod hub;
mod inner;
mod known;
mod lock;
mod node;
mod nodelay;
mod shared_sync;
mod store;
mod tree;
mod txn;
mod watch;
mod write;

use std::time::Duration;

use kv_core::raw::{open, Checked, DriverDescriptor, NamespaceIn};

pub use config::{ReadBarrier, ZkConfig, DEFAULT_PORT, DEFAULT_SESSION_TIMEOUT};
pub use kv_core::raw::TlsFiles;
#[doc(hidden)]
pub use nodelay::set_nodelay_to;
pub use store::ZkDriver;

pub(crate) use inner::Inner;

/// A ZooKeeper-backed [`Store`](kv_core::Store): [`ZkDriver`] behind kv-core's checking layer.
/// Open it with [`ZkStore::connect`] or [`ZkStore::from_url`].
pub type ZkStore = Checked<ZkDriver>;

/// URL scheme of this driver: `zk://host:2181/namespace` (`zookeeper://` works too).
pub const URL_SCHEME: &str = "zk";
/// Backend name used in errors.
pub const BACKEND: &str = "zookeeper";
/// Largest value accepted (ZooKeeper's `jute.maxbuffer` of 1 MiB minus room for path and header).
pub const MAX_VALUE_SIZE: usize = 1_000_000;
/// Most compares + operations in one transaction.
pub const MAX_TXN_OPS: usize = 128;
/// Shortest TTL honoured, for keys and lock leases.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Reserved first key segment holding lock contenders.
pub const LOCKS_DIR: &str = ".kv-locks";

/// This driver, as `kv::open` sees it.
pub const DRIVER: DriverDescriptor = DriverDescriptor {
    name: BACKEND,
    schemes: &["zk", "zookeeper"],
    default_port: Some(DEFAULT_PORT),
    namespace_in: NamespaceIn::Path,
    open: open::<ZkDriver>,
};
