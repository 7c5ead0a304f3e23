//! Read consistency on the wire: a fake agent on 127.0.0.1 records every request line, so
//! the tests see exactly which read mode each call asks Consul for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv_consul::{ConsulConfig, ConsulStore};
use kv_core::{Consistency, Store, Txn};

mod common;
use common::fake_agent::{serve, Answer};

/// A minimal HTTP/1.1 "agent": a leader, no keys, empty transactions.
async fn fake_agent() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let addr = serve(move |method, target| {
        log.lock().unwrap().push(format!("{method} {target}"));
        async move {
            if target.starts_with("/v1/status/leader") {
                Answer::ok(5, "\"127.0.0.1:8300\"")
            } else if target.starts_with("/v1/txn") {
                Answer::ok(5, r#"{"Results":[],"Errors":null}"#)
            } else {
                Answer {
                    status: "404 Not Found",
                    index: 5,
                    body: String::new(),
                }
            }
        }
    })
    .await;
    (addr, seen)
}

/// Runs get, exists, list, a watch's first item and a get-only txn; returns the request
/// lines of those reads (the connect probe excluded).
async fn reads_with(config: ConsulConfig, seen: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    let store = ConsulStore::connect(config.with_timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    seen.lock().unwrap().clear();
    assert!(store.get("a/b").await.is_err());
    assert!(!store.exists("a/b").await.unwrap());
    assert!(store.list("a").await.unwrap().is_empty());
    let mut w = store.watch("a/b").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut w))
        .await
        .expect("first watch item within 5 s");
    assert!(matches!(first, Some(Ok(None))), "{first:?}");
    drop(w);
    // The fake agent answers no results: only the request matters here.
    let _ = store.txn(Txn::new().get("a/b")).await;
    store.close().await.unwrap();
    let lines = seen.lock().unwrap().clone();
    lines
        .into_iter()
        .filter(|l| l.contains("/v1/kv/") || l.contains("/v1/txn"))
        .collect()
}

#[tokio::test]
async fn default_reads_ask_for_consistent() {
    let (addr, seen) = fake_agent().await;
    let lines = reads_with(
        ConsulConfig::new([addr.as_str()]).with_namespace("lin"),
        &seen,
    )
    .await;
    // get, exists, list, the watch's first read, the txn.
    assert!(lines.len() >= 5, "{lines:?}");
    for l in &lines {
        let q = l.split_once('?').map_or("", |(_, q)| q);
        let flags: Vec<&str> = q.split('&').map(|p| p.split('=').next().unwrap()).collect();
        assert!(flags.contains(&"consistent"), "{l} lacks ?consistent");
        assert!(!flags.contains(&"stale"), "{l}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("PUT /v1/txn")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn stale_reads_ask_for_stale() {
    let (addr, seen) = fake_agent().await;
    let config = ConsulConfig::from_url(&format!("consul://{addr}/st?consistency=stale"))
        .unwrap()
        .with_consistency(Consistency::Stale);
    let lines = reads_with(config, &seen).await;
    assert!(lines.len() >= 5, "{lines:?}");
    for l in &lines {
        let q = l.split_once('?').map_or("", |(_, q)| q);
        let flags: Vec<&str> = q.split('&').map(|p| p.split('=').next().unwrap()).collect();
        assert!(flags.contains(&"stale"), "{l} lacks ?stale");
        assert!(!flags.contains(&"consistent"), "{l}");
    }
}
