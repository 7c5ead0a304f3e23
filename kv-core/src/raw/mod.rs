//! # The driver SDK: what a backend author implements, apart from the user API
//!
//! Applications use [`Store`](crate::Store). A driver implements [`Driver`] instead and is
//! wrapped in [`Checked`], the one layer that applies every backend-independent rule of the
//! contract (closed check, key rules, reserved segments, `previous` pairs, value size, TTL
//! limits, transaction shape, the per-call timeout, tracing) in one order for every backend.
//! A rule changes here and every driver follows.
//!
//! The pieces a driver builds on, each written once:
//! - [`Lifecycle`]: open/closed state shared with background tasks.
//! - [`Feed`] + [`watch_key`]/[`watch_tree`]: the watch engine (loop, back-off, outage
//!   reporting, resume, re-read after lost history, filtering, dedup, end of stream).
//! - [`Fanout`]: items published by stored key, handed to the subscriptions of that key or
//!   a prefix of it (a driver's own change notifications fanned out to its watches).
//! - [`HeldLocks`]: the locks a store holds, released on close.
//! - [`CleanupGuard`] / [`spawn_cleanup`]: bounded background clean-up after a dropped call.
//! - [`Namespace`]: user key ↔ stored key.
//! - [`TlsFiles`]: the `ca`/`cert`/`key`/`domain`/`tls` options and their rules.
//! - [`Secret`]: passwords and tokens that never print.
//! - [`DriverDescriptor`]: name, URL schemes, default port and `open`, iterated by `kv::open`.
//! - [`crate::url`] (URL parsing, IPv6-safe host lists) and [`crate::retry`] (timeouts, back-off).
//!
//! A minimal driver is `kv-memory`: read it first.
//!
//! ```text
//! pub struct MyDriver { info: DriverInfo, life: Lifecycle, /* client */ }
//! #[async_trait]
//! impl Driver for MyDriver { /* put/get/... on checked, normalized keys */ }
//! pub type MyStore = Checked<MyDriver>;
//! pub const DRIVER: DriverDescriptor = DriverDescriptor {
//!     name: "my", schemes: &["my"], default_port: Some(1234),
//!     namespace_in: NamespaceIn::Path, open: open::<MyDriver>,
//! };
//! ```

mod checked;
mod cleanup;
mod descriptor;
mod driver;
mod fanout;
mod feed;
mod lifecycle;
mod locks;
mod namespace;
mod secret;
mod tls;

pub use checked::Checked;
pub use cleanup::{spawn_cleanup, CleanupFuture, CleanupGuard};
pub use descriptor::{open, DriverDescriptor, NamespaceIn, OpenFuture};
pub use driver::{Connect, Driver, DriverInfo};
pub use fanout::{Fanout, Subscription};
pub use feed::{watch_events, watch_key, watch_tree, Event, Feed, Update};
pub use lifecycle::Lifecycle;
pub use locks::HeldLocks;
pub use namespace::Namespace;
pub use secret::Secret;
pub use tls::{read_pem, TlsFiles, TLS_OPTIONS};

pub use crate::error::error_chain;
pub use crate::key::{check_previous, check_value_size, in_subtree, subtree_start};
pub use crate::lock::{lost_signal, LockRelease, LostNotifier};
pub use crate::watch::{
    key_watch, lossless_event_channel, tree_watch, KeyWatcher, TreeWatcher, WatchSink,
};
