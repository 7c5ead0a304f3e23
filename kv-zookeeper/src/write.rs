//! Writes of one key: `put`, `atomic_put`, `delete` and `atomic_delete`.
//!
//! A put sends one request when the store knows the znode (see [`crate::known`]) or the key
//! is new:
//!
//! - known znode of the wanted type: `setData`; the `czxid` it returns confirms the znode is
//!   the one known (else it is replaced, below);
//! - known znode of another type (TTL ↔ permanent, another TTL): one `multi` that deletes it
//!   and creates the new one;
//! - unknown path (never written or read by this store, or deleted by it): `create`, the common
//!   case of a first write. Only when that finds the znode there (`NodeExists`) does the put
//!   cost a second round trip: a pipelined read of the old znode (its header gives its type)
//!   and `setData`, then a replacing `multi` only if the type was wrong. `NoNode` (missing
//!   parents) creates the parents once and retries. The store keeps a small score of what such
//!   first puts found: when unknown paths mostly held a znode lately (a process rewriting the
//!   keys of an earlier run), it sends the pipelined read and `setData` first instead (one
//!   round trip, two requests; `create` after it when the key was new), and goes back to
//!   `create` first when new keys dominate again. Reads (`get`, `exists`) record what they
//!   read, so a get then put of a key costs one request each.
//!
//! Versions stay the znode's `mzxid`: ZooKeeper gives every write, creations included, a new
//! zxid, so a key's version grows across a delete and re-create whichever way the put went.

use std::time::Duration;

use kv_core::{Error, KvPair, Result};
use zookeeper_client as zk;
use zookeeper_client::{Client, Stat};

use crate::error::racing;
use crate::known::Known;
use crate::node::{fix_stat, read_node_after, Node};
use crate::{codec, Inner};

/// The next request a put sends.
#[derive(Clone, Copy, Debug)]
enum Next {
    /// `setData` on the known znode of the wanted type.
    Set(Known),
    /// `create` (the path holds no znode as far as the store knows).
    Create,
    /// Pipelined read of the old znode and `setData` (a znode of unknown type is there).
    Probe,
    /// Delete (at this data version, or any) and re-create in one `multi`.
    Replace(Option<i32>),
}

fn ms(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|t| t.as_millis() as u64)
}

impl Inner {
    /// Replaces a znode (at data `version`, or any with `None`) by a new one of the right
    /// type, atomically, in one request. The `multi` ends with a `setData` of the same data on
    /// the new znode: servers before 3.7.2/3.8.2 return no stat for a create inside a `multi`
    /// (ZOOKEEPER-4026), the `setData` result carries it (same zxid: one transaction).
    pub async fn replace_node(
        &self,
        client: &Client,
        path: &str,
        version: Option<i32>,
        data: &[u8],
        opts: &zk::CreateOptions<'_>,
    ) -> std::result::Result<Stat, zk::MultiWriteError> {
        let mut w = client.new_multi_writer();
        w.add_delete(path, version)?;
        w.add_create(path, data, opts)?;
        w.add_set_data(path, data, Some(0))?;
        let res = w.commit().await?;
        match res.into_iter().nth(2) {
            Some(zk::MultiWriteResult::SetData { stat }) => Ok(stat),
            _ => Err(zk::MultiWriteError::from(zk::Error::UnexpectedError(
                "multi setData gave no result".into(),
            ))),
        }
    }

    /// [`Self::replace_node`] for a key value, recording the new znode's type.
    pub async fn replace_key(
        &self,
        client: &Client,
        path: &str,
        version: i32,
        data: &[u8],
        ttl: Option<Duration>,
    ) -> std::result::Result<Stat, zk::Error> {
        let st = self
            .replace_node(client, path, Some(version), data, &self.create_opts(ttl))
            .await
            .map_err(zk::Error::from)?;
        self.known.remember(path, &st, ms(ttl));
        Ok(st)
    }

