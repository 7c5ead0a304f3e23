//! Values: empty, binary, unicode keys, the size limit.

use kv_core::{Error, PutOptions, Store, Txn};

use crate::{Context, Ctx, Outcome};

/// An empty value is a value: the key exists and reads back empty.
pub async fn empty_value(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("empty");
    let put = store
        .put(&k, b"", PutOptions::default())
        .await
        .ok_or_fail("put empty value")?;
    check!(
        put.value.is_empty(),
        "put returned a non-empty value {:?}",
        put.value
    );
    check!(
        store.exists(&k).await?,
        "a key with an empty value does not exist"
    );
    let got = store.get(&k).await.ok_or_fail("get empty value")?;
    check_eq!(got.value, Vec::<u8>::new(), "value read back");
    let listed = store.list(ctx.prefix()).await?;
    check_eq!(
        crate::keys_of(&listed),
        vec![k.clone()],
        "list shows the empty-valued key"
    );
    check!(
        listed[0].value.is_empty(),
        "list returned a non-empty value for it"
    );
    Ok(())
}

/// Every byte value round-trips.
pub async fn binary_value(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("bin");
    let mut value: Vec<u8> = (0..=255u8).collect();
    value.extend((0..=255u8).rev());
    let put = store
        .put(&k, &value, PutOptions::default())
        .await
        .ok_or_fail("put binary")?;
    check_eq!(put.value, value, "value returned by put");
    check_eq!(store.get(&k).await?.value, value, "binary value read back");
    let listed = store.list(ctx.prefix()).await?;
    check_eq!(
        listed.first().map(|p| p.value.clone()),
        Some(value.clone()),
        "binary value in list"
    );
    Ok(())
}

/// Unicode keys (and punctuation, inner spaces) round-trip and list.
pub async fn unicode_keys(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let rels = [
        "ünï/çødé",
        "日本語/キー",
        "emoji/🦀",
        "punct/a b.c-d_e:f@g+h=i,j;k~l",
        "mixed/Ωμέγα",
    ];
    let mut expected = Vec::new();
    for (i, rel) in rels.iter().enumerate() {
        let k = ctx.key(rel);
        let v = format!("value {i} ✓");
        let put = store
            .put(&k, v.as_bytes(), PutOptions::default())
            .await
            .ok_or_fail(&format!("put {k:?}"))?;
        check_eq!(put.key, k, "key returned by put");
        let got = store.get(&k).await.ok_or_fail(&format!("get {k:?}"))?;
        check_eq!(got.key, k, "key returned by get");
        check_eq!(got.value_str(), v, "value of {k:?}");
        expected.push(k);
    }
    expected.sort();
    let listed = store.list(ctx.prefix()).await?;
    check_eq!(
        crate::keys_of(&listed),
        expected,
        "list of unicode keys (bytewise order)"
    );
    Ok(())
}

/// A value of exactly the limit is accepted; one byte more is ValueTooLarge naming both sizes.
pub async fn max_value_size(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let max = ctx.caps().max_value_size;
    check!(max > 0, "capabilities.max_value_size is 0");
    const TWO_MIB: usize = 2 << 20;
    let k = ctx.key("big");
    let size = if max <= TWO_MIB { max } else { 1 << 20 };
    let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let put = store
        .put(&k, &value, PutOptions::default())
        .await
        .ok_or_fail(&format!(
            "put of a {size}-byte value (max_value_size {max})"
        ))?;
    check!(
        put.value == value,
        "put returned another value ({} bytes) than written ({size})",
        put.value.len()
    );
    let got = store.get(&k).await.ok_or_fail("get big value")?;
    check!(
        got.value == value,
        "a {size}-byte value read back as {} bytes / different content",
        got.value.len()
    );
    if max > 64 << 20 {
        // Building max+1 bytes is not reasonable; the accepted size was still checked above.
        eprintln!(
            "SKIPPED part of {}: max_value_size is {max} bytes, too large to write \
             max_value_size + 1 bytes; ValueTooLarge is not checked",
            ctx.scenario()
        );
        return Ok(());
    }
    let too_big = vec![7u8; max + 1];
    let e = expect_err!(
        store.put(&k, &too_big, PutOptions::default()).await,
        Error::ValueTooLarge { .. },
        "put of max_value_size + 1 bytes"
    );
    if let Error::ValueTooLarge {
        key, size, max: m, ..
    } = &e
    {
        check_eq!(
            (size, m),
            (&(max + 1), &max),
            "sizes named by ValueTooLarge"
        );
        check_eq!(key, &k, "key named by ValueTooLarge");
        let msg = e.to_string();
        check!(
            msg.contains(&(max + 1).to_string()) && msg.contains(&max.to_string()),
            "message does not name both sizes: {msg}"
        );
    }
    let after = store.get(&k).await.ok_or_fail("get after rejected put")?;
    check!(
        after.value == value && after.version == put.version,
        "the rejected put changed the stored pair (version {} -> {})",
        put.version,
        after.version
    );
    expect_err!(
        store
            .atomic_put(&k, &too_big, Some(&after), PutOptions::default())
            .await,
        Error::ValueTooLarge { .. },
        "atomic_put of max_value_size + 1 bytes"
    );
    let fresh = ctx.key("fresh");
    expect_err!(
        store
            .atomic_put(&fresh, &too_big, None, PutOptions::default())
            .await,
        Error::ValueTooLarge { .. },
        "create-only atomic_put of max_value_size + 1 bytes"
    );
    check!(
        !store.exists(&fresh).await?,
        "a rejected create-only atomic_put stored {fresh:?}"
    );
    if ctx.caps().txn {
        expect_err!(
            store
                .txn(Txn::new().put(fresh.clone(), too_big.clone()))
                .await,
            Error::ValueTooLarge { .. },
            "txn put of max_value_size + 1 bytes"
        );
        check!(
            !store.exists(&fresh).await?,
            "a rejected txn stored {fresh:?}"
        );
    }
    let last = store.get(&k).await?;
    check_eq!(
        last.version,
        put.version,
        "version after every rejected write"
    );
    Ok(())
}
