//! Service discovery recipe (`kv_core::discovery`): registrations appear, stay alive past
//! their TTL, update, leave on deregister/drop, and a crashed instance expires.

use std::time::{Duration, Instant};

use kv_core::discovery::{instances, register, watch_instances, Instance};
use kv_core::Store;

use crate::{
    throughout, wait_for_item, wait_for_state, Context, Ctx, Outcome, DEADLINE, TTL_GRACE,
};

fn set(items: &[(&str, &str)]) -> Vec<Instance> {
    items
        .iter()
        .map(|(id, p)| Instance {
            id: id.to_string(),
            payload: p.as_bytes().to_vec(),
        })
        .collect()
}

/// Register two instances, see them in `instances` and `watch_instances` (first item the
/// current set, no consecutive duplicates), stay registered past the TTL, update a payload,
/// deregister one, drop the other.
pub async fn register_update_deregister(store: &dyn Store, ctx: &Ctx) -> Outcome {
    let (h1, h2, hw) = (
        ctx.open_another().await?,
        ctx.open_another().await?,
        ctx.open_another().await?,
    );
    let svc = ctx.key("api");
    let ttl = ctx.short_ttl();
    // Noise that is not an instance: the service key itself and a deeper key.
    store
        .put(
            &format!("{svc}/x/deeper"),
            b"not an instance",
            Default::default(),
        )
        .await
        .ok_or_fail("put a deeper key")?;
    let mut sets = watch_instances(hw, &svc);
    let first = wait_for_item(&mut sets, DEADLINE, "watch_instances' first item").await?;
    check_eq!(
        first,
        Vec::<Instance>::new(),
        "first set (no instances yet)"
    );
    let mut seen = vec![first];

    let a = register(h1, &svc, "a", "10.0.0.1:80", ttl)
        .await
        .ok_or_fail("register a")?;
    check_eq!(a.key(), format!("{svc}/a"), "Registration::key");
    let b = register(h2, &svc, "b", "10.0.0.2:80", ttl)
        .await
        .ok_or_fail("register b")?;
    let both = set(&[("a", "10.0.0.1:80"), ("b", "10.0.0.2:80")]);
    check_eq!(
        instances(store, &svc).await?,
        both,
        "instances after two registrations"
    );
    seen.extend(wait_for_state(&mut sets, DEADLINE, "the set {a, b}", |s| *s == both).await?);

    // Keep-alive: still registered after more than one TTL.
    throughout(ttl + Duration::from_secs(1), || async {
        let now = instances(store, &svc).await?;
        check_eq!(
            now,
            both,
            "instances while both registrations are alive (past their TTL)"
        );
        Ok(())
    })
    .await?;

    a.update("10.0.0.1:8080")
        .await
        .ok_or_fail("update a's payload")?;
    let updated = set(&[("a", "10.0.0.1:8080"), ("b", "10.0.0.2:80")]);
    check_eq!(
        instances(store, &svc).await?,
        updated,
        "instances after the update"
    );
    seen.extend(wait_for_state(&mut sets, DEADLINE, "the updated set", |s| *s == updated).await?);

    b.deregister().await.ok_or_fail("deregister b")?;
    let only_a = set(&[("a", "10.0.0.1:8080")]);
    check_eq!(
        instances(store, &svc).await?,
        only_a,
        "instances after deregister"
    );
    seen.extend(wait_for_state(&mut sets, DEADLINE, "the set {a}", |s| *s == only_a).await?);

    let t0 = Instant::now();
    drop(a);
    seen.extend(
        wait_for_state(
            &mut sets,
            DEADLINE,
            "the empty set after a was dropped",
            |s| s.is_empty(),
        )
        .await?,
    );
    eprintln!(
        "figure {}: dropped registration -> removed after {:?}",
        ctx.scenario(),
        t0.elapsed()
    );
    check!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "watch_instances repeated a set: {seen:?}"
    );
    Ok(())
}

/// An instance whose process stops refreshing (its handle closed: a crash stand-in) leaves
/// `watch_instances` within about its TTL.
pub async fn crashed_instance_expires(_store: &dyn Store, ctx: &Ctx) -> Outcome {
    let (h1, hw) = (ctx.open_another().await?, ctx.open_another().await?);
    let svc = ctx.key("api");
    let ttl = ctx.short_ttl();
    let mut sets = watch_instances(hw, &svc);
    let reg = register(h1.clone(), &svc, "crashy", "addr", ttl)
        .await
        .ok_or_fail("register")?;
    wait_for_state(&mut sets, DEADLINE, "the registered instance", |s| {
        s.len() == 1
    })
    .await?;
    let t0 = Instant::now();
    h1.close()
        .await
        .ok_or_fail("close the registering handle")?;
    wait_for_state(
        &mut sets,
        ttl + TTL_GRACE,
        &format!("the crashed instance to leave within its TTL of {ttl:?} + grace"),
        |s| s.is_empty(),
    )
    .await?;
    eprintln!(
        "figure {}: crashed instance -> removed after {:?} (ttl {ttl:?})",
        ctx.scenario(),
        t0.elapsed()
    );
    drop(reg);
    Ok(())
}