    /// Creates a key's znode (parents as needed). `Ok(None)`: it exists already.
    pub(crate) async fn create_key(
        &self,
        client: &Client,
        key: &str,
        path: &str,
        data: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Stat>> {
        let opts = self.create_opts(ttl);
        for _ in 0..2 {
            match client.create(path, data, &opts).await {
                Ok((stat, _)) => {
                    // Boxed: rare (servers before 3.7.2/3.8.2), and inline it would grow
                    // every put's future (see `put`).
                    let stat = Box::pin(fix_stat(client, path, stat))
                        .await
                        .map_err(|e| self.err(e, key))?;
                    self.known.remember(path, &stat, ms(ttl));
                    return Ok(Some(stat));
                }
                Err(zk::Error::NodeExists) => return Ok(None),
                Err(zk::Error::NoNode) => Box::pin(self.make_parents(client, path))
                    .await
                    .map_err(|e| self.err(e, key))?,
                Err(e) => return Err(self.ttl_error(e, key, ttl)),
            }
        }
        Ok(None)
    }

    /// `put`: one request when the store knows the znode or the key is new (see the
    /// [module docs](self)).
    pub async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<KvPair> {
        let path = self.path(key);
        let data = codec::encode(value, ttl);
        let want = ms(ttl);
        let client = self.conn()?.client;
        let done = |stat: Stat| Ok(KvPair::new(key, value, stat.mzxid as u64));
        // A changed znode found by a replace: probe a permanent put again, replace any for TTL.
        let changed = if ttl.is_some() {
            Next::Replace(None)
        } else {
            Next::Probe
        };
        let known = self.known.get(&path);
        // Unknown path: learn from the first answer whether such paths tend to exist.
        let mut learn = known.is_none();
        let mut next = match known {
            Some(k) if k.ttl == want => Next::Set(k),
            Some(_) => Next::Replace(None),
            None if self.known.unknown_paths_exist() => changed,
            None => Next::Create,
        };
        // Set once an unconditional `setData` of this put succeeded: the put has then taken
        // effect, and a later step (fixing the znode's type) may not write the value again
        // (a second effect after someone else's write would not be linearizable).
        let mut written: Option<Stat> = None;
        // Every step but `setData` is boxed: inline, the largest made each put's future 1,320
        // bytes, over the 1,032 that glibc serves from its per-thread cache; boxed, 768.
        for _ in 0..20 {
            let mut found = |existed: bool| {
                if std::mem::take(&mut learn) {
                    self.known.first_put_found(existed);
                }
            };
            next = match next {
                Next::Set(k) => match client.set_data(&path, &data, None).await {
                    Ok(stat) if stat.czxid == k.czxid && stat.ephemeral_owner == 0 => {
                        self.known.remember(&path, &stat, want);
                        return done(stat);
                    }
                    // Keys below: the znode stays, the header decides.
                    Ok(stat) if stat.num_children > 0 => return done(stat),
                    // Re-created by someone else (type unknown) or a lock's ephemeral value.
                    Ok(stat) => {
                        written = Some(stat);
                        Next::Replace(Some(stat.version))
                    }
                    Err(zk::Error::NoNode) => {
                        self.known.forget(&path);
                        Next::Create
                    }
                    Err(e) => return Err(self.err(e, key)),
                },
                Next::Create => {
                    match Box::pin(self.create_key(&client, key, &path, &data, ttl)).await? {
                        Some(stat) => {
                            found(false);
                            return done(stat);
                        }
                        None => {
                            found(true);
                            changed
                        }
                    }
                }
                Next::Probe => {
                    // The server answers a session's requests in order: one round trip.
                    let old = client.get_data(&path);
                    let new = client.set_data(&path, &data, None);
                    let (old, new) = Box::pin(async { futures::join!(old, new) }).await;
                    found(new.is_ok());
                    match new {
                        Ok(stat) => {
                            // Same czxid: the same znode, so the same type as when it was read,
                            // even if another write landed between the two requests (replacing
                            // then would write this value twice: a version no reader expects).
                            let old_ttl = match &old {
                                Ok((old_data, st))
                                    if st.czxid == stat.czxid && st.version < stat.version =>
                                {
                                    Some((codec::header_ttl(old_data), *st))
                                }
                                _ => None,
                            };
                            match old_ttl {
                                Some((t, st)) if !codec::needs_replace(t, &st, None) => {
                                    self.known.remember_read(&path, &stat, t);
                                    return done(stat);
                                }
                                _ if stat.num_children > 0 => return done(stat),
                                // A TTL or ephemeral znode (or changed between the requests).
                                _ => {
                                    written = Some(stat);
                                    Next::Replace(Some(stat.version))
                                }
                            }
                        }
                        Err(zk::Error::NoNode) => Next::Create,
                        Err(e) => return Err(self.err(e, key)),
                    }
                }
                Next::Replace(version) => {
                    let opts = self.create_opts(ttl);
                    let replaced =
                        Box::pin(self.replace_node(&client, &path, version, &data, &opts)).await;
                    // The value was written already and someone changed the znode since: that
                    // later write supersedes this put, which is done.
                    if let (Some(st), Err(zk::MultiWriteError::OperationFailed { .. })) =
                        (written, &replaced)
                    {
                        self.known.forget(&path);
                        return done(st);
                    }
                    match replaced {
                        Ok(stat) => {
                            found(true);
                            self.known.remember(&path, &stat, want);
                            return done(stat);
                        }
                        Err(zk::MultiWriteError::OperationFailed {
                            index: 0,
                            source: zk::Error::NoNode,
                        }) => {
                            found(false);
                            Next::Create
                        }
                        Err(zk::MultiWriteError::OperationFailed {
                            index: 0,
                            source: zk::Error::NotEmpty,
                        }) => {
                            // Keys below: keep the znode, the header carries the TTL.
                            match Box::pin(client.set_data(&path, &data, None)).await {
                                Ok(stat) => return done(stat),
                                Err(zk::Error::NoNode) => Next::Create,
                                Err(e) => return Err(self.err(e, key)),
                            }
                        }
                        Err(zk::MultiWriteError::OperationFailed {
                            source:
                                zk::Error::NodeExists | zk::Error::NoNode | zk::Error::BadVersion,
                            ..
                        }) => changed,
                        Err(e) => return Err(self.ttl_error(e.into(), key, ttl)),
                    }
                }
            };
        }
        Err(racing(format!(
            "put {key:?} kept racing with concurrent changes"
        )))
    }

    /// `atomic_put`: reads the znode, compares, then writes at the data version read.
    pub async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<KvPair> {
        let path = self.path(key);
        let data = codec::encode(value, ttl);
        let client = self.conn()?.client;
        for _ in 0..20 {
            // Always after the barrier: a stale stat would report a false `KeyModified`.
            let node = read_node_after(&client, &path, self.check_barrier())
                .await
                .map_err(|e| self.err(e, key))?;
            let (stat, old_ttl) = match (previous, node) {
                (None, Node::Missing) => {
                    match self.create_key(&client, key, &path, &data, ttl).await? {
                        Some(stat) => return Ok(KvPair::new(key, value, stat.mzxid as u64)),
                        None => continue,
                    }
                }
                (None, Node::Value(..)) => {
                    return Err(Error::KeyExists {
                        key: key.to_string(),
                    })
                }
                (None, Node::NoValue(stat)) => (stat, None),
                (_, Node::Expired(stat)) => {
                    match client.delete(&path, Some(stat.version)).await {
                        Err(zk::Error::NotEmpty) => {
                            let _ = client
                                .set_data(&path, codec::TOMBSTONE, Some(stat.version))
                                .await;
                        }
                        Err(e @ (zk::Error::ConnectionLoss | zk::Error::NoAuth)) => {
                            return Err(self.err(e, key))
                        }
                        _ => {}
                    }
                    continue;
                }
                (Some(_), Node::Missing | Node::NoValue(_)) => return Err(Error::not_found(key)),
                (Some(prev), Node::Value(_, stat, old_ttl)) => {
                    if stat.mzxid as u64 != prev {
                        return Err(Error::KeyModified {
                            key: key.to_string(),
                            expected: prev,
                            actual: stat.mzxid as u64,
                        });
                    }
                    (stat, old_ttl)
                }
            };
            let r = if !codec::needs_replace(old_ttl, &stat, ttl) {
                client
                    .set_data(&path, &data, Some(stat.version))
                    .await
                    .inspect(|s| self.known.remember_read(&path, s, ms(ttl)))
            } else {
                self.replace_key(&client, &path, stat.version, &data, ttl)
                    .await
            };
            match r {
                Ok(s) => return Ok(KvPair::new(key, value, s.mzxid as u64)),
                // Changed since the read: start over (and report what is there then).
                Err(
                    zk::Error::BadVersion
                    | zk::Error::NoNode
                    | zk::Error::NodeExists
                    | zk::Error::NotEmpty,
                ) => continue,
                Err(e) => return Err(self.ttl_error(e, key, ttl)),
            }
        }
        Err(racing(format!(
            "atomic_put {key:?} kept racing with concurrent changes"
        )))
    }

    /// Deletes a key; with `previous`, only at that version. A plain delete of a permanent
    /// key this store knows is one request: `delete` at the data version last seen (any
    /// other answer than success or `NoNode` falls back to reading the znode first).
    /// `Ok(false)`: the key was absent.
    pub async fn delete_key(&self, key: &str, previous: Option<u64>) -> Result<bool> {
        let path = self.path(key);
        let client = self.conn()?.client;
        if previous.is_none() {
            // TTL keys are read first: an expired one is absent.
            if let Some(k) = self.known.get(&path).filter(|k| k.ttl.is_none()) {
                match client.delete(&path, Some(k.version)).await {
                    Ok(()) => {
                        self.known.forget(&path);
                        return Ok(true);
                    }
                    Err(zk::Error::NoNode) => {
                        self.known.forget(&path);
                        return Ok(false);
                    }
                    Err(zk::Error::BadVersion | zk::Error::NotEmpty) => self.known.forget(&path),
                    Err(e) => return Err(self.err(e, key)),
                }
            }
        }
        for _ in 0..20 {
            // Always after the barrier: a stale stat would report a false `KeyModified`.
            let node = read_node_after(&client, &path, self.check_barrier())
                .await
                .map_err(|e| self.err(e, key))?;
            let stat = match node {
                Node::Missing | Node::NoValue(_) => return Ok(false),
                Node::Expired(stat) => {
                    self.reap(&client, &path, &stat);
                    return Ok(false);
                }
                Node::Value(_, stat, _) => stat,
            };
            if let Some(p) = previous {
                if stat.mzxid as u64 != p {
                    return Err(Error::KeyModified {
                        key: key.to_string(),
                        expected: p,
                        actual: stat.mzxid as u64,
                    });
                }
            }
            let r = if stat.num_children > 0 {
                client
                    .set_data(&path, codec::TOMBSTONE, Some(stat.version))
                    .await
                    .map(|_| ())
            } else {
                client.delete(&path, Some(stat.version)).await
            };
            match r {
                Ok(()) => {
                    self.known.forget(&path);
                    return Ok(true);
                }
                Err(zk::Error::BadVersion | zk::Error::NoNode | zk::Error::NotEmpty) => continue,
                Err(e) => return Err(self.err(e, key)),
            }
        }
        Err(racing(format!(
            "delete {key:?} kept racing with concurrent changes"
        )))
    }
}
