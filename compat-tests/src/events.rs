//! `watch_events`: the typed, resumable event stream.

use std::collections::BTreeMap;
use std::time::Instant;

use kv_core::{Cursor, EventStream, KvPair, PutOptions, Store, Txn, WatchEvent};

use crate::{short_debug, wait_for_item, Context, Ctx, Failure, Outcome, DEADLINE, TTL_GRACE};

/// A reader's view of the subtree, rebuilt from the items only.
#[derive(Default)]
struct Model {
    pairs: BTreeMap<String, (Vec<u8>, u64)>,
    cursor: Option<Cursor>,
}

impl Model {
    /// Applies one item; fails when a cursor goes backwards outside a `Resync`.
    fn apply(&mut self, item: &WatchEvent) -> Outcome {
        let c = item.cursor();
        match item {
            WatchEvent::Resync { pairs, .. } => {
                self.pairs = pairs
                    .iter()
                    .map(|p| (p.key.clone(), (p.value.clone(), p.version)))
                    .collect();
            }
            WatchEvent::Put { pair, .. } => {
                check!(
                    self.cursor.map_or(true, |old| c >= old),
                    "cursor went back from {:?} to {c:?} on {}",
                    self.cursor,
                    short_debug(item)
                );
                self.pairs
                    .insert(pair.key.clone(), (pair.value.clone(), pair.version));
            }
            WatchEvent::Delete { key, .. } => {
                check!(
                    self.cursor.map_or(true, |old| c >= old),
                    "cursor went back from {:?} to {c:?} on {}",
                    self.cursor,
                    short_debug(item)
                );
                self.pairs.remove(key);
            }
            _ => return Err(Failure::new(format!("unknown item {}", short_debug(item)))),
        }
        self.cursor = Some(c);
        Ok(())
    }

    fn same_as(&self, list: &[KvPair]) -> bool {
        self.pairs.len() == list.len()
            && list
                .iter()
                .all(|p| self.pairs.get(&p.key) == Some(&(p.value.clone(), p.version)))
    }
}

/// Reads items into `model` until it equals the store's `list(prefix)`.
async fn converge(
    store: &dyn Store,
    prefix: &str,
    stream: &mut EventStream,
    model: &mut Model,
    what: &str,
) -> Outcome {
    let start = Instant::now();
    loop {
        let truth = store.list(prefix).await.ok_or_fail("list")?;
        if model.same_as(&truth) {
            return Ok(());
        }
        let left = DEADLINE.saturating_sub(start.elapsed());
        check!(
            !left.is_zero(),
            "{what}: the events never rebuilt the subtree: model {:?}, list {}",
            model.pairs.keys().collect::<Vec<_>>(),
            short_debug(&truth)
        );
        // Short waits, so that a state reached without a further item is seen by `list`.
        let wait = left.min(std::time::Duration::from_millis(500));
        if let Ok(item) = tokio::time::timeout(wait, wait_for_item(stream, DEADLINE, what)).await {
            model.apply(&item?)?;
        }
    }
}

/// The next Put/Delete of `key` (a Resync is applied and skipped).
async fn next_of(stream: &mut EventStream, model: &mut Model, key: &str) -> Outcome<WatchEvent> {
    loop {
        let item = wait_for_item(stream, DEADLINE, &format!("the event for {key}")).await?;
        model.apply(&item)?;
        match item.key() {
            Some(k) if k == key => return Ok(item),
            Some(k) => return Err(Failure::new(format!("an event for {k} before {key}"))),
            None => continue,
        }
    }
}

/// First a Resync of the subtree, then one event per write in order, explicit deletes, and
/// nothing from outside the subtree (the prefix key itself, a sibling, `prefixX`).
pub async fn order_and_deletes(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let p = ctx.key("ev");
    store
        .put(&format!("{p}/old"), b"o", PutOptions::default())
        .await?;
    let mut s = store
        .watch_events(&p, None)
        .await
        .ok_or_fail("watch_events")?;
    let mut m = Model::default();
    let first = wait_for_item(&mut s, DEADLINE, "the first item").await?;
    check!(
        matches!(&first, WatchEvent::Resync { pairs, .. } if pairs.len() == 1),
        "the first item is a Resync of the one existing key, got {}",
        short_debug(&first)
    );
    m.apply(&first)?;
    for (i, k) in ["a", "b/c", "a"].iter().enumerate() {
        store.put(&p, b"prefix key", PutOptions::default()).await?;
        store
            .put(&format!("{p}X/{k}"), b"x", PutOptions::default())
            .await?;
        let key = format!("{p}/{k}");
        let put = store
            .put(&key, format!("{i}").as_bytes(), PutOptions::default())
            .await?;
        match next_of(&mut s, &mut m, &key).await? {
            WatchEvent::Put { pair, .. } => check_eq!(pair, put, "the Put event of write #{i}"),
            other => {
                return Err(Failure::new(format!(
                    "expected a Put, got {}",
                    short_debug(&other)
                )))
            }
        }
    }
    store.delete(&format!("{p}/old")).await?;
    let ev = next_of(&mut s, &mut m, &format!("{p}/old")).await?;
    check!(
        matches!(ev, WatchEvent::Delete { .. }),
        "a delete is an explicit Delete event, got {}",
        short_debug(&ev)
    );
    store
        .txn(
            Txn::new()
                .put(format!("{p}/t1"), "1")
                .put(format!("{p}/t2"), "2"),
        )
        .await?;
    converge(store, &p, &mut s, &mut m, "after a transaction").await
}

