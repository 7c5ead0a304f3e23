//! Read consistency on the wire: a fake agent on 127.0.0.1 records every request line, so
//! the tests see exactly which read mode each call asks Consul for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv_consul::{ConsulConfig, ConsulStore};
use kv_core::{Consistency, Store, Txn};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A minimal HTTP/1.1 "agent": a leader, no keys, empty transactions.
async fn fake_agent() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        let lower = h.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let target = line.split(' ').nth(1).unwrap_or("").to_string();
                    log.lock()
                        .unwrap()
                        .push(format!("{} {target}", line.split(' ').next().unwrap_or("")));
                    let (status, body) = if target.starts_with("/v1/status/leader") {
                        ("200 OK", "\"127.0.0.1:8300\"".to_string())
                    } else if target.starts_with("/v1/txn") {
                        ("200 OK", r#"{"Results":[],"Errors":null}"#.to_string())
                    } else {
                        ("404 Not Found", String::new())
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Consul-Index: 5\r\nX-Consul-Knownleader: true\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
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
