//! Fencing tokens and guarded writes: `Lock::fencing_token` strictly increases per key across
//! every kind of hand-over, and `Txn::when_held` rejects a superseded holder's writes.

use std::time::Instant;

use kv_core::election::Candidate;
use kv_core::{Error, Lock, LockOptions, PutOptions, Store, Txn};

use crate::lock::expect_lost;
use crate::{within, Context, Ctx, Outcome, DEADLINE, TTL_GRACE};

async fn acquire(store: &dyn Store, key: &str, options: LockOptions, what: &str) -> Outcome<Lock> {
    within(what, DEADLINE, store.new_lock(key, options))
        .await?
        .ok_or_fail(what)
}

/// Checks that a fresh lock's token is the key's current version and above `previous`.
async fn check_token(store: &dyn Store, lock: &Lock, previous: u64, what: &str) -> Outcome<u64> {
    let t = lock.fencing_token();
    check!(t != 0, "{what}: fencing_token is 0");
    check!(
        t > previous,
        "{what}: fencing_token {t} is not larger than the previous acquisition's {previous}"
    );
    let v = crate::state_of(store, lock.key()).await?.map(|(_, v)| v);
    check_eq!(
        v,
        Some(t),
        "{what}: the lock key's version read by get (it must equal Lock::fencing_token)"
    );
    Ok(t)
}

/// Tokens strictly increase: relock after unlock, after the key was written, deleted and
/// re-created, after a holder's lock was lost (key deleted), after a holder's handle closed
/// (a crash stand-in) and after an abandoned (dropped) lock.
pub async fn token_increases(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let h2 = ctx.open_another().await?;
    let h3 = ctx.open_another().await?;
    let k = ctx.key("lock");
    let opts = || LockOptions::with_value("holder");

    let l = acquire(store, &k, opts(), "first acquisition").await?;
    let mut last = check_token(store, &l, 0, "first acquisition").await?;
    l.unlock().await.ok_or_fail("unlock")?;

    let l = acquire(&*h2, &k, opts(), "relock from another handle").await?;
    last = check_token(store, &l, last, "relock after unlock").await?;
    l.unlock().await.ok_or_fail("unlock")?;

    // Plain writes, a delete and a re-create in between.
    let p = store
        .put(&k, b"plain", PutOptions::default())
        .await
        .ok_or_fail("put a plain value at the lock key")?;
    store.delete(&k).await.ok_or_fail("delete the lock key")?;
    let l = acquire(store, &k, opts(), "lock after delete").await?;
    last = check_token(store, &l, last.max(p.version), "lock after put+delete").await?;

    // The holder loses the lock (key deleted by someone else).
    let lost = l.lost_signal();
    h3.delete(&k).await.ok_or_fail("delete the held lock key")?;
    expect_lost(
        &lost,
        &k,
        "the holder's LostSignal after its key was deleted",
    )
    .await?;
    let l2 = acquire(&*h2, &k, opts(), "lock after the holder lost it").await?;
    last = check_token(store, &l2, last, "lock after the previous holder lost it").await?;
    drop(l);

    // The holder's handle closes while holding (a crash stand-in).
    h2.close().await.ok_or_fail("close the holder's handle")?;
    let l3 = acquire(&*h3, &k, opts(), "lock after the holder's handle closed").await?;
    last = check_token(store, &l3, last, "lock after the holder's handle closed").await?;

    // The holder abandons the lock (drop without unlock).
    drop(l3);
    let l4 = acquire(store, &k, opts(), "lock after the holder dropped it").await?;
    check_token(store, &l4, last, "lock after the holder dropped it").await?;
    l4.unlock().await.ok_or_fail("final unlock")?;
    Ok(())
}

