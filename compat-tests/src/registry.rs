//! The scenario registry and the unsupported checks.

use std::time::Duration;

use kv_core::{Capabilities, Error, LockOptions, PutOptions, Store, Txn};

use crate::{
    atomic, basic, close, discovery, election, errors, events, fencing, list, lock, ttl, txn,
    values, watch,
};
use crate::{within, BoxFuture, Ctx, Outcome};

/// A scenario body: `async fn(store, ctx) -> Result<(), Failure>`, boxed.
pub type ScenarioFn = for<'a> fn(&'a dyn Store, &'a Ctx) -> BoxFuture<'a, Outcome>;

/// A capability a scenario may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// `watch`.
    Watch,
    /// `watch_tree`.
    WatchTree,
    /// `new_lock`.
    Lock,
    /// `PutOptions::ttl`.
    Ttl,
    /// `txn`.
    Txn,
}

impl Cap {
    /// True when `caps` has this capability.
    pub fn supported(self, caps: &Capabilities) -> bool {
        match self {
            Cap::Watch => caps.watch,
            Cap::WatchTree => caps.watch_tree,
            Cap::Lock => caps.lock,
            Cap::Ttl => caps.ttl,
            Cap::Txn => caps.txn,
        }
    }
}

/// One conformance scenario.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// Trial name (`topic::what`).
    pub name: &'static str,
    /// Capabilities the scenario needs; when one is missing, [`check_unsupported`] runs instead.
    pub needs: &'static [Cap],
    /// The scenario body.
    pub run: ScenarioFn,
}

impl Scenario {
    /// The first needed capability `caps` lacks, if any.
    pub fn missing(&self, caps: &Capabilities) -> Option<Cap> {
        self.needs.iter().copied().find(|c| !c.supported(caps))
    }
}

macro_rules! scenario {
    ($name:literal, [$($cap:ident),*], $f:path) => {
        Scenario {
            name: $name,
            needs: &[$(Cap::$cap),*],
            run: |s, c| Box::pin($f(s, c)),
        }
    };
}

/// Every scenario, in a stable order.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(
            "basic::put_get_delete_exists",
            [],
            basic::put_get_delete_exists
        ),
        scenario!("basic::key_normalization", [], basic::key_normalization),
        scenario!("basic::missing_key", [], basic::missing_key),
        scenario!("basic::parent_is_not_a_key", [], basic::parent_is_not_a_key),
        scenario!(
            "basic::delete_keeps_children",
            [],
            basic::delete_keeps_children
        ),
        scenario!("basic::versions_increase", [], basic::versions_increase),
        scenario!(
            "basic::versions_never_reused",
            [],
            basic::versions_never_reused
        ),
        scenario!("basic::namespace_isolation", [], basic::namespace_isolation),
        scenario!("values::empty_value", [], values::empty_value),
        scenario!("values::binary_value", [], values::binary_value),
        scenario!("values::unicode_keys", [], values::unicode_keys),
        scenario!("values::max_value_size", [], values::max_value_size),
        scenario!("list::subtree_in_key_order", [], list::subtree_in_key_order),
        scenario!("list::empty_subtree", [], list::empty_subtree),
        scenario!("list::own_prefix_exact", [], list::own_prefix_exact),
        scenario!("list::delete_tree_subtree", [], list::delete_tree_subtree),
        scenario!("list::delete_tree_empty", [], list::delete_tree_empty),
        scenario!("atomic::create_only", [], atomic::create_only),
        scenario!("atomic::create_nested", [], atomic::create_nested),
        scenario!("atomic::compare_and_swap", [], atomic::compare_and_swap),
        scenario!("atomic::cas_on_deleted_key", [], atomic::cas_on_deleted_key),
        scenario!(
            "atomic::previous_for_other_key",
            [],
            atomic::previous_for_other_key
        ),
        scenario!("atomic::atomic_delete", [], atomic::atomic_delete),
        scenario!("watch::key_updates", [Watch], watch::key_updates),
        scenario!("watch::missing_key", [Watch], watch::missing_key),
        scenario!(
            "watch::ignores_other_keys",
            [Watch],
            watch::ignores_other_keys
        ),
        scenario!("watch::burst", [Watch], watch::burst),
        scenario!("watch::across_handles", [Watch], watch::across_handles),
        scenario!("watch::tree_snapshots", [WatchTree], watch::tree_snapshots),
        scenario!(
            "events::order_and_deletes",
            [WatchTree],
            events::order_and_deletes
        ),
        scenario!("events::no_gaps", [WatchTree], events::no_gaps),
        scenario!(
            "events::resume_from_cursor",
            [WatchTree],
            events::resume_from_cursor
        ),
        scenario!(
            "events::ttl_expiry_is_a_delete",
            [WatchTree, Ttl],
            events::ttl_expiry_is_a_delete
        ),
        scenario!("watch::tree_empty", [WatchTree], watch::tree_empty),
        scenario!("watch::slow_reader", [Watch], watch::slow_reader),
        scenario!("watch::drop_streams", [Watch], watch::drop_streams),
        scenario!(
            "watch::drop_tree_streams",
            [WatchTree],
            watch::drop_tree_streams
        ),
        scenario!("lock::lock_unlock_relock", [Lock], lock::lock_unlock_relock),
        scenario!(
            "lock::blocks_then_hands_over",
            [Lock],
            lock::blocks_then_hands_over
        ),
        scenario!("lock::not_reentrant", [Lock], lock::not_reentrant),
        scenario!("lock::abandoned_attempt", [Lock], lock::abandoned_attempt),
        scenario!("lock::ttl_expiry", [Lock], lock::ttl_expiry),
        scenario!("lock::lost_on_delete", [Lock], lock::lost_on_delete),
        scenario!("lock::contention", [Lock], lock::contention),
        scenario!(
            "lock::replaces_plain_value",
            [Lock],
            lock::replaces_plain_value
        ),
        scenario!("ttl::expires", [Ttl], ttl::expires),
        scenario!("ttl::below_min_ttl", [Ttl], ttl::below_min_ttl),
        scenario!(
            "ttl::expiry_seen_by_watch",
            [Ttl, Watch],
            ttl::expiry_seen_by_watch
        ),
        scenario!(
            "ttl::rewrite_makes_permanent",
            [Ttl],
            ttl::rewrite_makes_permanent
        ),
        scenario!("ttl::writer_closed", [Ttl], ttl::writer_closed),
        scenario!("ttl::atomic_put", [Ttl], ttl::atomic_put),
        scenario!("ttl::txn_put", [Ttl, Txn], ttl::txn_put),
        scenario!("txn::applies_all", [Txn], txn::applies_all),
        scenario!("txn::compare_failures", [Txn], txn::compare_failures),
        scenario!("txn::invalid", [Txn], txn::invalid),
        scenario!("txn::size_limit", [Txn], txn::size_limit),
        scenario!("errors::invalid_keys", [], errors::invalid_keys),
        scenario!("errors::invalid_prefixes", [], errors::invalid_prefixes),
        scenario!(
            "errors::invalid_keys_watch",
            [Watch],
            errors::invalid_keys_watch
        ),
        scenario!(
            "errors::invalid_prefixes_watch_tree",
            [WatchTree],
            errors::invalid_prefixes_watch_tree
        ),
        scenario!(
            "errors::invalid_keys_lock",
            [Lock],
            errors::invalid_keys_lock
        ),
        scenario!("errors::invalid_keys_txn", [Txn], errors::invalid_keys_txn),
        scenario!(
            "close::calls_fail_after_close",
            [],
            close::calls_fail_after_close
        ),
        scenario!("close::ends_watches", [Watch], close::ends_watches),
        scenario!("close::releases_locks", [Lock], close::releases_locks),
        scenario!("fencing::token_increases", [Lock], fencing::token_increases),
        scenario!(
            "fencing::guarded_write",
            [Lock, Txn],
            fencing::guarded_write
        ),
        scenario!(
            "fencing::paused_holder",
            [Lock, Txn],
            fencing::paused_holder
        ),
        scenario!(
            "election::one_leader_at_a_time",
            [Lock],
            election::one_leader_at_a_time
        ),
        scenario!(
            "election::failover_on_loss",
            [Lock],
            election::failover_on_loss
        ),
        scenario!(
            "election::observe_follows_leader",
            [Lock, Watch],
            election::observe_follows_leader
        ),
        scenario!(
            "discovery::register_update_deregister",
            [Ttl, WatchTree],
            discovery::register_update_deregister
        ),
        scenario!(
            "discovery::crashed_instance_expires",
            [Ttl, WatchTree],
            discovery::crashed_instance_expires
        ),
    ]
}

