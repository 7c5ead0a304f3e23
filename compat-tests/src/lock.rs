//! Locks: exclusion across handles, hand-over, abandonment, TTL, loss, contention.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::{Error, Lock, LockOptions, LostSignal, PutOptions, Store};

use crate::{
    eventually, keys_of, must_not_complete, within, Context, Ctx, Failure, Outcome, Task, DEADLINE,
    TTL_GRACE,
};

/// How long a blocked acquisition is watched to prove that it waits.
const BLOCKED_WINDOW: Duration = Duration::from_secs(2);

async fn acquire_with(
    store: &dyn Store,
    key: &str,
    options: LockOptions,
    what: &str,
) -> Outcome<Lock> {
    within(what, DEADLINE, store.new_lock(key, options))
        .await?
        .ok_or_fail(what)
}

/// Acquires `key` with the lock value `value` (no TTL), within [`DEADLINE`].
async fn acquire(store: &dyn Store, key: &str, value: &str, what: &str) -> Outcome<Lock> {
    acquire_with(store, key, LockOptions::with_value(value), what).await
}

/// A task waiting in `new_lock(key)` on `store` (aborted if dropped).
fn spawn_waiter(
    store: Arc<dyn Store>,
    key: &str,
    value: &'static str,
) -> Task<kv_core::Result<Lock>> {
    let key = key.to_string();
    Task::spawn(async move { store.new_lock(&key, LockOptions::with_value(value)).await })
}

/// Fails unless `key` holds `expected` (read through `store`).
async fn check_value(store: &dyn Store, key: &str, expected: &str, what: &str) -> Outcome {
    let got = crate::state_of(store, key).await?.map(|(v, _)| v);
    check_eq!(got, Some(expected.as_bytes().to_vec()), "{what}");
    Ok(())
}

/// Waits for `lost` to fire and checks that it names `key`.
pub(crate) async fn expect_lost(lost: &LostSignal, key: &str, what: &str) -> Outcome {
    let e = within(what, DEADLINE, lost.wait()).await?;
    check!(
        matches!(&e, Error::LockLost { key: k, .. } if k == key),
        "{what}: LostSignal::wait gave {e:?}, expected LockLost for {key:?}"
    );
    Ok(())
}

/// lock, the value is visible from another handle, unlock removes it, relock works.
pub async fn lock_unlock_relock(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let other = ctx.open_another().await?;
    let k = ctx.key("lock");
    let l = acquire(
        store,
        &format!("/{k}/"),
        "holder-1",
        "acquiring a free lock",
    )
    .await?;
    check_eq!(l.key(), k.as_str(), "Lock::key (normalized)");
    check_eq!(l.value(), b"holder-1", "Lock::value");
    check!(!l.is_lost(), "a fresh lock reports itself lost");
    check_value(
        &*other,
        &k,
        "holder-1",
        "the lock value read by get from another handle",
    )
    .await?;
    let listed = other.list(ctx.prefix()).await?;
    check!(
        listed.iter().any(|p| p.key == k && p.value == b"holder-1"),
        "list from another handle does not show the held lock {k:?} with its value: {:?}",
        keys_of(&listed)
    );
    l.unlock().await.ok_or_fail("unlock")?;
    check!(
        !other.exists(&k).await?,
        "the lock key still exists (seen from another handle) after unlock"
    );
    check!(
        !store.exists(&k).await?,
        "the lock key still exists after unlock"
    );
    let l2 = acquire(store, &k, "holder-2", "relocking on the same handle").await?;
    check_value(&*other, &k, "holder-2", "the value after relock").await?;
    l2.unlock().await.ok_or_fail("second unlock")?;
    let l3 = acquire(
        &*other,
        &k,
        "holder-3",
        "locking from the other handle after unlock",
    )
    .await?;
    check_value(store, &k, "holder-3", "the value set by the other handle").await?;
    l3.unlock().await.ok_or_fail("third unlock")?;
    check_eq!(
        keys_of(&store.list(ctx.prefix()).await?),
        Vec::<String>::new(),
        "keys left under the scenario prefix after every unlock"
    );
    Ok(())
}

