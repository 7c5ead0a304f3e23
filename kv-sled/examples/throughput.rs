//! Rough write throughput of the sled driver with and without per-write flush.
//!
//! `cargo run --release -p kv-sled --example throughput [N]`

use std::time::Instant;

use kv_core::{PutOptions, Store};
use kv_sled::{SledConfig, SledStore};

#[tokio::main]
async fn main() -> kv_core::Result<()> {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000);
    for flush in [true, false] {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledStore::connect(SledConfig::new(dir.path()).with_flush(flush)).await?;
        let start = Instant::now();
        for i in 0..n {
            store
                .put(&format!("bench/{i}"), b"value", PutOptions::default())
                .await?;
        }
        let took = start.elapsed();
        println!(
            "flush={flush}: {n} sequential puts in {took:?} ({:.0} puts/s)",
            n as f64 / took.as_secs_f64()
        );
        let start = Instant::now();
        let listed = store.list("bench").await?.len();
        println!("  list of {listed} keys in {:?}", start.elapsed());
        store.close().await?;
    }
    Ok(())
}
