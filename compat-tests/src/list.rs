//! list and delete_tree.

use kv_core::{PutOptions, Store};

use crate::{keys_of, Context, Ctx, Outcome};

/// Keys under `ctx.key("foo")` chosen so that bytewise order differs from "tree" order.
fn tree_rels() -> Vec<&'static str> {
    vec![
        "foo/b",
        "foo/a",
        "foo/a/x",
        "foo/a/x/y",
        "foo/a-b",
        "foo/a0",
        "foo/B",
        "foo/é",
        "foo/c",
    ]
}

async fn write_tree(store: &dyn Store, ctx: &Ctx) -> Outcome<Vec<String>> {
    let mut subtree = Vec::new();
    for rel in tree_rels() {
        let k = ctx.key(rel);
        store
            .put(&k, rel.as_bytes(), PutOptions::default())
            .await
            .ok_or_fail(&format!("put {k:?}"))?;
        subtree.push(k);
    }
    // The prefix key itself and a sibling sharing its leading bytes.
    for rel in ["foo", "foobar", "foobar/x", "fo"] {
        store
            .put(&ctx.key(rel), rel.as_bytes(), PutOptions::default())
            .await
            .ok_or_fail(&format!("put {rel}"))?;
    }
    subtree.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(subtree)
}

/// list returns the whole subtree in bytewise order, without the prefix or siblings.
pub async fn subtree_in_key_order(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let expected = write_tree(store, ctx).await?;
    let subtree = ctx.key("foo");
    for prefix in [
        subtree.clone(),
        format!("/{subtree}"),
        format!("{subtree}/"),
        format!("/{subtree}/"),
    ] {
        let listed = store
            .list(&prefix)
            .await
            .ok_or_fail(&format!("list {prefix:?}"))?;
        check_eq!(keys_of(&listed), expected, "keys of list({prefix:?}) (bytewise order, nested included, prefix and 'foobar' sibling excluded)");
        for p in &listed {
            let rel = p
                .key
                .strip_prefix(&format!("{}/", ctx.prefix()))
                .unwrap_or(&p.key);
            check_eq!(p.value_str(), rel, "value listed for {:?}", p.key);
            let got = store.get(&p.key).await?;
            check_eq!(
                p.version,
                got.version,
                "version listed for {:?} vs get",
                p.key
            );
        }
    }
    let deep = store.list(&ctx.key("foo/a")).await?;
    check_eq!(
        keys_of(&deep),
        vec![ctx.key("foo/a/x"), ctx.key("foo/a/x/y")],
        "list of a nested prefix"
    );
    Ok(())
}

/// An empty subtree lists as an empty vector, also under an existing key.
pub async fn empty_subtree(store: &dyn Store, ctx: &Ctx) -> Outcome {
    check_eq!(
        keys_of(
            &store
                .list(&ctx.key("nothing/here"))
                .await
                .ok_or_fail("list of an empty subtree")?
        ),
        Vec::<String>::new(),
        "list of a subtree nobody wrote"
    );
    store
        .put(&ctx.key("leaf"), b"v", PutOptions::default())
        .await?;
    store
        .put(&ctx.key("leafy"), b"v", PutOptions::default())
        .await?;
    check_eq!(
        keys_of(
            &store
                .list(&ctx.key("leaf"))
                .await
                .ok_or_fail("list under a leaf key")?
        ),
        Vec::<String>::new(),
        "list under a key without children"
    );
    Ok(())
}

/// The list of the scenario's own prefix is exactly what it wrote.
pub async fn own_prefix_exact(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let mut expected = write_tree(store, ctx).await?;
    for rel in ["foo", "foobar", "foobar/x", "fo"] {
        expected.push(ctx.key(rel));
    }
    expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let listed = store
        .list(ctx.prefix())
        .await
        .ok_or_fail("list own prefix")?;
    check_eq!(keys_of(&listed), expected, "list of the scenario's prefix");
    // The namespace root lists it too (other scenarios' keys may be there as well).
    let all = store
        .list("")
        .await
        .ok_or_fail("list of the whole namespace")?;
    let mine: Vec<String> = keys_of(&all)
        .into_iter()
        .filter(|k| k.starts_with(&format!("{}/", ctx.prefix())))
        .collect();
    check_eq!(mine, expected, "this scenario's keys in list(\"\")");
    let mut sorted = keys_of(&all);
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    check!(
        sorted == keys_of(&all),
        "list(\"\") is not in bytewise key order"
    );
    Ok(())
}

/// delete_tree removes the subtree, keeps the prefix key and siblings.
pub async fn delete_tree_subtree(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let written = write_tree(store, ctx).await?;
    let top = ctx.key("foo");
    store
        .delete_tree(&format!("/{top}/"))
        .await
        .ok_or_fail("delete_tree")?;
    check_eq!(
        keys_of(&store.list(&top).await?),
        Vec::<String>::new(),
        "list after delete_tree"
    );
    for k in &written {
        check!(!store.exists(k).await?, "{k:?} survived delete_tree");
    }
    for rel in ["foo", "foobar", "foobar/x", "fo"] {
        let k = ctx.key(rel);
        check!(
            store.exists(&k).await?,
            "delete_tree({top:?}) removed {k:?}, which is outside the subtree"
        );
    }
    let left = store.list(ctx.prefix()).await?;
    check_eq!(
        keys_of(&left),
        vec![
            ctx.key("fo"),
            ctx.key("foo"),
            ctx.key("foobar"),
            ctx.key("foobar/x")
        ],
        "what is left under the scenario prefix"
    );
    Ok(())
}

/// delete_tree of an empty subtree is Ok and touches nothing.
pub async fn delete_tree_empty(store: &dyn Store, ctx: &Ctx) -> Outcome {
    store
        .delete_tree(&ctx.key("nothing"))
        .await
        .ok_or_fail("delete_tree of a subtree nobody wrote")?;
    let leaf = ctx.key("leaf");
    store.put(&leaf, b"v", PutOptions::default()).await?;
    store
        .delete_tree(&leaf)
        .await
        .ok_or_fail("delete_tree under a leaf key")?;
    check!(
        store.exists(&leaf).await?,
        "delete_tree({leaf:?}) removed the key itself"
    );
    Ok(())
}
