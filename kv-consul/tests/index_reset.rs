//! A watch whose query group gets its first answer only after the agent's index went
//! backwards (an agent restarted with an empty data dir right after the watch's own read) must
//! still see the reset: the group's own index is 0 then, and only the watch's read knows the
//! old, higher index. A scripted HTTP agent makes the order certain.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kv_consul::{ConsulConfig, ConsulStore};
use kv_core::Store;

mod common;
use common::fake_agent::{serve, Answer};

/// The agent before its restart: key `k` = "old" at index 39.
const OLD: (&str, u64) = ("b2xk", 39);
/// After it: `k` = "new" at index 9.
const NEW: (&str, u64) = ("bmV3", 9);

/// A one-node "agent" that restarted empty between the first two reads of a key: the second
/// read to arrive gets [`OLD`] at once, the first gets [`NEW`] 300 ms later (its answer is
/// computed after the restart), every later one [`NEW`]; a blocking query at or above NEW's
/// index is held for a while (nothing changes), as Consul does. Returns the address and the
/// number of key reads.
async fn restarted_agent() -> (String, Arc<AtomicUsize>) {
    let reads = Arc::new(AtomicUsize::new(0));
    let count = reads.clone();
    let addr = serve(move |_method, target| {
        let count = count.clone();
        async move {
            let Some(rest) = target.strip_prefix("/v1/kv/") else {
                return Answer::ok(1, "\"127.0.0.1:8300\""); // /v1/status/leader
            };
            let (key, query) = rest.split_once('?').unwrap_or((rest, ""));
            let blocking_at = query
                .split('&')
                .find_map(|p| p.strip_prefix("index="))
                .and_then(|v| v.parse::<u64>().ok());
            if blocking_at.is_some_and(|i| i >= NEW.1) {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let n = count.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                // Answered after the second read: that one gets the old state.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let (value, index) = if n == 1 { OLD } else { NEW };
            Answer::ok(
                index,
                format!(
                    r#"[{{"Key":"{key}","Value":"{value}","Flags":0,"CreateIndex":{index},"ModifyIndex":{index},"LockIndex":0}}]"#
                ),
            )
        }
    })
    .await;
    (addr, reads)
}

/// The watch's read and its group's first query run together. When the watch's read gets the
/// old state (index 39) and the group's answers are all below it, the watch must still reach
/// the new state. If instead the group got the old state, the order under test did not happen:
/// rounds are repeated until it happened three times, each with a new agent and store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_began_after_the_reset_still_sees_it() {
    let mut reached = 0;
    for round in 0..30 {
        let (addr, _reads) = restarted_agent().await;
        let store = ConsulStore::connect(
            ConsulConfig::new([addr.as_str()]).with_timeout(Duration::from_secs(3)),
        )
        .await
        .unwrap();
        let mut w = store.watch("k").await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("first item within 5 s")
            .expect("stream open")
            .expect("first item");
        let first = first.expect("k exists").value;
        if first == b"new" {
            eprintln!("round {round}: the group read first; not the order under test");
            store.close().await.unwrap();
            continue;
        }
        assert_eq!(first, b"old");
        reached += 1;
        // The group's answers (index 9) are below the watch's read (index 39): an index reset.
        let next = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "round {round}: the watch never saw the agent's new state (index reset missed)"
                )
            })
            .expect("stream open")
            .expect("item");
        assert_eq!(next.expect("k exists").value, b"new", "round {round}");
        store.close().await.unwrap();
        if reached == 3 {
            return;
        }
    }
    panic!("the watch's read came first in only {reached} of 30 rounds");
}