/// A second handle waits while the lock is held; a waiter spawned earlier gets it after unlock.
pub async fn blocks_then_hands_over(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let h2 = ctx.open_another().await?;
    let h3 = ctx.open_another().await?;
    let k = ctx.key("lock");
    let held = acquire(store, &k, "first", "acquiring the free lock").await?;
    must_not_complete(
        "a second handle's new_lock while the lock is held",
        BLOCKED_WINDOW,
        h2.new_lock(&k, LockOptions::with_value("second")),
    )
    .await?;
    check_value(
        &*h2,
        &k,
        "first",
        "lock value after a blocked (abandoned) attempt",
    )
    .await?;
    let mut waiter = spawn_waiter(h3.clone(), &k, "third");
    must_not_complete(
        "a waiting acquirer while the lock is held",
        BLOCKED_WINDOW,
        &mut waiter,
    )
    .await?;
    check!(
        !held.is_lost(),
        "the holder's lock was lost while another handle waited"
    );
    held.unlock().await.ok_or_fail("unlock by the holder")?;
    let third = within(
        "the waiting acquirer to get the lock after unlock",
        DEADLINE,
        &mut waiter,
    )
    .await??
    .ok_or_fail("the waiter's new_lock")?;
    check_value(&*h2, &k, "third", "lock value after the hand-over").await?;
    check!(!third.is_lost(), "the new holder's lock is lost");
    third
        .unlock()
        .await
        .ok_or_fail("unlock by the new holder")?;
    check!(
        !store.exists(&k).await?,
        "lock key present after the last unlock"
    );
    Ok(())
}

/// A second new_lock on the same key waits, also from the same handle.
pub async fn not_reentrant(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("lock");
    let held = acquire(store, &k, "one", "acquiring the free lock").await?;
    must_not_complete(
        "a second new_lock on the same handle while held",
        BLOCKED_WINDOW,
        store.new_lock(&k, LockOptions::with_value("two")),
    )
    .await?;
    check_value(store, &k, "one", "lock value after the blocked attempt").await?;
    held.unlock().await.ok_or_fail("unlock")?;
    let again = acquire(
        store,
        &k,
        "three",
        "new_lock on the same handle after unlock",
    )
    .await?;
    again.unlock().await.ok_or_fail("unlock")?;
    Ok(())
}

/// An attempt dropped while waiting leaves nothing behind: a third handle acquires promptly.
pub async fn abandoned_attempt(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let h2 = ctx.open_another().await?;
    let h3 = ctx.open_another().await?;
    let k = ctx.key("lock");
    let held = acquire(store, &k, "holder", "acquiring the free lock").await?;
    for i in 0..3 {
        must_not_complete(
            &format!("abandoned attempt #{i}"),
            Duration::from_millis(700),
            h2.new_lock(&k, LockOptions::with_value("abandoned")),
        )
        .await?;
    }
    check_value(store, &k, "holder", "lock value after abandoned attempts").await?;
    held.unlock().await.ok_or_fail("unlock by the holder")?;
    let third = acquire(&*h3, &k, "third", "a third handle acquiring after the holder's unlock (an abandoned attempt must not hold it)").await?;
    check_value(store, &k, "third", "lock value held by the third handle").await?;
    check_eq!(
        keys_of(&store.list(ctx.prefix()).await?),
        vec![k.clone()],
        "keys under the lock's parent while the third handle holds it (no leftovers)"
    );
    third
        .unlock()
        .await
        .ok_or_fail("unlock by the third handle")?;
    eventually("no keys left under the lock's parent", DEADLINE, || async {
        let left = store.list(ctx.prefix()).await?;
        Ok(left.is_empty().then_some(()))
    })
    .await?;
    // And the abandoned handle itself can take the lock normally now.
    let again = acquire(&*h2, &k, "h2", "the abandoning handle acquiring later").await?;
    again.unlock().await.ok_or_fail("unlock")?;
    Ok(())
}

/// A lease lock (keep_alive = false) frees itself after its TTL; its LostSignal fires.
pub async fn ttl_expiry(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let h2 = ctx.open_another().await?;
    let k = ctx.key("lease");
    let ttl = ctx.short_ttl();
    let t0 = Instant::now();
    let holder = acquire_with(
        store,
        &k,
        LockOptions::with_value("lease").ttl(ttl).keep_alive(false),
        "acquiring a lease lock",
    )
    .await?;
    let lost = holder.lost_signal();
    let mut waiter = spawn_waiter(h2.clone(), &k, "next");
    let next = within(
        &format!("a waiter to acquire the lease lock after its {ttl:?} TTL"),
        ttl + TTL_GRACE,
        &mut waiter,
    )
    .await??
    .ok_or_fail("the waiter's new_lock")?;
    let elapsed = t0.elapsed();
    check!(
        elapsed >= ttl * 3 / 4,
        "the waiter acquired after {elapsed:?}, well before the holder's TTL of {ttl:?} passed"
    );
    expect_lost(&lost, &k, "the holder's LostSignal after its TTL").await?;
    check!(
        holder.is_lost(),
        "Lock::is_lost is false after its TTL passed"
    );
    check_value(store, &k, "next", "lock value after the hand-over").await?;
    expect_err!(
        holder.unlock().await,
        Error::LockLost { .. },
        "unlock of an expired lease lock"
    );
    check_value(
        &*h2,
        &k,
        "next",
        "the new holder's value after the old holder's unlock (it must not be removed)",
    )
    .await?;
    check!(!next.is_lost(), "the new holder's lock is lost");
    next.unlock().await.ok_or_fail("unlock by the new holder")?;
    Ok(())
}

