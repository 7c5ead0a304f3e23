//! watch and watch_tree.

use kv_core::{KvPair, PutOptions, Store};

use crate::{keys_of, short_debug, wait_for_item, wait_for_state, Context, Ctx, Outcome, DEADLINE};

fn brief(item: &Option<KvPair>) -> Option<(String, String, u64)> {
    item.as_ref()
        .map(|p| (p.key.clone(), p.value_str().into_owned(), p.version))
}

/// First item is the current value, then one item per change; delete is `None`.
pub async fn key_updates(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("w");
    let first = store.put(&k, b"v0", PutOptions::default()).await?;
    let mut w = store.watch(&format!("/{k}/")).await.ok_or_fail("watch")?;
    let item = wait_for_item(&mut w, DEADLINE, "the first watch item").await?;
    check_eq!(
        brief(&item),
        brief(&Some(first.clone())),
        "first watch item (the current value)"
    );
    let mut last = first.version;
    for i in 1..=5 {
        let put = store
            .put(&k, format!("v{i}").as_bytes(), PutOptions::default())
            .await?;
        let item = wait_for_item(&mut w, DEADLINE, &format!("the item for write #{i}")).await?;
        check_eq!(
            brief(&item),
            brief(&Some(put.clone())),
            "watch item after write #{i}"
        );
        last = put.version;
    }
    store.delete(&k).await?;
    let item = wait_for_item(&mut w, DEADLINE, "the item for the delete").await?;
    check_eq!(
        brief(&item),
        None,
        "watch item after delete (an explicit None)"
    );
    let again = store.put(&k, b"again", PutOptions::default()).await?;
    check!(
        again.version > last,
        "re-created key got version {} (last was {last})",
        again.version
    );
    let item = wait_for_item(&mut w, DEADLINE, "the item for the re-create").await?;
    check_eq!(
        brief(&item),
        brief(&Some(again)),
        "watch item after re-create"
    );
    Ok(())
}

/// Watching a missing key: first item `None`, then the put arrives.
pub async fn missing_key(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("later");
    let mut w = store.watch(&k).await.ok_or_fail("watch of a missing key")?;
    let item = wait_for_item(
        &mut w,
        DEADLINE,
        "the first item of a watch on a missing key",
    )
    .await?;
    check_eq!(brief(&item), None, "first item of a watch on a missing key");
    let put = store.put(&k, b"now", PutOptions::default()).await?;
    let item = wait_for_item(&mut w, DEADLINE, "the item for the first put").await?;
    check_eq!(
        brief(&item),
        brief(&Some(put)),
        "watch item after the key appears"
    );
    Ok(())
}

/// Writes to siblings, children, parents and `kfoo` never show up on the watch of `k`.
pub async fn ignores_other_keys(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("k");
    let mut w = store.watch(&k).await?;
    check_eq!(
        brief(&wait_for_item(&mut w, DEADLINE, "first item").await?),
        None,
        "first item"
    );
    for (i, other) in ["kfoo", "k/child", "k/child/deeper", "j", "k0"]
        .iter()
        .enumerate()
    {
        store
            .put(&ctx.key(other), b"noise", PutOptions::default())
            .await?;
        let own = store
            .put(&k, format!("own {i}").as_bytes(), PutOptions::default())
            .await?;
        let item = wait_for_item(&mut w, DEADLINE, "the item for the watched key").await?;
        check_eq!(
            brief(&item),
            brief(&Some(own)),
            "next item after writing {other:?} and then the watched key"
        );
    }
    store.delete(&ctx.key("k/child")).await?;
    store
        .put(&ctx.key(""), b"parent", PutOptions::default())
        .await?;
    let own = store.put(&k, b"final", PutOptions::default()).await?;
    let item = wait_for_item(&mut w, DEADLINE, "the item for the watched key").await?;
    check_eq!(
        brief(&item),
        brief(&Some(own)),
        "next item after deleting a child and writing the parent"
    );
    Ok(())
}

