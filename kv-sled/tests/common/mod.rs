//! Helpers shared by the sled test files: a temp dir, an open handle, the next stream item.
#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use kv_sled::{SledConfig, SledStore};

/// The bound on every wait in these tests.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A fresh temporary directory tagged `tag`.
pub fn dir(tag: &str) -> tempfile::TempDir {
    kv_testkit::temp_dir(&format!("sled-{tag}"))
}

/// A handle on the database at `path` (default config).
pub async fn open(path: &std::path::Path) -> SledStore {
    SledStore::connect(SledConfig::new(path)).await.unwrap()
}

/// The next item of a stream, within [`DEADLINE`].
pub async fn next<T>(s: &mut (impl futures::Stream<Item = T> + Unpin)) -> T {
    tokio::time::timeout(DEADLINE, s.next())
        .await
        .expect("watch item within the deadline")
        .expect("stream not ended")
}
