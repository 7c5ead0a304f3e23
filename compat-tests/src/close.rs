//! close(): later calls are Closed, watches end with Err(Closed), locks are released.

use futures::StreamExt;
use kv_core::{Error, LockOptions, PutOptions, Store};

use crate::{within, Context, Ctx, Outcome, DEADLINE};

/// After close, every call is Closed; close twice is Ok; other handles keep working.
pub async fn calls_fail_after_close(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let h = ctx.open_another().await?;
    let k = ctx.key("k");
    let p = h
        .put(&k, b"v", PutOptions::default())
        .await
        .ok_or_fail("put before close")?;
    h.close().await.ok_or_fail("close")?;
    expect_err!(h.get(&k).await, Error::Closed, "get after close");
    expect_err!(
        h.put(&k, b"w", PutOptions::default()).await,
        Error::Closed,
        "put after close"
    );
    expect_err!(h.delete(&k).await, Error::Closed, "delete after close");
    expect_err!(h.exists(&k).await, Error::Closed, "exists after close");
    expect_err!(
        h.list(ctx.prefix()).await,
        Error::Closed,
        "list after close"
    );
    expect_err!(
        h.delete_tree(&ctx.key("sub")).await,
        Error::Closed,
        "delete_tree after close"
    );
    expect_err!(
        h.atomic_put(&k, b"w", Some(&p), PutOptions::default())
            .await,
        Error::Closed,
        "atomic_put after close"
    );
    expect_err!(
        h.atomic_delete(&k, &p).await,
        Error::Closed,
        "atomic_delete after close"
    );
    if ctx.caps().txn {
        expect_err!(
            h.txn(kv_core::Txn::new().get(k.clone())).await,
            Error::Closed,
            "txn after close"
        );
    }
    h.close().await.ok_or_fail("second close")?;
    check_eq!(
        store
            .get(&k)
            .await
            .ok_or_fail("get on another handle after one handle closed")?,
        p,
        "the pair seen by another handle"
    );
    let p2 = store
        .put(&k, b"still works", PutOptions::default())
        .await
        .ok_or_fail("put on another handle")?;
    check!(p2.version > p.version, "version did not grow");
    Ok(())
}

/// Open watch streams on a closed handle yield Err(Closed), then end.
pub async fn ends_watches(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let h = ctx.open_another().await?;
    let k = ctx.key("k");
    h.put(&k, b"v", PutOptions::default()).await?;
    let mut w = h.watch(&k).await?;
    crate::wait_for_item(&mut w, DEADLINE, "first item").await?;
    let mut tw = if ctx.caps().watch_tree {
        let mut tw = h.watch_tree(ctx.prefix()).await?;
        crate::wait_for_item(&mut tw, DEADLINE, "first snapshot").await?;
        Some(tw)
    } else {
        None
    };
    h.close().await.ok_or_fail("close")?;
    let item = within("the watch's item after close", DEADLINE, w.next()).await?;
    check!(
        matches!(item, Some(Err(Error::Closed))),
        "watch item after close: expected Some(Err(Closed)), got {item:?}"
    );
    let end = within("the watch to end after Err(Closed)", DEADLINE, w.next()).await?;
    check!(
        end.is_none(),
        "the watch stream went on after Err(Closed): {end:?}"
    );
    if let Some(tw) = tw.as_mut() {
        let item = within("the tree watch's item after close", DEADLINE, tw.next()).await?;
        check!(
            matches!(item, Some(Err(Error::Closed))),
            "tree watch item after close: expected Some(Err(Closed)), got {item:?}"
        );
        let end = within(
            "the tree watch to end after Err(Closed)",
            DEADLINE,
            tw.next(),
        )
        .await?;
        check!(
            end.is_none(),
            "the tree watch stream went on after Err(Closed): {end:?}"
        );
    }
    expect_err!(
        h.watch(&k).await.map(|_| "a watch stream"),
        Error::Closed,
        "watch after close"
    );
    let mut w2 = store
        .watch(&k)
        .await
        .ok_or_fail("watch on another handle")?;
    let first = crate::wait_for_item(&mut w2, DEADLINE, "first item on another handle").await?;
    check!(
        first.is_some(),
        "the key is absent for another handle after one handle closed"
    );
    // Closing one handle must not stop the watches of the others (nor new ones).
    let put = store
        .put(&k, b"after close", PutOptions::default())
        .await
        .ok_or_fail("put on another handle after one handle closed")?;
    let item = crate::wait_for_item(
        &mut w2,
        DEADLINE,
        "an update on another handle's watch after one handle closed",
    )
    .await?;
    check_eq!(
        item.map(|p| p.version),
        Some(put.version),
        "update seen by another handle's watch after one handle closed"
    );
    Ok(())
}

/// A lock held by a handle is released when the handle closes; its LostSignal fires.
pub async fn releases_locks(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let h = ctx.open_another().await?;
    let k = ctx.key("lock");
    let l = within(
        "acquiring the free lock",
        DEADLINE,
        h.new_lock(&k, LockOptions::with_value("closing")),
    )
    .await?
    .ok_or_fail("new_lock")?;
    let lost = l.lost_signal();
    h.close().await.ok_or_fail("close of the holding handle")?;
    let next = within(
        "another handle to acquire the lock of a closed handle",
        DEADLINE,
        store.new_lock(&k, LockOptions::with_value("next")),
    )
    .await?
    .ok_or_fail("new_lock after the holder closed")?;
    crate::lock::expect_lost(&lost, &k, "the closed holder's LostSignal").await?;
    check!(
        l.is_lost(),
        "the closed handle's lock does not report itself lost"
    );
    let r = within(
        "new_lock on a closed handle to return",
        DEADLINE,
        h.new_lock(&k, LockOptions::default()),
    )
    .await?;
    expect_err!(r, Error::Closed, "new_lock on a closed handle");
    expect_err!(
        l.unlock().await,
        Error::LockLost { .. },
        "unlock of a lock released by close"
    );
    check_eq!(
        store.get(&k).await?.value,
        b"next".to_vec(),
        "the new holder's value after the closed handle's unlock"
    );
    next.unlock().await.ok_or_fail("unlock")?;
    Ok(())
}
