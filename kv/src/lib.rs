//! # kv: one async API over cluster key/value stores
//!
//! `kv` gives a program one [`Store`] over etcd, ZooKeeper, Consul and an embedded sled
//! database, with the same semantics on each (written down in [`kv_core`]'s docs and checked
//! by the conformance suite against real servers): configuration keys, TTL keys, watches
//! that never end silently, locks that report their loss, and multi-key transactions.
//!
//! Open a store from a URL; each driver is a cargo feature (`sled` is on by default):
//!
//! | scheme | feature | example |
//! |---|---|---|
//! | `sled` | `sled` | `sled:///var/lib/app/kv`, `sled://./data` |
//! | `etcd` | `etcd` | `etcd://10.0.0.1:2379,10.0.0.2:2379/app` |
//! | `zk`, `zookeeper` | `zookeeper` | `zk://10.0.0.1:2181,10.0.0.2:2181/app` |
//! | `consul` | `consul` | `consul://10.0.0.1:8500,10.0.0.2:8500/app` |
//! | `memory` | `memory` | `memory://` (private), `memory://tests?namespace=app` (shared by name) |
//!
//! ```
//! # async fn demo() -> kv::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = kv::open(&format!("sled://{}", dir.path().display())).await?;
//! store.put("app/config/port", b"8080", kv::PutOptions::default()).await?;
//! let pair = store.get("/app/config/port/").await?; // same key: slashes are normalized
//! assert_eq!(pair.value, b"8080");
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

// The user API only: driver authors use `kv_core::raw` and the other `kv_core` modules.
pub use kv_core::key::MAX_KEY_LEN;
pub use kv_core::raw::DriverDescriptor;
pub use kv_core::retry::DEFAULT_TIMEOUT;
pub use kv_core::url::parse_duration;
pub use kv_core::{discovery, election};
pub use kv_core::{
    normalize_key, normalize_prefix, Capabilities, Compare, CompareFailure, Consistency, Cursor,
    Error, EventStream, KvPair, Lock, LockOptions, LostSignal, PutOptions, Result, Store,
    TreeWatchStream, Txn, TxnOp, TxnResult, WatchEvent, WatchStream,
};

#[cfg(feature = "consul")]
#[cfg_attr(docsrs, doc(cfg(feature = "consul")))]
pub use kv_consul as consul;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use kv_etcd as etcd;
#[cfg(feature = "memory")]
pub use kv_memory as memory;
#[cfg(feature = "sled")]
#[cfg_attr(docsrs, doc(cfg(feature = "sled")))]
pub use kv_sled as sled;
#[cfg(feature = "zookeeper")]
#[cfg_attr(docsrs, doc(cfg(feature = "zookeeper")))]
pub use kv_zookeeper as zookeeper;

/// Every URL scheme this crate knows, with the cargo feature that enables it.
pub const SCHEMES: &[(&str, &str)] = &[
    ("sled", "sled"),
    ("memory", "memory"),
    ("etcd", "etcd"),
    ("zk", "zookeeper"),
    ("zookeeper", "zookeeper"),
    ("consul", "consul"),
];

/// The drivers enabled in this build, in the order `open` tries their schemes.
pub const DRIVERS: &[DriverDescriptor] = &[
    #[cfg(feature = "sled")]
    kv_sled::DRIVER,
    #[cfg(feature = "memory")]
    kv_memory::DRIVER,
    #[cfg(feature = "etcd")]
    kv_etcd::DRIVER,
    #[cfg(feature = "zookeeper")]
    kv_zookeeper::DRIVER,
    #[cfg(feature = "consul")]
    kv_consul::DRIVER,
];

/// The driver that opens URLs with `scheme`, if it is enabled in this build.
pub fn driver_for(scheme: &str) -> Option<&'static DriverDescriptor> {
    DRIVERS.iter().find(|d| d.handles(scheme))
}

/// The URL schemes enabled in this build.
pub fn available_schemes() -> Vec<&'static str> {
    DRIVERS
        .iter()
        .flat_map(|d| d.schemes.iter().copied())
        .collect()
}

/// Opens a store from a URL, dispatching on its scheme to the enabled driver's descriptor.
///
/// An unknown scheme, or one whose feature is disabled, is [`Error::Config`] listing the
/// schemes this build supports. Each driver documents its own URL options.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let scheme = kv_core::url::scheme_of(url).ok_or_else(|| {
        Error::config(format!(
            "{:?} is not a store URL (expected scheme://...); available schemes: {}",
            kv_core::url::redact(url),
            available_schemes().join(", ")
        ))
    })?;
    match driver_for(&scheme) {
        Some(d) => (d.open)(url).await,
        None => Err(unavailable_scheme(&scheme, &available_schemes())),
    }
}

/// The error for a scheme this build cannot open, naming the feature to enable if known.
fn unavailable_scheme(scheme: &str, available: &[&str]) -> Error {
    let hint = match SCHEMES.iter().find(|(s, _)| *s == scheme) {
        Some((_, feature)) => format!(" (enable the `{feature}` feature of kv)"),
        None => String::new(),
    };
    Error::config(format!(
        "URL scheme {scheme:?} is not available in this build{hint}; available schemes: {}",
        if available.is_empty() {
            "none".to_string()
        } else {
            available.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_scheme_names_feature_and_lists_available() {
        let msg = unavailable_scheme("zk", &["sled"]).to_string();
        assert!(
            msg.contains("\"zk\"") && msg.contains("`zookeeper` feature"),
            "{msg}"
        );
        assert!(msg.ends_with("available schemes: sled"), "{msg}");
        let msg = unavailable_scheme("redis", &["sled", "etcd"]).to_string();
        assert!(!msg.contains("feature"), "{msg}");
        assert!(msg.ends_with("available schemes: sled, etcd"), "{msg}");
    }
}
