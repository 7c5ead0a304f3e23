//! put / get / delete / exists, key normalization, versions.

use kv_core::{Error, PutOptions, Store};

use crate::{Context, Ctx, Outcome};

/// put, get, exists and delete of one key, and NotFound / false once it is gone.
pub async fn put_get_delete_exists(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("a");
    check!(
        !store.exists(&k).await.ok_or_fail("exists before put")?,
        "exists({k:?}) is true before any put"
    );
    let put = store
        .put(&k, b"v1", PutOptions::default())
        .await
        .ok_or_fail("put")?;
    check_eq!(put.key, k, "key of the pair returned by put");
    check_eq!(
        put.value,
        b"v1".to_vec(),
        "value of the pair returned by put"
    );
    check!(put.version != 0, "put returned version 0 for {k:?}");
    let got = store.get(&k).await.ok_or_fail("get after put")?;
    check_eq!(got, put, "get after put returns the pair put returned");
    check!(
        store.exists(&k).await.ok_or_fail("exists after put")?,
        "exists({k:?}) is false after put"
    );
    store.delete(&k).await.ok_or_fail("delete")?;
    check!(
        !store.exists(&k).await.ok_or_fail("exists after delete")?,
        "exists({k:?}) is true after delete"
    );
    expect_err!(
        store.get(&k).await,
        Error::NotFound { .. },
        "get {k:?} after delete"
    );
    let e = expect_err!(
        store.delete(&k).await,
        Error::NotFound { .. },
        "second delete of {k:?}"
    );
    if let Error::NotFound { key } = e {
        check_eq!(key, k, "key named by NotFound (the normalized key)");
    }
    Ok(())
}

/// Leading and trailing slashes name the same key; pairs come back normalized.
pub async fn key_normalization(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("x/y/z");
    let variants = [
        k.clone(),
        format!("/{k}"),
        format!("{k}/"),
        format!("/{k}/"),
        format!("//{k}//"),
    ];
    let mut last_version = 0;
    for (i, written) in variants.iter().enumerate() {
        let value = format!("v{i}").into_bytes();
        let put = store
            .put(written, &value, PutOptions::default())
            .await
            .ok_or_fail(&format!("put {written:?}"))?;
        check_eq!(put.key, k, "key returned by put({written:?})");
        check!(put.version > last_version, "put({written:?}) returned version {} not above the previous write's {last_version}: the variants must be one key", put.version);
        last_version = put.version;
        for read in &variants {
            let got = store
                .get(read)
                .await
                .ok_or_fail(&format!("get {read:?} after put {written:?}"))?;
            check_eq!(got.key, k, "key returned by get({read:?})");
            check_eq!(
                got.value,
                value,
                "value of get({read:?}) after put({written:?})"
            );
            check!(
                store.exists(read).await.ok_or_fail("exists")?,
                "exists({read:?}) false after put({written:?})"
            );
        }
    }
    let listed = store.list(ctx.prefix()).await.ok_or_fail("list")?;
    check_eq!(
        crate::keys_of(&listed),
        vec![k.clone()],
        "list of the scenario prefix: the slash variants are ONE key"
    );
    store
        .delete(&format!("/{k}/"))
        .await
        .ok_or_fail("delete with slashes")?;
    for read in &variants {
        check!(
            !store.exists(read).await.ok_or_fail("exists after delete")?,
            "exists({read:?}) true after delete"
        );
        let e = expect_err!(
            store.get(read).await,
            Error::NotFound { .. },
            "get {read:?} after delete"
        );
        if let Error::NotFound { key } = e {
            check_eq!(key, k, "NotFound for {read:?} names the normalized key");
        }
    }
    Ok(())
}

/// get / delete of a key never written: NotFound; exists: false.
pub async fn missing_key(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("never/written");
    expect_err!(
        store.get(&k).await,
        Error::NotFound { .. },
        "get of a missing key"
    );
    check!(
        !store.exists(&k).await.ok_or_fail("exists")?,
        "exists of a missing key is true"
    );
    expect_err!(
        store.delete(&k).await,
        Error::NotFound { .. },
        "delete of a missing key"
    );
    check!(
        !store.exists(&k).await.ok_or_fail("exists")?,
        "delete of a missing key created it"
    );
    Ok(())
}

/// After `put(a/b)`, `a` is not a key.
pub async fn parent_is_not_a_key(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let child = ctx.key("a/b/c");
    store
        .put(&child, b"v", PutOptions::default())
        .await
        .ok_or_fail("put a/b/c")?;
    for parent in [ctx.key("a/b"), ctx.key("a"), ctx.key("")] {
        check!(
            !store.exists(&parent).await.ok_or_fail("exists parent")?,
            "exists({parent:?}) is true after only put({child:?})"
        );
        expect_err!(
            store.get(&parent).await,
            Error::NotFound { .. },
            "get of parent path {parent:?}"
        );
        expect_err!(
            store.delete(&parent).await,
            Error::NotFound { .. },
            "delete of parent path {parent:?}"
        );
    }
    check_eq!(
        store.get(&child).await.ok_or_fail("get child")?.value,
        b"v".to_vec(),
        "child after deleting parents"
    );
    Ok(())
}

