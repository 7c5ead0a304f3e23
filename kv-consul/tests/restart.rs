//! Restarting Consul during active watches: every final state is delivered.

mod common;

use std::time::Duration;

use common::{next_ok, until};
use futures::StreamExt;
use kv_consul::ConsulStore;
use kv_core::{PutOptions, Store, WatchEvent};
use kv_testkit::consul::{Consul, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_survive_a_restart() {
    let Some(mut consul) = Consul::start(Options::default()).await else {
        return;
    };
    let url = format!("consul://{}/restart?timeout=3s", consul.addr());
    let s = ConsulStore::from_url(&url).await.unwrap();
    let mut w = s.watch("r/k").await.unwrap();
    let mut wt = s.watch_tree("r").await.unwrap();
    assert_eq!(next_ok(&mut w, Duration::from_secs(10)).await, None);
    assert!(next_ok(&mut wt, Duration::from_secs(10)).await.is_empty());
    let v1 = s.put("r/k", b"1", PutOptions::default()).await.unwrap();
    assert_eq!(
        next_ok(&mut w, Duration::from_secs(10)).await,
        Some(v1.clone())
    );
    assert_eq!(
        next_ok(&mut wt, Duration::from_secs(10)).await,
        vec![v1.clone()]
    );

    for round in 0..2 {
        consul.kill();
        // The outage is visible as an error, never as the end of the stream.
        let e = s.get("r/k").await.unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        consul.restart().await;
        let k = s
            .put(
                "r/k",
                format!("after restart {round}").as_bytes(),
                PutOptions::default(),
            )
            .await
            .unwrap();
        let j = s
            .put(&format!("r/j{round}"), b"j", PutOptions::default())
            .await
            .unwrap();
        let got = until(&mut w, Duration::from_secs(60), |v| v.as_ref() == Some(&k)).await;
        assert_eq!(got.unwrap().value, k.value);
        let snap = until(&mut wt, Duration::from_secs(60), |v| {
            v.contains(&k) && v.contains(&j)
        })
        .await;
        assert!(snap.windows(2).all(|p| p[0].key < p[1].key));
    }
    s.delete("r/k").await.unwrap();
    until(&mut w, Duration::from_secs(30), |v| v.is_none()).await;
    s.close().await.unwrap();
}

/// An agent that lost its state (empty data dir: the index starts again, lower than before)
/// gives a typed stream a `Resync`, not events that pretend nothing was missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_reset_gives_a_resync() {
    let Some(mut consul) = Consul::start(Options::default()).await else {
        return;
    };
    let url = format!("consul://{}/reset?timeout=3s", consul.addr());
    let s = ConsulStore::from_url(&url).await.unwrap();
    // Raise the index well above what a fresh agent reaches in the test.
    for i in 0..30 {
        s.put(&format!("other/{i}"), b"x", PutOptions::default())
            .await
            .unwrap();
    }
    let before = s.put("r/old", b"1", PutOptions::default()).await.unwrap();
    let mut ev = s.watch_events("r", None).await.unwrap();
    match next_ok(&mut ev, Duration::from_secs(10)).await {
        WatchEvent::Resync { pairs, .. } => assert_eq!(pairs, vec![before.clone()]),
        other => panic!("first item {other:?}"),
    }
    consul.restart_empty().await;
    let new = loop {
        match s.put("r/new", b"2", PutOptions::default()).await {
            Ok(p) => break p,
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("put after the restart: {e}"),
        }
    };
    assert!(
        new.version < before.version,
        "the index was reset: {new:?} after {before:?}"
    );
    // A Resync must come before any event (the old state is gone), then the stream follows
    // the new agent: the Resync may come before `r/new` was written, and `r/new` then as an
    // event.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut state: Option<Vec<kv_core::KvPair>> = None;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, ev.next()).await {
            Ok(Some(Ok(WatchEvent::Resync { pairs, .. }))) => state = Some(pairs),
            Ok(Some(Ok(WatchEvent::Put { pair, .. }))) => match &mut state {
                Some(st) => {
                    st.retain(|p| p.key != pair.key);
                    st.push(pair);
                    st.sort_by(|a, b| a.key.cmp(&b.key));
                }
                None => panic!("an event before the Resync after the reset: {pair:?}"),
            },
            Ok(Some(Ok(other))) => panic!("unexpected item after the reset: {other:?}"),
            Ok(Some(Err(e))) => eprintln!("error item while the agent restarts: {e}"),
            Ok(None) => panic!("the stream ended"),
            Err(_) => panic!("no Resync and then only r/new within 60 s (state {state:?})"),
        }
        if state.as_deref() == Some(std::slice::from_ref(&new)) {
            break;
        }
    }
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_gives_timeouts_then_recovers() {
    let Some(consul) = Consul::start(Options::default()).await else {
        return;
    };
    let url = format!("consul://{}/frozen?timeout=2s", consul.addr());
    let s = ConsulStore::from_url(&url).await.unwrap();
    let mut w = s.watch("k").await.unwrap();
    assert_eq!(next_ok(&mut w, Duration::from_secs(10)).await, None);
    consul.process.pause();
    let t0 = std::time::Instant::now();
    // The frozen agent still holds this request in its socket buffer and may apply it after
    // SIGCONT, racing the put below ("may or may not have happened"), so it goes to another key.
    let e = s
        .put("timed-out", b"1", PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, kv_core::Error::Timeout { .. }), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    let e = s.get("k").await.unwrap_err();
    assert!(matches!(e, kv_core::Error::Timeout { .. }), "{e:?}");
    consul.process.resume();
    let p = s.put("k", b"2", PutOptions::default()).await.unwrap();
    let got = until(&mut w, Duration::from_secs(60), |v| v.as_ref() == Some(&p)).await;
    assert_eq!(got.unwrap().value, b"2");
}