/// 50 quick writes: the last version always arrives; with `watch_every_change`, all of them.
pub async fn burst(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("burst");
    let initial = store.put(&k, b"start", PutOptions::default()).await?;
    let mut w = store.watch(&k).await?;
    let first = wait_for_item(&mut w, DEADLINE, "first item").await?;
    check_eq!(brief(&first), brief(&Some(initial.clone())), "first item");
    let mut versions = Vec::new();
    for i in 0..50 {
        versions.push(
            store
                .put(&k, format!("burst {i}").as_bytes(), PutOptions::default())
                .await?
                .version,
        );
    }
    let last = *versions.last().unwrap_or(&0);
    let seen = wait_for_state(&mut w, DEADLINE, "the last write of the burst", |item| {
        item.as_ref().map(|p| p.version) == Some(last)
    })
    .await?;
    let got: Vec<u64> = seen
        .iter()
        .map(|i| i.as_ref().map(|p| p.version).unwrap_or(0))
        .collect();
    check!(
        got.iter().all(|v| versions.contains(v)),
        "items that are not writes of the burst (or None): {got:?}"
    );
    check!(
        got.windows(2).all(|w| w[0] < w[1]),
        "items out of order (or repeated): {got:?}"
    );
    let final_item = seen.last().cloned().flatten();
    check_eq!(
        final_item.map(|p| p.value),
        Some(b"burst 49".to_vec()),
        "value of the last item"
    );
    if ctx.caps().watch_every_change {
        check_eq!(
            got,
            versions,
            "every version of the burst, in order (watch_every_change is true)"
        );
    }
    Ok(())
}

/// A watch on one handle sees writes made through another handle.
pub async fn across_handles(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let other = ctx.open_another().await?;
    let k = ctx.key("shared");
    let mut w = store.watch(&k).await?;
    check_eq!(
        brief(&wait_for_item(&mut w, DEADLINE, "first item").await?),
        None,
        "first item"
    );
    let put = other
        .put(&k, b"from the other handle", PutOptions::default())
        .await?;
    check_eq!(
        brief(&wait_for_item(&mut w, DEADLINE, "put by another handle").await?),
        brief(&Some(put)),
        "item for another handle's put"
    );
    other.delete(&k).await?;
    check_eq!(
        brief(&wait_for_item(&mut w, DEADLINE, "delete by another handle").await?),
        None,
        "item for another handle's delete"
    );
    Ok(())
}

fn tree_brief(pairs: &[KvPair]) -> Vec<(String, String, u64)> {
    pairs
        .iter()
        .map(|p| (p.key.clone(), p.value_str().into_owned(), p.version))
        .collect()
}