/// Asserts that the call behind `cap` returns [`Error::Unsupported`] (and stores nothing).
pub async fn check_unsupported(store: &dyn Store, ctx: &Ctx, cap: Cap) -> Outcome {
    let k = ctx.key("unsupported");
    match cap {
        Cap::Ttl => {
            let ttl = ctx.short_ttl();
            expect_err!(
                store.put(&k, b"v", PutOptions::with_ttl(ttl)).await,
                Error::Unsupported { .. },
                "put {k:?} with a TTL of {ttl:?} on a backend without TTL"
            );
            check!(
                !store.exists(&k).await?,
                "put with an unsupported TTL stored {k:?} anyway"
            );
            expect_err!(
                store
                    .atomic_put(&k, b"v", None, PutOptions::with_ttl(ttl))
                    .await,
                Error::Unsupported { .. },
                "atomic_put {k:?} with a TTL on a backend without TTL"
            );
            check!(
                !store.exists(&k).await?,
                "atomic_put with an unsupported TTL stored {k:?} anyway"
            );
        }
        Cap::Watch => {
            expect_err!(
                store.watch(&k).await.map(|_| "a watch stream"),
                Error::Unsupported { .. },
                "watch {k:?} on a backend without watch"
            );
        }
        Cap::WatchTree => {
            expect_err!(
                store
                    .watch_tree(ctx.prefix())
                    .await
                    .map(|_| "a tree watch stream"),
                Error::Unsupported { .. },
                "watch_tree {:?} on a backend without watch_tree",
                ctx.prefix()
            );
        }
        Cap::Lock => {
            let r = within(
                "new_lock on a backend without locks",
                Duration::from_secs(30),
                store.new_lock(&k, LockOptions::with_value("v")),
            )
            .await?;
            expect_err!(
                r,
                Error::Unsupported { .. },
                "new_lock {k:?} on a backend without locks"
            );
            check!(
                !store.exists(&k).await?,
                "unsupported new_lock stored {k:?}"
            );
        }
        Cap::Txn => {
            expect_err!(
                store.txn(Txn::new().put(k.clone(), b"v".to_vec())).await,
                Error::Unsupported { .. },
                "txn on a backend without transactions"
            );
            check!(!store.exists(&k).await?, "unsupported txn stored {k:?}");
        }
    }
    Ok(())
}
