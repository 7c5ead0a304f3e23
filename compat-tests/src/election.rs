//! Leader election recipe (`kv_core::election`): one leader at a time with rising terms,
//! failover after loss, the loop form, abortable campaigns, and `observe`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kv_core::election::{observe, Candidate, ElectionEvent, Leader};
use kv_core::Store;

use crate::{
    must_not_complete, wait_for_state, within, Context, Ctx, Failure, Outcome, Task, DEADLINE,
};

fn ttl(ctx: &Ctx) -> Duration {
    ctx.short_ttl()
}

/// Three candidates (own handles) campaign twice each: never two leaders at once, each
/// leader's value is at the key while it leads, terms strictly increase in election order.
pub async fn one_leader_at_a_time(_store: &dyn Store, ctx: &Ctx) -> Outcome {
    let k = ctx.key("leader");
    let inside = Arc::new(AtomicUsize::new(0));
    let terms = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for n in 0..3 {
        let store = ctx.open_another().await?;
        let c = Candidate::new(store.clone(), k.clone(), format!("node-{n}"), ttl(ctx));
        let (inside, terms, k) = (inside.clone(), terms.clone(), k.clone());
        tasks.push(Task::spawn(async move {
            for round in 0..2 {
                let what = format!("node-{n} round {round}: campaign");
                let l = within(&what, Duration::from_secs(60), c.campaign())
                    .await?
                    .ok_or_fail(&what)?;
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    return Err(Failure::new(format!(
                        "node-{n} round {round} was elected while another leader was current"
                    )));
                }
                terms.lock().unwrap().push(l.term());
                let got = crate::state_of(&*store, &k).await?;
                check_eq!(
                    got,
                    Some((format!("node-{n}").into_bytes(), l.term())),
                    "the election key (value, version) while node-{n} leads"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                check!(!l.is_lost(), "node-{n} lost leadership unexpectedly");
                inside.fetch_sub(1, Ordering::SeqCst);
                l.resign().await.ok_or_fail("resign")?;
            }
            Ok::<(), Failure>(())
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        within(
            &format!("candidate {i} to finish"),
            Duration::from_secs(120),
            t,
        )
        .await???;
    }
    let terms = terms.lock().unwrap().clone();
    check_eq!(terms.len(), 6, "number of terms served");
    check!(
        terms.windows(2).all(|w| w[0] < w[1]),
        "terms do not strictly increase in election order: {terms:?}"
    );
    Ok(())
}

/// A leads, its lock is lost (key deleted) → `lost()` fires and B — waiting — is elected
/// with a higher term; a dropped campaign future never takes office. Then the loop form:
/// it waits while B leads, is `Elected` after B resigns, reports `Lost` when its key is
/// deleted and is `Elected` again with a higher term; dropping it resigns.
pub async fn failover_on_loss(_store: &dyn Store, ctx: &Ctx) -> Outcome {
    let (ha, hb, hc, hx) = (
        ctx.open_another().await?,
        ctx.open_another().await?,
        ctx.open_another().await?,
        ctx.open_another().await?,
    );
    let k = ctx.key("leader");
    let la = within(
        "A's campaign",
        DEADLINE,
        Candidate::new(ha.clone(), k.clone(), "a", ttl(ctx)).campaign(),
    )
    .await?
    .ok_or_fail("A's campaign")?;
    let ta = la.term();
    let b = Candidate::new(hb, k.clone(), "b", ttl(ctx));
    let mut b_campaign = Task::spawn(async move { b.campaign().await });
    // An abandoned campaign (dropped future) must leave no trace.
    let c = Candidate::new(hc.clone(), k.clone(), "c", ttl(ctx));
    must_not_complete(
        "C's campaign while A leads",
        Duration::from_millis(500),
        c.campaign(),
    )
    .await?;
    check!(!b_campaign.is_finished(), "B was elected while A leads");

    let t0 = Instant::now();
    hx.delete(&k).await.ok_or_fail("delete the election key")?;
    within("A's lost()", DEADLINE, la.lost()).await?;
    let lb = within("B to be elected after A's loss", DEADLINE, &mut b_campaign)
        .await??
        .ok_or_fail("B's campaign")?;
    eprintln!(
        "figure {}: leader's lock lost (key deleted) -> new leader after {:?}",
        ctx.scenario(),
        t0.elapsed()
    );
    check!(
        la.is_lost(),
        "A's Leadership::is_lost is false after the loss"
    );
    check!(
        lb.term() > ta,
        "B's term {} is not larger than A's {ta}",
        lb.term()
    );
    check_eq!(
        crate::state_of(&*hx, &k).await?.map(|(v, _)| v),
        Some(b"b".to_vec()),
        "the election key's value while B leads (C's abandoned campaign must not take it)"
    );
    drop(la);

    // The loop form.
    let mut r = Candidate::new(hc, k.clone(), "r", ttl(ctx)).run();
    must_not_complete(
        "the loop's first event while B leads",
        Duration::from_millis(300),
        r.next(),
    )
    .await?;
    let tb = lb.term();
    lb.resign().await.ok_or_fail("B resigns")?;
    let t1 = match within(
        "the loop to be elected after B resigned",
        DEADLINE,
        r.next(),
    )
    .await?
    {
        Some(ElectionEvent::Elected { term }) if term > tb => term,
        other => {
            return Err(Failure::new(format!(
                "the loop's event after B resigned (B's term {tb}): {other:?}"
            )))
        }
    };
    hx.delete(&k).await.ok_or_fail("delete the election key")?;
    match within("the loop's Lost event", DEADLINE, r.next()).await? {
        Some(ElectionEvent::Lost { term, .. }) if term == t1 => {}
        other => {
            return Err(Failure::new(format!(
                "the loop's event after the delete: {other:?}"
            )))
        }
    }
    match within("the loop to be elected again", DEADLINE, r.next()).await? {
        Some(ElectionEvent::Elected { term }) if term > t1 => {}
        other => {
            return Err(Failure::new(format!(
                "the loop's event after its loss (term {t1}): {other:?}"
            )))
        }
    }
    drop(r);
    // Dropping the loop resigns: the key frees itself.
    crate::eventually(
        "the key to be freed after the loop was dropped",
        DEADLINE,
        || {
            let hx = hx.clone();
            let k = k.clone();
            async move { Ok((!hx.exists(&k).await?).then_some(())) }
        },
    )
    .await?;
    Ok(())
}

/// `observe` reports the current leader (None, then each leader with its term), without
/// consecutive duplicates, and ends on the final leader.
pub async fn observe_follows_leader(_store: &dyn Store, ctx: &Ctx) -> Outcome {
    let (ha, hb, ho) = (
        ctx.open_another().await?,
        ctx.open_another().await?,
        ctx.open_another().await?,
    );
    let k = ctx.key("leader");
    let mut leaders = observe(ho, k.clone());
    let first = crate::wait_for_item(&mut leaders, DEADLINE, "observe's first item").await?;
    check_eq!(first, None, "observe's first item with no leader");
    let la = within(
        "A's campaign",
        DEADLINE,
        Candidate::new(ha, k.clone(), "a", ttl(ctx)).campaign(),
    )
    .await?
    .ok_or_fail("A's campaign")?;
    let want_a = Some(Leader {
        value: b"a".to_vec(),
        term: la.term(),
    });
    let mut seen = vec![first];
    seen.extend(
        wait_for_state(&mut leaders, DEADLINE, "observe to report A", |l| {
            *l == want_a
        })
        .await?,
    );
    let b = Candidate::new(hb, k.clone(), "b", ttl(ctx));
    let pending = Task::spawn(async move { b.campaign().await });
    la.resign().await.ok_or_fail("A resigns")?;
    let lb = within("B to be elected", DEADLINE, pending)
        .await??
        .ok_or_fail("B's campaign")?;
    let want_b = Some(Leader {
        value: b"b".to_vec(),
        term: lb.term(),
    });
    seen.extend(
        wait_for_state(
            &mut leaders,
            DEADLINE,
            "observe to report B (the final leader)",
            |l| *l == want_b,
        )
        .await?,
    );
    check!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "observe repeated an item: {seen:?}"
    );
    check!(
        seen.iter()
            .all(|l| l.is_none() || *l == want_a || *l == want_b),
        "observe reported a leader that never was: {seen:?}"
    );
    drop(lb);
    Ok(())
}