/// Tree snapshots equal a fresh `list` after every kind of change; siblings never appear.
pub async fn tree_snapshots(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let t = ctx.key("foo");
    store
        .put(&ctx.key("foo/a"), b"a1", PutOptions::default())
        .await?;
    store
        .put(&ctx.key("foo/m"), b"m1", PutOptions::default())
        .await?;
    store
        .put(&ctx.key("foobar"), b"sibling", PutOptions::default())
        .await?;
    let mut w = store
        .watch_tree(&format!("/{t}/"))
        .await
        .ok_or_fail("watch_tree")?;
    let first = wait_for_item(&mut w, DEADLINE, "the first snapshot").await?;
    let listed = store.list(&t).await?;
    check_eq!(
        tree_brief(&first),
        tree_brief(&listed),
        "first snapshot == list"
    );
    check_eq!(
        keys_of(&first),
        vec![ctx.key("foo/a"), ctx.key("foo/m")],
        "first snapshot keys"
    );

    // Each step: a change to the subtree, optionally preceded by noise outside it.
    type Step = (
        &'static str,
        &'static [&'static str],
        &'static str,
        Option<&'static [u8]>,
    );
    let steps: [Step; 6] = [
        ("add a child", &[], "foo/b", Some(b"b1")),
        ("change a child's value", &[], "foo/a", Some(b"a2")),
        ("add a grandchild", &[], "foo/b/c", Some(b"c1")),
        ("delete a child", &[], "foo/m", None),
        (
            "change after sibling writes",
            &["foobar", "foobar/x", "fo"],
            "foo/z",
            Some(b"z1"),
        ),
        (
            "change after writing the prefix key",
            &["foo"],
            "foo/b/c",
            Some(b"c2"),
        ),
    ];
    for (what, noise, rel, value) in steps {
        for n in noise {
            store
                .put(&ctx.key(n), b"noise", PutOptions::default())
                .await?;
        }
        let k = ctx.key(rel);
        match value {
            Some(v) => {
                store.put(&k, v, PutOptions::default()).await?;
            }
            None => store.delete(&k).await?,
        }
        let snap = wait_for_item(&mut w, DEADLINE, &format!("the snapshot after: {what}")).await?;
        let listed = store.list(&t).await?;
        check_eq!(
            tree_brief(&snap),
            tree_brief(&listed),
            "snapshot after \"{what}\" == a fresh list"
        );
        check!(
            snap.iter().all(|p| p.key.starts_with(&format!("{t}/"))),
            "snapshot contains keys outside the subtree: {:?}",
            keys_of(&snap)
        );
    }
    // Deleting the last children gives an empty snapshot.
    store.delete_tree(&t).await?;
    let snap = wait_for_state(
        &mut w,
        DEADLINE,
        "an empty snapshot after delete_tree",
        |s: &Vec<KvPair>| s.is_empty(),
    )
    .await?;
    for s in &snap {
        check!(
            s.iter().all(|p| p.key.starts_with(&format!("{t}/"))),
            "snapshot contains keys outside the subtree: {:?}",
            keys_of(s)
        );
    }
    Ok(())
}

/// A tree watch on an empty subtree starts with an empty snapshot, then sees the first key.
pub async fn tree_empty(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let t = ctx.key("empty");
    let mut w = store
        .watch_tree(&t)
        .await
        .ok_or_fail("watch_tree of an empty subtree")?;
    let first = wait_for_item(&mut w, DEADLINE, "the first snapshot").await?;
    check_eq!(
        tree_brief(&first),
        vec![],
        "first snapshot of an empty subtree"
    );
    let put = store
        .put(&ctx.key("empty/deep/key"), b"v", PutOptions::default())
        .await?;
    let snap = wait_for_item(&mut w, DEADLINE, "the snapshot after the first put").await?;
    check_eq!(
        tree_brief(&snap),
        tree_brief(&[put]),
        "snapshot after the first put"
    );
    Ok(())
}

/// Opening and dropping 20 watches leaves the store working; a new watch still works.
pub async fn drop_streams(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("k");
    store.put(&k, b"v0", PutOptions::default()).await?;
    for i in 0..20 {
        let mut w = store.watch(&k).await.ok_or_fail(&format!("watch #{i}"))?;
        if i % 2 == 0 {
            wait_for_item(&mut w, DEADLINE, "first item").await?;
        }
        drop(w);
    }
    let put = store
        .put(&k, b"v1", PutOptions::default())
        .await
        .ok_or_fail("put after dropping watches")?;
    check_eq!(
        store
            .get(&k)
            .await
            .ok_or_fail("get after dropping watches")?,
        put,
        "get after dropping watches"
    );
    let mut w = store
        .watch(&k)
        .await
        .ok_or_fail("a new watch after dropping 20")?;
    check_eq!(
        brief(&wait_for_item(&mut w, DEADLINE, "first item of the new watch").await?),
        brief(&Some(put)),
        "first item of the new watch"
    );
    let put2 = store.put(&k, b"v2", PutOptions::default()).await?;
    check_eq!(
        brief(&wait_for_item(&mut w, DEADLINE, "update on the new watch").await?),
        brief(&Some(put2)),
        "update on the new watch"
    );
    // Plenty of writes with no reader left must not block (a dropped watch holds no queue).
    crate::within("100 writes after dropping watches", DEADLINE, async {
        for i in 0..100 {
            store
                .put(
                    &ctx.key("after"),
                    format!("{i}").as_bytes(),
                    PutOptions::default(),
                )
                .await?;
        }
        Ok::<_, kv_core::Error>(())
    })
    .await??;
    Ok(())
}