/// A write guarded by a superseded lock fails with `FencingFailed` and applies nothing,
/// while the same write unguarded lands; the current holder's guarded write succeeds.
pub async fn guarded_write(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let h2 = ctx.open_another().await?;
    let h3 = ctx.open_another().await?;
    let k = ctx.key("lock");
    let data = ctx.key("data");
    let side = ctx.key("side");
    let a = acquire(store, &k, LockOptions::with_value("a"), "A acquires").await?;
    let ta = a.fencing_token();
    store
        .txn(Txn::new().when_held(&a).put(data.clone(), b"a1".to_vec()))
        .await
        .ok_or_fail("A's guarded write while it holds the lock")?;
    check_eq!(
        crate::state_of(store, &data).await?.map(|(v, _)| v),
        Some(b"a1".to_vec()),
        "data after A's guarded write"
    );

    // A is superseded: its key is deleted and B takes the lock.
    let lost = a.lost_signal();
    h3.delete(&k).await.ok_or_fail("delete A's lock key")?;
    expect_lost(&lost, &k, "A's LostSignal").await?;
    let b = acquire(&*h2, &k, LockOptions::with_value("b"), "B acquires").await?;
    let tb = b.fencing_token();
    check!(tb > ta, "B's token {tb} is not larger than A's {ta}");

    let stale = Txn::new()
        .when_held(&a)
        .put(data.clone(), b"stale".to_vec())
        .put(side.clone(), b"stale".to_vec());
    let e = expect_err!(
        store.txn(stale).await,
        Error::FencingFailed { .. },
        "A's guarded write after B took the lock"
    );
    if let Error::FencingFailed {
        index,
        key,
        token,
        actual,
    } = &e
    {
        check_eq!(
            (*index, key.as_str(), *token, *actual),
            (0, k.as_str(), ta, Some(tb)),
            "FencingFailed (index, key, token, actual)"
        );
    }
    check!(
        e.is_fencing_failure(),
        "Error::is_fencing_failure is false for {e:?}"
    );
    check_eq!(
        crate::state_of(store, &data).await?.map(|(v, _)| v),
        Some(b"a1".to_vec()),
        "data after the rejected stale write (nothing may be applied)"
    );
    check_eq!(
        crate::state_of(store, &side).await?,
        None,
        "the other key of the rejected transaction"
    );
    // The hazard is real: the same write without the guard lands.
    store
        .txn(Txn::new().put(data.clone(), b"stale".to_vec()))
        .await
        .ok_or_fail("the same write unguarded")?;
    check_eq!(
        crate::state_of(store, &data).await?.map(|(v, _)| v),
        Some(b"stale".to_vec()),
        "data after the unguarded write"
    );
    // B's guarded write works, also combined with other compares.
    h2.txn(
        Txn::new()
            .when_absent(side.clone())
            .when_held(&b)
            .put(data.clone(), b"b1".to_vec()),
    )
    .await
    .ok_or_fail("B's guarded write")?;
    // After B unlocks, its token guards nothing either (key absent).
    b.unlock().await.ok_or_fail("B unlocks")?;
    let e = expect_err!(
        h2.txn(
            Txn::new()
                .when_fenced(k.clone(), tb)
                .put(data.clone(), b"late".to_vec())
        )
        .await,
        Error::FencingFailed { .. },
        "a guarded write with B's token after B unlocked"
    );
    check!(
        matches!(e, Error::FencingFailed { actual: None, .. }),
        "FencingFailed after unlock should report the key absent: {e:?}"
    );
    // A failing ordinary compare is still CompareFailed.
    let other = acquire(store, &k, LockOptions::with_value("c"), "C acquires").await?;
    expect_err!(
        store
            .txn(
                Txn::new()
                    .when_absent(data.clone())
                    .when_held(&other)
                    .put(side.clone(), b"x".to_vec())
            )
            .await,
        Error::CompareFailed { index: 0, .. },
        "a transaction whose ordinary compare fails before its guard"
    );
    other.unlock().await.ok_or_fail("C unlocks")?;
    drop(a);
    Ok(())
}

/// A holder whose keep-alive froze (a lease lock: nothing renews it, as for a process paused
/// past its TTL) is replaced by a candidate elected with a higher term once the TTL passes; the
/// old holder, resuming as if it still held the lock, has its guarded write rejected (0 stale
/// writes) while the same write unguarded lands.
pub async fn paused_holder(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let h2 = ctx.open_another().await?;
    let k = ctx.key("leader");
    let data = ctx.key("data");
    let ttl = ctx.short_ttl();
    let t0 = Instant::now();
    let paused = acquire(
        store,
        &k,
        LockOptions::with_value("paused").ttl(ttl).keep_alive(false),
        "the soon-paused holder acquires",
    )
    .await?;
    let candidate = Candidate::new(h2.clone(), k.clone(), "successor", ttl);
    let lead = within(
        &format!("a candidate to be elected after the paused holder's {ttl:?} TTL"),
        ttl + TTL_GRACE,
        candidate.campaign(),
    )
    .await?
    .ok_or_fail("campaign")?;
    let failover = t0.elapsed();
    eprintln!(
        "figure {}: leader paused past its TTL -> new leader after {failover:?} (ttl {ttl:?})",
        ctx.scenario()
    );
    check!(
        failover >= ttl * 3 / 4,
        "the successor was elected after {failover:?}, before the paused holder's TTL of {ttl:?}"
    );
    check!(
        lead.term() > paused.fencing_token(),
        "the successor's term {} is not larger than the paused holder's token {}",
        lead.term(),
        paused.fencing_token()
    );
    // The paused holder resumes and writes, believing it still leads.
    let mut stale_writes = 0;
    for i in 0..3 {
        let r = store
            .txn(
                Txn::new()
                    .when_held(&paused)
                    .put(data.clone(), format!("stale-{i}")),
            )
            .await;
        match r {
            Err(Error::FencingFailed { .. }) => {}
            Ok(_) => stale_writes += 1,
            Err(e) => return Err(e.into()),
        }
    }
    check_eq!(stale_writes, 0, "stale guarded writes that landed");
    check_eq!(
        crate::state_of(store, &data).await?,
        None,
        "data after the paused holder's guarded writes"
    );
    store
        .txn(lead.guard().put(data.clone(), b"successor".to_vec()))
        .await
        .ok_or_fail("the successor's guarded write")?;
    store
        .put(&data, b"stale-unguarded", PutOptions::default())
        .await
        .ok_or_fail("the paused holder's unguarded write")?;
    check_eq!(
        crate::state_of(store, &data).await?.map(|(v, _)| v),
        Some(b"stale-unguarded".to_vec()),
        "the unguarded stale write lands (the hazard fencing prevents)"
    );
    lead.resign().await.ok_or_fail("resign")?;
    drop(paused);
    Ok(())
}
