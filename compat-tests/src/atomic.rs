//! atomic_put and atomic_delete.

use kv_core::{Error, KvPair, PutOptions, Store};

use crate::{state_of, Context, Ctx, Failure, Outcome};

/// Fails unless `e` is `KeyModified` naming `key` with the given (expected, actual) versions.
fn check_key_modified(e: Error, key: &str, expected: u64, actual: u64) -> Outcome {
    let got = match e {
        Error::KeyModified {
            key,
            expected,
            actual,
        } => (key, expected, actual),
        other => return Err(Failure::new(format!("expected KeyModified, got {other:?}"))),
    };
    check_eq!(
        got,
        (key.to_string(), expected, actual),
        "KeyModified (key, expected, actual)"
    );
    Ok(())
}

/// Create-only: succeeds when absent, KeyExists (value untouched) when present.
pub async fn create_only(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("c");
    let created = store
        .atomic_put(&format!("/{k}/"), b"first", None, PutOptions::default())
        .await
        .ok_or_fail("create-only atomic_put of an absent key")?;
    check_eq!(created.key, k, "key returned by atomic_put");
    check_eq!(
        created.value,
        b"first".to_vec(),
        "value returned by atomic_put"
    );
    check!(created.version != 0, "atomic_put returned version 0");
    check_eq!(
        store.get(&k).await?,
        created,
        "get after create-only atomic_put"
    );
    let e = expect_err!(
        store
            .atomic_put(&k, b"second", None, PutOptions::default())
            .await,
        Error::KeyExists { .. },
        "create-only atomic_put of an existing key"
    );
    if let Error::KeyExists { key } = e {
        check_eq!(key, k, "key named by KeyExists");
    }
    check_eq!(
        store.get(&k).await?,
        created,
        "pair after the failed create-only write"
    );
    Ok(())
}

/// Create-only of a nested key whose parents do not exist.
pub async fn create_nested(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("x/y/z");
    let created = store
        .atomic_put(&k, b"deep", None, PutOptions::default())
        .await
        .ok_or_fail("create-only atomic_put of a key with missing parents")?;
    check_eq!(created.key, k, "key returned");
    check_eq!(
        store.get(&k).await?.value,
        b"deep".to_vec(),
        "value read back"
    );
    for parent in [ctx.key("x/y"), ctx.key("x")] {
        check!(
            !store.exists(&parent).await?,
            "creating {k:?} made the parent {parent:?} a key"
        );
    }
    check_eq!(
        crate::keys_of(&store.list(ctx.prefix()).await?),
        vec![k.clone()],
        "list after creating a nested key"
    );
    Ok(())
}

/// CAS with the current pair succeeds with a greater version; a stale pair is KeyModified.
pub async fn compare_and_swap(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("cas");
    let v1 = store.put(&k, b"v1", PutOptions::default()).await?;
    let v2 = store
        .atomic_put(&k, b"v2", Some(&v1), PutOptions::default())
        .await
        .ok_or_fail("CAS with the current pair")?;
    check_eq!(v2.key, k, "key returned by CAS");
    check_eq!(v2.value, b"v2".to_vec(), "value returned by CAS");
    check!(
        v2.version > v1.version,
        "CAS returned version {} not above the previous {}",
        v2.version,
        v1.version
    );
    check_eq!(store.get(&k).await?, v2, "get after CAS");
    // A previous pair given with a slash variant of the key is the same key.
    let mut v2_slashed = v2.clone();
    v2_slashed.key = format!("/{k}/");
    let v3 = store
        .atomic_put(&k, b"v3", Some(&v2_slashed), PutOptions::default())
        .await
        .ok_or_fail("CAS with a previous pair whose key has slashes")?;
    check!(v3.version > v2.version, "version did not grow on CAS");
    // Stale: v1 and v2 are both old now.
    for stale in [&v1, &v2] {
        let e = expect_err!(
            store
                .atomic_put(&k, b"lost", Some(stale), PutOptions::default())
                .await,
            Error::KeyModified { .. },
            "CAS with a stale pair (version {})",
            stale.version
        );
        check_key_modified(e, &k, stale.version, v3.version)?;
    }
    // A modification by a plain put makes the last pair stale too.
    let v4 = store.put(&k, b"v4", PutOptions::default()).await?;
    expect_err!(
        store
            .atomic_put(&k, b"lost", Some(&v3), PutOptions::default())
            .await,
        Error::KeyModified { .. },
        "CAS after a concurrent put"
    );
    check_eq!(store.get(&k).await?, v4, "pair after the failed CAS");
    Ok(())
}