/// Same for tree watches.
pub async fn drop_tree_streams(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let t = ctx.key("t");
    store
        .put(&ctx.key("t/a"), b"v0", PutOptions::default())
        .await?;
    for i in 0..20 {
        let mut w = store
            .watch_tree(&t)
            .await
            .ok_or_fail(&format!("watch_tree #{i}"))?;
        if i % 2 == 0 {
            wait_for_item(&mut w, DEADLINE, "first snapshot").await?;
        }
        drop(w);
    }
    let put = store
        .put(&ctx.key("t/b"), b"v1", PutOptions::default())
        .await
        .ok_or_fail("put after dropping tree watches")?;
    let mut w = store
        .watch_tree(&t)
        .await
        .ok_or_fail("a new watch_tree after dropping 20")?;
    let first = wait_for_item(&mut w, DEADLINE, "first snapshot of the new tree watch").await?;
    check_eq!(
        tree_brief(&first),
        tree_brief(&store.list(&t).await?),
        "first snapshot of the new tree watch"
    );
    check!(
        first.contains(&put),
        "first snapshot lacks the latest put: {}",
        short_debug(&first)
    );
    store.delete(&ctx.key("t/a")).await?;
    let snap = wait_for_item(&mut w, DEADLINE, "update on the new tree watch").await?;
    check_eq!(
        tree_brief(&snap),
        tree_brief(&[put]),
        "snapshot after a delete"
    );
    Ok(())
}

/// A watch nobody reads never blocks writers; when read, it still delivers the latest state.
pub async fn slow_reader(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("slow");
    let mut w = store.watch(&k).await?;
    check_eq!(
        brief(&wait_for_item(&mut w, DEADLINE, "first item").await?),
        None,
        "first item"
    );
    let mut tw = if ctx.caps().watch_tree {
        let mut tw = store.watch_tree(ctx.prefix()).await?;
        wait_for_item(&mut tw, DEADLINE, "first snapshot").await?;
        Some(tw)
    } else {
        None
    };
    // More writes than sled's subscriber slots and kv-core's watch queue, nobody reading.
    const WRITES: usize = 1100;
    let last = crate::within(
        &format!("{WRITES} writes while two watches are not read"),
        std::time::Duration::from_secs(120),
        async {
            let mut last = None;
            for i in 0..WRITES {
                last = Some(
                    store
                        .put(&k, format!("{i}").as_bytes(), PutOptions::default())
                        .await?,
                );
            }
            Ok::<_, kv_core::Error>(last)
        },
    )
    .await??;
    let last = last.ok_or_else(|| crate::Failure::new("no write happened"))?;
    let seen = wait_for_state(
        &mut w,
        DEADLINE,
        "the slow watch to reach the last write",
        |i| i.as_ref().map(|p| p.version) == Some(last.version),
    )
    .await?;
    let versions: Vec<u64> = seen
        .iter()
        .map(|i| i.as_ref().map(|p| p.version).unwrap_or(0))
        .collect();
    check!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "the slow watch's items are out of order: {}",
        short_debug(&versions)
    );
    if let Some(tw) = tw.as_mut() {
        let snaps = wait_for_state(
            tw,
            DEADLINE,
            "the slow tree watch to reach the last write",
            |s: &Vec<KvPair>| s.iter().any(|p| p.version == last.version),
        )
        .await?;
        let fin = snaps.last().cloned().unwrap_or_default();
        check_eq!(
            tree_brief(&fin),
            tree_brief(std::slice::from_ref(&last)),
            "last snapshot of the slow tree watch"
        );
    }
    Ok(())
}
