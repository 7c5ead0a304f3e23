//! What kv-core's checking layer (`Checked`) costs per call: the same in-memory driver called
//! through `Checked` (the `Store` a user holds) and directly (`Driver`), one call at a time on a
//! current-thread runtime, so the difference is the layer's own CPU time (key rules, size and
//! TTL checks, the per-call timeout, the tracing span, the boxed futures).
//!
//! Run: `cargo bench -p kv-memory --bench layer` (`KV_BENCH_N` calls per measurement, default
//! 200,000; best of 5).

use std::time::Instant;

use kv_core::raw::Driver;
use kv_core::{PutOptions, Store};

async fn ns_per_call<F, Fut>(n: usize, mut f: F) -> f64
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..n {
            f(i).await;
        }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n = kv_testkit::bench::env_usize("KV_BENCH_N", 200_000);
        let store = kv_memory::new_store();
        let value = [b'x'; 100];
        let keys: Vec<String> = (0..1000).map(|i| format!("bench/k{i}")).collect();
        for k in &keys {
            store.put(k, &value, PutOptions::default()).await.unwrap();
        }
        let driver: &kv_memory::MemoryDriver = &store;
        println!("| call | through Checked ns | driver directly ns | layer ns |");
        println!("|---|---|---|---|");
        let via = ns_per_call(n, |i| {
            let (s, k) = (&store, &keys[i % 1000]);
            async move {
                s.get(k).await.unwrap();
            }
        })
        .await;
        let direct = ns_per_call(n, |i| {
            let k = &keys[i % 1000];
            async move {
                driver.get(k).await.unwrap();
            }
        })
        .await;
        println!("| get | {via:.0} | {direct:.0} | {:.0} |", via - direct);
        let via = ns_per_call(n, |i| {
            let (s, k, v) = (&store, &keys[i % 1000], &value);
            async move {
                s.put(k, v, PutOptions::default()).await.unwrap();
            }
        })
        .await;
        let direct = ns_per_call(n, |i| {
            let (k, v) = (&keys[i % 1000], &value);
            async move {
                driver.put(k, v, None).await.unwrap();
            }
        })
        .await;
        println!("| put | {via:.0} | {direct:.0} | {:.0} |", via - direct);
    });
}
