//! Invalid keys and prefixes for every call: InvalidKey naming the key, nothing stored.

use kv_core::{Error, KvPair, LockOptions, PutOptions, Store, Txn};

use crate::{keys_of, within, Ctx, Outcome, DEADLINE};

/// Invalid prefixes (also invalid keys): empty segments, `..`, a NUL, white space, too long.
fn bad_prefixes(ctx: &Ctx) -> Vec<String> {
    let p = ctx.prefix();
    let long = format!(
        "{p}/{}",
        "x".repeat(kv_core::key::MAX_KEY_LEN + 1 - p.len() - 1)
    );
    debug_assert_eq!(long.len(), kv_core::key::MAX_KEY_LEN + 1);
    vec![
        "a//b".to_string(),
        "a/../b".to_string(),
        "a\u{0}b".to_string(),
        format!("{p}/a//b"),
        format!("{p}/a/../b"),
        format!("{p}/./b"),
        format!("{p}/a\u{0}b"),
        format!("{p}/a\nb"),
        format!("{p}/ a"),
        long,
    ]
}

/// Invalid keys: the invalid prefixes plus the empty key.
fn bad_keys(ctx: &Ctx) -> Vec<String> {
    let mut v = vec![String::new(), "/".to_string(), "//".to_string()];
    v.extend(bad_prefixes(ctx));
    v
}

fn names(e: &Error, bad: &str) -> bool {
    matches!(e, Error::InvalidKey { key, .. } if key == bad)
}

macro_rules! expect_invalid_key {
    ($result:expr, $bad:expr, $call:literal) => {{
        let bad: &str = $bad;
        let e = expect_err!(
            $result,
            Error::InvalidKey { .. },
            "{} with the invalid key {:?}",
            $call,
            bad
        );
        check_eq!(
            names(&e, bad),
            true,
            "{} with {:?}: InvalidKey names the key exactly as passed (got {e:?})",
            $call,
            bad
        );
    }};
}

async fn nothing_stored(store: &dyn Store, ctx: &Ctx) -> Outcome {
    check_eq!(
        keys_of(&store.list(ctx.prefix()).await?),
        Vec::<String>::new(),
        "keys under the scenario prefix after calls with invalid keys"
    );
    Ok(())
}

/// put, get, delete, exists, atomic_put, atomic_delete with invalid keys.
pub async fn invalid_keys(store: &dyn Store, ctx: &Ctx) -> Outcome {
    for bad in bad_keys(ctx) {
        let b = bad.as_str();
        expect_invalid_key!(store.put(b, b"v", PutOptions::default()).await, b, "put");
        expect_invalid_key!(store.get(b).await, b, "get");
        expect_invalid_key!(store.delete(b).await, b, "delete");
        expect_invalid_key!(store.exists(b).await, b, "exists");
        expect_invalid_key!(
            store.atomic_put(b, b"v", None, PutOptions::default()).await,
            b,
            "atomic_put (create-only)"
        );
        let prev = KvPair::new(bad.clone(), b"v".to_vec(), 1);
        expect_invalid_key!(
            store
                .atomic_put(b, b"v", Some(&prev), PutOptions::default())
                .await,
            b,
            "atomic_put (CAS)"
        );
        expect_invalid_key!(store.atomic_delete(b, &prev).await, b, "atomic_delete");
    }
    nothing_stored(store, ctx).await
}

/// list and delete_tree with invalid prefixes (the empty prefix is valid: the whole namespace).
pub async fn invalid_prefixes(store: &dyn Store, ctx: &Ctx) -> Outcome {
    store
        .put(&ctx.key("a/b"), b"v", PutOptions::default())
        .await?;
    for bad in bad_prefixes(ctx) {
        let b = bad.as_str();
        expect_invalid_key!(store.list(b).await, b, "list");
        expect_invalid_key!(store.delete_tree(b).await, b, "delete_tree");
    }
    check_eq!(
        keys_of(&store.list(ctx.prefix()).await?),
        vec![ctx.key("a/b")],
        "keys after list/delete_tree with invalid prefixes"
    );
    Ok(())
}

/// watch with invalid keys.
pub async fn invalid_keys_watch(store: &dyn Store, ctx: &Ctx) -> Outcome {
    for bad in bad_keys(ctx) {
        let b = bad.as_str();
        expect_invalid_key!(store.watch(b).await.map(|_| "a watch stream"), b, "watch");
    }
    nothing_stored(store, ctx).await
}

/// watch_tree with invalid prefixes.
pub async fn invalid_prefixes_watch_tree(store: &dyn Store, ctx: &Ctx) -> Outcome {
    for bad in bad_prefixes(ctx) {
        let b = bad.as_str();
        expect_invalid_key!(
            store.watch_tree(b).await.map(|_| "a tree watch stream"),
            b,
            "watch_tree"
        );
    }
    nothing_stored(store, ctx).await
}

/// new_lock with invalid keys.
pub async fn invalid_keys_lock(store: &dyn Store, ctx: &Ctx) -> Outcome {
    for bad in bad_keys(ctx) {
        let b = bad.as_str();
        let r = within(
            &format!("new_lock({b:?}) to return"),
            DEADLINE,
            store.new_lock(b, LockOptions::with_value("v")),
        )
        .await?;
        expect_invalid_key!(r, b, "new_lock");
    }
    nothing_stored(store, ctx).await
}

/// txn with an invalid key in a compare, a put, a delete or a get.
pub async fn invalid_keys_txn(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let ok = ctx.key("ok");
    for bad in bad_keys(ctx) {
        let b = bad.as_str();
        let base = || Txn::new().put(ok.clone(), b"v".to_vec());
        expect_invalid_key!(
            store.txn(base().put(bad.clone(), b"v".to_vec())).await,
            b,
            "txn put"
        );
        expect_invalid_key!(store.txn(base().delete(bad.clone())).await, b, "txn delete");
        expect_invalid_key!(store.txn(base().get(bad.clone())).await, b, "txn get");
        expect_invalid_key!(
            store.txn(base().when_present(bad.clone())).await,
            b,
            "txn compare (present)"
        );
        expect_invalid_key!(
            store.txn(base().when_absent(bad.clone())).await,
            b,
            "txn compare (absent)"
        );
        expect_invalid_key!(
            store.txn(base().when_version(bad.clone(), 1)).await,
            b,
            "txn compare (version)"
        );
    }
    nothing_stored(store, ctx).await
}
