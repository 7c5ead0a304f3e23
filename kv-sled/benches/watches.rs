//! Watches at scale: W = 1,000 and 10,000 key watches on ONE sled handle, on W keys.
//!
//! `cargo bench -p kv-sled --bench watches` (env: `KV_BENCH_W`, a comma list of watch counts,
//! default `1000,10000`; `KV_BENCH_PUTS`, default 1000). Each W runs in a fresh child process
//! (this binary again), so its peak RSS (`VmHWM`) is its own:
//!
//! 1. open the database (default config: `flush=true`) and write the W keys from a second
//!    handle; RSS then is the baseline (sled, its cache with the W keys, the runtime);
//! 2. open W watches one after the other on the first handle, each awaited to its first item
//!    (must be `Ok` with the key's pair): the open rate;
//! 3. RSS after opening, minus the baseline, per watch; threads of the process and tokio tasks
//!    (sled has no server connection: its "streams" are in-process threads and tasks);
//! 4. 1,000 puts spread over the keys from the second handle, one after the other; one task
//!    reads every stream (`select_all`) and times each put's event: put→event p50/p99, puts
//!    delivered, error items.

use std::sync::Arc;

use kv_core::Store;
use kv_sled::{SledConfig, SledStore};

fn main() {
    kv_testkit::watchbench::main(
        "database",
        Box::new(|| {
            Box::pin(async {
                let dir = tempfile::Builder::new()
                    .prefix("kv-sled-watches")
                    .tempdir()
                    .unwrap();
                let open = || SledStore::connect(SledConfig::new(dir.path()));
                let watcher: Arc<dyn Store> = Arc::new(open().await.unwrap());
                let writer: Arc<dyn Store> = Arc::new(open().await.unwrap());
                (
                    watcher,
                    writer,
                    Box::new(dir) as Box<dyn std::any::Any + Send>,
                )
            })
        }),
    );
}