/// Deleting a key does not touch keys below it.
pub async fn delete_keeps_children(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let parent = ctx.key("p");
    let child = ctx.key("p/c");
    let grandchild = ctx.key("p/c/g");
    store
        .put(&parent, b"parent", PutOptions::default())
        .await
        .ok_or_fail("put parent")?;
    store
        .put(&child, b"child", PutOptions::default())
        .await
        .ok_or_fail("put child")?;
    store
        .put(&grandchild, b"grandchild", PutOptions::default())
        .await
        .ok_or_fail("put grandchild")?;
    store.delete(&parent).await.ok_or_fail("delete parent")?;
    check!(
        !store.exists(&parent).await?,
        "{parent:?} still exists after delete"
    );
    check_eq!(
        store
            .get(&child)
            .await
            .ok_or_fail("get child after deleting parent")?
            .value,
        b"child".to_vec(),
        "child value"
    );
    check_eq!(
        store
            .get(&grandchild)
            .await
            .ok_or_fail("get grandchild after deleting parent")?
            .value,
        b"grandchild".to_vec(),
        "grandchild value"
    );
    store.delete(&child).await.ok_or_fail("delete child")?;
    check!(
        store.exists(&grandchild).await?,
        "{grandchild:?} vanished when {child:?} was deleted"
    );
    Ok(())
}

/// Versions are non-zero and strictly increase on every write.
pub async fn versions_increase(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("v");
    let other = ctx.key("other");
    let mut last = 0u64;
    for i in 0..10 {
        let put = store
            .put(&k, format!("{i}").as_bytes(), PutOptions::default())
            .await
            .ok_or_fail("put")?;
        check!(put.version != 0, "write #{i} returned version 0");
        check!(
            put.version > last,
            "write #{i} returned version {} after version {last}: versions must strictly increase",
            put.version
        );
        check_eq!(
            store.get(&k).await?.version,
            put.version,
            "version read back after write #{i}"
        );
        // Writes of another key in between must not break the order of this one.
        store
            .put(&other, b"x", PutOptions::default())
            .await
            .ok_or_fail("put other")?;
        last = put.version;
    }
    // Rewriting the same value is still a write.
    let same = store
        .put(&k, b"9", PutOptions::default())
        .await
        .ok_or_fail("put same value")?;
    check!(
        same.version > last,
        "rewriting the same value gave version {} (previous {last})",
        same.version
    );
    Ok(())
}

/// After delete and re-create, the new version is above every earlier one.
pub async fn versions_never_reused(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("v");
    let mut seen = Vec::new();
    for round in 0..3 {
        for i in 0..3 {
            let put = store
                .put(&k, format!("{round}.{i}").as_bytes(), PutOptions::default())
                .await
                .ok_or_fail("put")?;
            let max = seen.iter().copied().max().unwrap_or(0);
            check!(put.version > max, "round {round} write {i}: version {} is not above every earlier version of the key ({seen:?})", put.version);
            seen.push(put.version);
        }
        store.delete(&k).await.ok_or_fail("delete")?;
    }
    // A re-create through atomic_put follows the same rule.
    let created = store
        .atomic_put(&k, b"again", None, PutOptions::default())
        .await
        .ok_or_fail("atomic_put create after delete")?;
    let max = seen.iter().copied().max().unwrap_or(0);
    check!(
        created.version > max,
        "atomic_put re-create gave version {} not above {seen:?}",
        created.version
    );
    Ok(())
}

/// A handle with a nested namespace sees only its own keys, relative to it.
pub async fn namespace_isolation(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let ns = ctx.open_namespace("ns").await?;
    let inside = ns
        .put("a/b", b"in", PutOptions::default())
        .await
        .ok_or_fail("put through the namespaced handle")?;
    check_eq!(
        inside.key,
        "a/b",
        "key returned by the namespaced handle (relative to its namespace)"
    );
    let seen = store
        .get(&ctx.key("ns/a/b"))
        .await
        .ok_or_fail("get of the namespaced key through the outer handle")?;
    check_eq!(
        (seen.value.clone(), seen.version),
        (b"in".to_vec(), inside.version),
        "the namespaced key seen from outside"
    );
    store
        .put(&ctx.key("outside"), b"out", PutOptions::default())
        .await?;
    store
        .put(&ctx.key("nsx/a/b"), b"sibling", PutOptions::default())
        .await?;
    store
        .put(&ctx.key("ns/c"), b"from outside", PutOptions::default())
        .await?;
    check!(
        !ns.exists("outside").await?,
        "the namespaced handle sees a key outside its namespace"
    );
    expect_err!(
        ns.get("nsx/a/b").await,
        Error::NotFound { .. },
        "get of a sibling namespace's key"
    );
    let listed = ns
        .list("")
        .await
        .ok_or_fail("list of the whole namespace")?;
    check_eq!(
        crate::keys_of(&listed),
        vec!["a/b".to_string(), "c".to_string()],
        "list(\"\") of the namespaced handle"
    );
    check_eq!(
        ns.get("c").await?.value,
        b"from outside".to_vec(),
        "a key written from outside, read inside"
    );
    ns.delete_tree("")
        .await
        .ok_or_fail("delete_tree of the whole namespace")?;
    check_eq!(
        crate::keys_of(&ns.list("").await?),
        Vec::<String>::new(),
        "namespace after delete_tree(\"\")"
    );
    for k in ["outside", "nsx/a/b"] {
        check!(
            store.exists(&ctx.key(k)).await?,
            "delete_tree(\"\") in a namespace removed {k:?} outside it"
        );
    }
    check!(
        !store.exists(&ctx.key("ns/a/b")).await?,
        "delete_tree(\"\") in the namespace left its key"
    );
    Ok(())
}