/// Deleting (or overwriting) the lock key from another handle fires the holder's LostSignal.
pub async fn lost_on_delete(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let h2 = ctx.open_another().await?;
    let h3 = ctx.open_another().await?;
    let k = ctx.key("lock");
    let holder = acquire(store, &k, "holder", "acquiring the free lock").await?;
    let lost = holder.lost_signal();
    check!(!lost.is_lost(), "LostSignal fired before anything happened");
    h2.delete(&k)
        .await
        .ok_or_fail("delete of the lock key by another handle")?;
    expect_lost(
        &lost,
        &k,
        "the holder's LostSignal after its key was deleted",
    )
    .await?;
    check!(
        holder.is_lost(),
        "Lock::is_lost is false after the key was deleted"
    );
    check!(
        lost.is_lost(),
        "LostSignal::is_lost is false after it fired"
    );
    let third = acquire(
        &*h3,
        &k,
        "third",
        "another handle acquiring after the key was deleted",
    )
    .await?;
    expect_err!(
        holder.unlock().await,
        Error::LockLost { .. },
        "unlock of a lost lock"
    );
    check_value(
        &*h2,
        &k,
        "third",
        "the new holder's value after the lost holder's unlock",
    )
    .await?;
    check!(!third.is_lost(), "the new holder's lock is lost");

    // Overwritten by someone else: lost as well.
    let lost3 = third.lost_signal();
    h2.put(&k, b"intruder", PutOptions::default())
        .await
        .ok_or_fail("overwrite of the lock key")?;
    expect_lost(
        &lost3,
        &k,
        "the holder's LostSignal after its key was overwritten",
    )
    .await?;
    expect_err!(
        third.unlock().await,
        Error::LockLost { .. },
        "unlock of a lock whose key was overwritten"
    );
    Ok(())
}

/// 4 handles x 5 rounds of read-modify-write under the lock: exactly 20, never two holders.
pub async fn contention(_store: &dyn Store, ctx: &Ctx) -> Outcome {
    let lock_key = ctx.key("lock");
    let counter = ctx.key("counter");
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for h in 0..4 {
        let store = ctx.open_another().await?;
        let (lock_key, counter, inside) = (lock_key.clone(), counter.clone(), inside.clone());
        tasks.push(Task::spawn(async move {
            for round in 0..5 {
                let what = format!("handle {h} round {round}: new_lock");
                let l = within(
                    &what,
                    Duration::from_secs(60),
                    store.new_lock(&lock_key, LockOptions::with_value(format!("{h}.{round}"))),
                )
                .await?
                .ok_or_fail(&what)?;
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    return Err(Failure::new(format!(
                        "handle {h} round {round} got the lock while another handle held it"
                    )));
                }
                let n: u64 = match store.get(&counter).await {
                    Ok(p) => p
                        .value_str()
                        .parse()
                        .map_err(|_| Failure::new(format!("counter holds {:?}", p.value_str())))?,
                    Err(Error::NotFound { .. }) => 0,
                    Err(e) => return Err(e.into()),
                };
                tokio::task::yield_now().await;
                store
                    .put(
                        &counter,
                        n.saturating_add(1).to_string().as_bytes(),
                        PutOptions::default(),
                    )
                    .await
                    .ok_or_fail("put counter")?;
                inside.fetch_sub(1, Ordering::SeqCst);
                l.unlock()
                    .await
                    .ok_or_fail(&format!("handle {h} round {round}: unlock"))?;
            }
            Ok::<(), Failure>(())
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        within(
            &format!("contender {i} to finish"),
            Duration::from_secs(120),
            t,
        )
        .await???;
    }
    let store = ctx.open_another().await?;
    let final_value = store.get(&counter).await?;
    check_eq!(
        final_value.value_str(),
        "20",
        "counter after 4 x 5 locked increments"
    );
    check!(
        !store.exists(&lock_key).await?,
        "the lock key is left after the last unlock"
    );
    Ok(())
}

/// A lock on a key that holds a plain value (written by `put`, owned by no lock) is taken at
/// once: the lock's value replaces it, and unlock removes the key.
pub async fn replaces_plain_value(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let other = ctx.open_another().await?;
    let k = ctx.key("plain");
    let plain = store.put(&k, b"plain", PutOptions::default()).await?;
    let l = acquire(
        &*other,
        &k,
        "locked",
        "locking a key that holds a plain value",
    )
    .await?;
    let held = crate::state_of(store, &k).await?;
    check!(
        matches!(&held, Some((v, ver)) if v == b"locked" && *ver > plain.version),
        "while locked the key holds {held:?}, expected the lock's value with a version above {}",
        plain.version
    );
    l.unlock().await.ok_or_fail("unlock")?;
    check!(
        !store.exists(&k).await?,
        "the key still exists after unlocking a lock that replaced a plain value"
    );
    Ok(())
}