/// Under concurrent writes and deletes, the items alone rebuild the subtree exactly (a
/// backend that coalesces may skip states but never leaves a gap without a Resync).
pub async fn no_gaps(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let p = ctx.key("gap");
    let mut s = store
        .watch_events(&p, None)
        .await
        .ok_or_fail("watch_events")?;
    let mut m = Model::default();
    m.apply(&wait_for_item(&mut s, DEADLINE, "the first item").await?)?;
    let writer = ctx.open_another().await?;
    let prefix = p.clone();
    let task = tokio::spawn(async move {
        for i in 0..60u32 {
            let k = format!("{prefix}/k{}", i % 7);
            let r = if i % 5 == 4 {
                writer
                    .delete(&k)
                    .await
                    .or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) })
            } else {
                writer
                    .put(&k, format!("{i}").as_bytes(), PutOptions::default())
                    .await
                    .map(|_| ())
            };
            r?;
        }
        kv_core::Result::Ok(())
    });
    task.await
        .map_err(|e| Failure::new(format!("writer task: {e}")))?
        .ok_or_fail("the concurrent writes")?;
    converge(store, &p, &mut s, &mut m, "after 60 concurrent writes").await
}

/// A saved cursor resumes after the stream and its store handle are gone: the changes made
/// meanwhile arrive (as events, or a Resync where the backend cannot replay).
pub async fn resume_from_cursor(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let p = ctx.key("resume");
    let first = ctx.open_another().await?;
    first
        .put(&format!("{p}/keep"), b"1", PutOptions::default())
        .await?;
    first
        .put(&format!("{p}/gone"), b"1", PutOptions::default())
        .await?;
    let mut s = first
        .watch_events(&p, None)
        .await
        .ok_or_fail("watch_events")?;
    let mut m = Model::default();
    converge(&*first, &p, &mut s, &mut m, "the first stream").await?;
    first
        .put(&format!("{p}/seen"), b"1", PutOptions::default())
        .await?;
    converge(
        &*first,
        &p,
        &mut s,
        &mut m,
        "the first stream, one more put",
    )
    .await?;
    let saved = m.cursor.ok_or_else(|| Failure::new("no cursor seen"))?;
    drop(s);
    first.close().await.ok_or_fail("closing the first handle")?;
    // Changes while nobody watches.
    store.delete(&format!("{p}/gone")).await?;
    store
        .put(&format!("{p}/keep"), b"2", PutOptions::default())
        .await?;
    store
        .put(&format!("{p}/new"), b"1", PutOptions::default())
        .await?;
    let again = ctx.open_another().await?;
    let mut s = again
        .watch_events(&p, Some(saved))
        .await
        .ok_or_fail("watch_events from a saved cursor")?;
    converge(&*again, &p, &mut s, &mut m, "the resumed stream").await
}

/// A TTL key's expiry arrives as an explicit Delete.
pub async fn ttl_expiry_is_a_delete(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let p = ctx.key("ttl");
    let k = format!("{p}/k");
    let mut s = store
        .watch_events(&p, None)
        .await
        .ok_or_fail("watch_events")?;
    let mut m = Model::default();
    m.apply(&wait_for_item(&mut s, DEADLINE, "the first item").await?)?;
    let ttl = ctx.short_ttl();
    store.put(&k, b"v", PutOptions::with_ttl(ttl)).await?;
    check!(
        matches!(next_of(&mut s, &mut m, &k).await?, WatchEvent::Put { .. }),
        "the TTL put is a Put event"
    );
    let start = Instant::now();
    let deadline = ttl + TTL_GRACE;
    let ev = loop {
        let item = wait_for_item(&mut s, deadline, "the expiry").await?;
        m.apply(&item)?;
        if item.key() == Some(k.as_str()) {
            break item;
        }
        check!(
            start.elapsed() < deadline,
            "no expiry event within {deadline:?}"
        );
    };
    check!(
        matches!(ev, WatchEvent::Delete { .. }),
        "the expiry is a Delete event, got {}",
        short_debug(&ev)
    );
    Ok(())
}
