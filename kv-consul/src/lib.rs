#![doc = include_str!("docs.md")]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod api;
mod config;
mod connect;
mod error;
mod group;
mod http;
mod lanes;
mod lock;
mod pool;
mod store;
mod txn;
mod watch;
mod write;

use std::time::Duration;

use kv_core::raw::{Checked, DriverDescriptor, NamespaceIn};

pub use config::ConsulConfig;
pub use pool::{DEFAULT_WATCH_POOL, MAX_WATCH_POOL};
pub use store::ConsulDriver;

/// A [`Store`](kv_core::Store) on Consul: [`ConsulDriver`] inside kv-core's checking layer.
/// Clones are cheap handles on the same client and state (closing one closes all); driver
/// methods (`store.namespace()`) are reached through `Deref`.
pub type ConsulStore = Checked<ConsulDriver>;

/// URL scheme of this driver: `consul://host:8500,host2:8500/namespace?options`.
pub const URL_SCHEME: &str = "consul";

/// Backend name in errors and [`kv_core::Store::backend`].
pub const BACKEND: &str = "consul";

/// Default agent port when a host has none.
pub const DEFAULT_PORT: u16 = 8500;

/// What `kv::open` needs to open `consul://` URLs.
pub const DRIVER: DriverDescriptor = DriverDescriptor {
    name: BACKEND,
    schemes: &[URL_SCHEME],
    default_port: Some(DEFAULT_PORT),
    namespace_in: NamespaceIn::Path,
    open: kv_core::raw::open::<ConsulDriver>,
};

/// Largest value accepted: 380 KiB. Consul's own KV limit is 512 KiB, but writes go through
/// `/v1/txn` (to learn the new version atomically), whose whole JSON body is limited to 512 KiB
/// (`txn_max_req_len`) with values in base64 (4/3 larger); 380 KiB leaves room for the key and
/// the JSON around it.
pub const MAX_VALUE_SIZE: usize = 389_120;

/// Most compares + operations in one transaction (Consul 1.8.7 to 1.13 accept 64).
pub const MAX_TXN_OPS: usize = 64;

/// Shortest key TTL honoured precisely (see the crate docs: twice Consul's 10 s minimum
/// session TTL).
pub const MIN_TTL: Duration = Duration::from_secs(20);

/// Longest key and lock TTL (twice Consul's 24 h maximum session TTL).
pub const MAX_TTL: Duration = Duration::from_secs(48 * 3600);

/// Shortest lock TTL (Consul's minimum session TTL).
pub const MIN_LOCK_TTL: Duration = Duration::from_secs(10);
