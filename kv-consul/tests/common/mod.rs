//! Helpers shared by the reliability tests.
#![allow(dead_code)]

use std::time::Duration;

pub mod fake_agent;

use futures::StreamExt;

/// The next `Ok` item of a watch stream (Err items are printed and skipped), within `within`.
pub async fn next_ok<T>(
    s: &mut (impl futures::Stream<Item = kv_core::Result<T>> + Unpin),
    within: Duration,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Ok(Some(Ok(v))) => return v,
            Ok(Some(Err(e))) => eprintln!("watch error item (expected during outages): {e}"),
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("no watch item within {within:?}"),
        }
    }
}

/// Reads items until `pred` holds for one (Err items are skipped), within `within`.
pub async fn until<T: std::fmt::Debug>(
    s: &mut (impl futures::Stream<Item = kv_core::Result<T>> + Unpin),
    within: Duration,
    mut pred: impl FnMut(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Ok(Some(Ok(v))) => {
                if pred(&v) {
                    return v;
                }
                seen.push(format!("{v:?}"));
            }
            Ok(Some(Err(e))) => seen.push(format!("Err({e})")),
            Ok(None) => panic!("watch ended; saw {seen:?}"),
            Err(_) => panic!("condition not met within {within:?}; saw {seen:?}"),
        }
    }
}
