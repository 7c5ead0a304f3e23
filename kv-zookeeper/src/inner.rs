//! The state a store shares with its background tasks, and the key ↔ znode path mapping.

use std::sync::{Arc, Weak};
use std::time::Duration;

use kv_core::raw::{HeldLocks, Lifecycle, Namespace};
use kv_core::{Error, Result};
use tokio::sync::watch;
use zookeeper_client::{Acls, Client, CreateMode, CreateOptions};

use crate::error::{self, Context};
use crate::hub::Hub;
use crate::known::KnownNodes;
use crate::node::Barrier;
use crate::shared_sync::SharedSync;
use crate::{codec, lock, ReadBarrier, ZkConfig, LOCKS_DIR};

/// The current ZooKeeper session of a store; `gen` grows with every new session.
#[derive(Clone)]
pub(crate) struct Conn {
    pub client: Arc<Client>,
    pub gen: u64,
}

pub(crate) struct Inner {
    pub cfg: ZkConfig,
    pub ns: Namespace,
    /// Namespace as a znode path prefix: `""` (server root) or `"/app"` (escaped).
    pub base: String,
    /// The servers, `host:port` joined with `,`.
    pub endpoints: String,
    /// The current session (`None` once closed), replaced after a session expiry.
    pub conn: watch::Sender<Option<Conn>>,
    pub life: Lifecycle,
    pub locks: HeldLocks<Arc<lock::Held>>,
    /// What this store knows of the znodes it wrote or read (see [`crate::known`]).
    pub known: KnownNodes,
    /// The shared watch of the current session, while a watch uses it (see [`crate::hub`]).
    pub hub: std::sync::Mutex<Weak<Hub>>,
    /// Held while a hub is being created.
    pub hub_creation: tokio::sync::Mutex<()>,
    /// The `sync` shared by watch reads started together (see [`crate::shared_sync`]).
    pub sync_share: SharedSync,
}

impl Inner {
    pub fn new(cfg: ZkConfig, ns: Namespace, endpoints: String, client: Client) -> Self {
        let base = if ns.is_empty() {
            String::new()
        } else {
            format!("/{}", codec::escape_path(ns.as_str(), false))
        };
        Inner {
            cfg,
            ns,
            base,
            endpoints,
            conn: watch::channel(Some(Conn {
                client: Arc::new(client),
                gen: 0,
            }))
            .0,
            life: Lifecycle::new(),
            locks: HeldLocks::new(),
            known: KnownNodes::default(),
            hub: std::sync::Mutex::new(Weak::new()),
            hub_creation: tokio::sync::Mutex::new(()),
            sync_share: SharedSync::default(),
        }
    }

    /// The current session; `Err(Closed)` once the store is closed.
    pub fn conn(&self) -> Result<Conn> {
        self.life.check()?;
        self.conn.borrow().clone().ok_or(Error::Closed)
    }

    fn context<'a>(&'a self, key: &'a str, ttl: bool) -> Context<'a> {
        Context {
            key,
            endpoints: &self.endpoints,
            timeout: self.cfg.timeout,
            ttl,
        }
    }

    /// Maps a client error about `key`.
    pub fn err(&self, e: zookeeper_client::Error, key: &str) -> Error {
        error::map(e, self.context(key, false))
    }

    /// Maps a client error of a write that may have created a TTL znode.
    pub fn ttl_error(&self, e: zookeeper_client::Error, key: &str, ttl: Option<Duration>) -> Error {
        error::map(e, self.context(key, ttl.is_some()))
    }

    pub fn acls(&self) -> Acls<'static> {
        if self.cfg.digest.is_some() {
            Acls::creator_all()
        } else {
            Acls::anyone_all()
        }
    }

    pub fn create_opts(&self, ttl: Option<Duration>) -> CreateOptions<'static> {
        let o = CreateMode::Persistent.with_acls(self.acls());
        match ttl {
            Some(t) => o.with_ttl(t),
            None => o,
        }
    }

    /// The barrier before a user read: the configured one, none with `consistency=stale`.
    pub fn read_barrier(&self) -> Barrier {
        if self.cfg.consistency.is_stale() {
            Barrier::None
        } else {
            self.check_barrier()
        }
    }

    /// The barrier before a read that decides a write (compare-and-swap, transactions): the
    /// configured one in both consistency modes.
    pub fn check_barrier(&self) -> Barrier {
        match self.cfg.read_barrier {
            ReadBarrier::Quorum => Barrier::Quorum,
            ReadBarrier::Sync => Barrier::Sync,
        }
    }

    /// Znode path of a normalized key.
    pub fn path(&self, key: &str) -> String {
        let mut path = String::with_capacity(self.base.len() + 1 + key.len());
        path.push_str(&self.base);
        path.push('/');
        codec::escape_path_into(&mut path, key, false);
        path
    }

    /// Znode path of a normalized prefix (`""` = the namespace root).
    pub fn prefix_path(&self, prefix: &str) -> String {
        match (prefix.is_empty(), self.base.is_empty()) {
            (false, _) => self.path(prefix),
            (true, true) => "/".to_string(),
            (true, false) => self.base.clone(),
        }
    }

    /// The directory of a key's lock contenders.
    pub fn lock_dir(&self, key: &str) -> String {
        format!(
            "{}/{LOCKS_DIR}/{}",
            self.base,
            codec::escape_path(key, true)
        )
    }

    /// The key of a znode path, `None` outside the namespace or for names that are not
    /// normalized keys.
    pub fn key_of(&self, path: &str) -> Option<String> {
        let stored = codec::unescape_path(path.strip_prefix('/')?);
        self.ns.user_key(&stored)
    }

    /// Names at the namespace root that are never keys.
    pub fn is_reserved_root_child(&self, name: &str) -> bool {
        name == LOCKS_DIR || (self.base.is_empty() && name == "zookeeper")
    }
}