/// CAS on a deleted key is NotFound; the key stays absent.
pub async fn cas_on_deleted_key(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("gone");
    let p = store.put(&k, b"v", PutOptions::default()).await?;
    store.delete(&k).await?;
    expect_err!(
        store
            .atomic_put(&k, b"again", Some(&p), PutOptions::default())
            .await,
        Error::NotFound { .. },
        "CAS on a deleted key"
    );
    check!(
        !store.exists(&k).await?,
        "CAS on a deleted key re-created it"
    );
    expect_err!(
        store.atomic_delete(&k, &p).await,
        Error::NotFound { .. },
        "atomic_delete of a deleted key"
    );
    // A pair never written (a made-up version) on a missing key is NotFound as well.
    let made_up = KvPair::new(k.clone(), b"x".to_vec(), p.version + 1000);
    expect_err!(
        store
            .atomic_put(&k, b"again", Some(&made_up), PutOptions::default())
            .await,
        Error::NotFound { .. },
        "CAS on a missing key"
    );
    check!(!store.exists(&k).await?, "CAS on a missing key created it");
    Ok(())
}

/// A previous pair for another key is InvalidArgument; nothing changes.
pub async fn previous_for_other_key(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let a = ctx.key("a");
    let b = ctx.key("b");
    let pa = store.put(&a, b"a", PutOptions::default()).await?;
    let pb = store.put(&b, b"b", PutOptions::default()).await?;
    expect_err!(
        store
            .atomic_put(&a, b"x", Some(&pb), PutOptions::default())
            .await,
        Error::InvalidArgument { .. },
        "atomic_put of {a:?} with the pair of {b:?}"
    );
    expect_err!(
        store.atomic_delete(&a, &pb).await,
        Error::InvalidArgument { .. },
        "atomic_delete of {a:?} with the pair of {b:?}"
    );
    // Even when the versions happen to match, the key decides.
    let same_version = KvPair::new(b.clone(), b"a".to_vec(), pa.version);
    expect_err!(
        store
            .atomic_put(&a, b"x", Some(&same_version), PutOptions::default())
            .await,
        Error::InvalidArgument { .. },
        "atomic_put with a pair for another key carrying the right version"
    );
    check_eq!(
        state_of(store, &a).await?,
        Some((pa.value.clone(), pa.version)),
        "{a:?} after the rejected calls"
    );
    check_eq!(
        state_of(store, &b).await?,
        Some((pb.value.clone(), pb.version)),
        "{b:?} after the rejected calls"
    );
    Ok(())
}

/// atomic_delete: stale is KeyModified (not NotFound), correct deletes, repeat is NotFound.
pub async fn atomic_delete(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("d");
    let v1 = store.put(&k, b"v1", PutOptions::default()).await?;
    let v2 = store.put(&k, b"v2", PutOptions::default()).await?;
    let e = expect_err!(
        store.atomic_delete(&k, &v1).await,
        Error::KeyModified { .. },
        "atomic_delete with a stale pair"
    );
    check_key_modified(e, &k, v1.version, v2.version)?;
    check_eq!(
        store.get(&k).await?,
        v2,
        "pair after a failed atomic_delete"
    );
    store
        .atomic_delete(&format!("/{k}"), &v2)
        .await
        .ok_or_fail("atomic_delete with the current pair")?;
    check!(!store.exists(&k).await?, "{k:?} exists after atomic_delete");
    expect_err!(
        store.atomic_delete(&k, &v2).await,
        Error::NotFound { .. },
        "repeated atomic_delete"
    );
    // Children are not touched.
    let child = ctx.key("d/child");
    store.put(&child, b"c", PutOptions::default()).await?;
    let v3 = store.put(&k, b"v3", PutOptions::default()).await?;
    store
        .atomic_delete(&k, &v3)
        .await
        .ok_or_fail("atomic_delete of a key with a child")?;
    check!(
        store.exists(&child).await?,
        "atomic_delete removed the child {child:?}"
    );
    Ok(())
}
