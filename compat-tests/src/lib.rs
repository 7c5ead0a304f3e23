#![doc = include_str!("docs.md")]
#![warn(missing_docs)]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
pub use kv_core::{Capabilities, Error, KvPair, Store};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opens another independent handle to the store under test (same backend, same namespace).
pub type Opener =
    Arc<dyn Fn() -> BoxFuture<'static, kv_core::Result<Arc<dyn Store>>> + Send + Sync>;

/// Opens a handle to the same store whose namespace is the given path *inside* the namespace
/// under test (so its keys are visible to the main handle under that path).
pub type NamespaceOpener =
    Arc<dyn Fn(String) -> BoxFuture<'static, kv_core::Result<Arc<dyn Store>>> + Send + Sync>;

/// Deadline for an event that should arrive "promptly" (a watch item, a lock hand-over).
/// Generous on purpose: the suite runs on busy 2-core machines.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Extra time allowed past a TTL before an expiry counts as missed.
pub const TTL_GRACE: Duration = Duration::from_secs(15);

/// A scenario failure: what was checked, what was expected and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The message shown in the test report.
    pub message: String,
}

impl Failure {
    /// A failure with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::new(format!("unexpected error: {e} ({e:?})"))
    }
}

/// Result of a scenario step.
pub type Outcome<T = ()> = Result<T, Failure>;

/// Adds context to a store call's error: `store.get(k).await.ok_or_fail("get k")?`.
pub trait Context<T> {
    /// Turns an `Err` into a [`Failure`] naming `what`.
    fn ok_or_fail(self, what: &str) -> Outcome<T>;
}

impl<T> Context<T> for kv_core::Result<T> {
    fn ok_or_fail(self, what: &str) -> Outcome<T> {
        self.map_err(|e| Failure::new(format!("{what}: expected success, got error {e} ({e:?})")))
    }
}

/// Fails with a formatted message unless the condition holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure::new(format!($($fmt)+)));
        }
    };
}

/// Fails unless `actual == expected`, showing both (`check_eq!(actual, expected, "what {}", x)`).
#[macro_export]
macro_rules! check_eq {
    ($actual:expr, $expected:expr, $($fmt:tt)+) => {{
        let actual = &$actual;
        let expected = &$expected;
        if actual != expected {
            return Err($crate::Failure::new(format!(
                "{}:\n  expected: {:?}\n    actual: {:?}",
                format!($($fmt)+),
                expected,
                actual
            )));
        }
    }};
}

/// Expects `Err` matching a pattern of [`Error`]; evaluates to the error, or fails showing
/// what came instead (`let e = expect_err!(store.get(k).await, Error::NotFound { .. }, "get {k}");`).
#[macro_export]
macro_rules! expect_err {
    ($result:expr, $pat:pat, $($fmt:tt)+) => {
        match $result {
            Err(e) if matches!(e, $pat) => e,
            Err(e) => {
                return Err($crate::Failure::new(format!(
                    "{}:\n  expected: Err({})\n    actual: Err({e:?})",
                    format!($($fmt)+),
                    stringify!($pat)
                )))
            }
            Ok(v) => {
                return Err($crate::Failure::new(format!(
                    "{}:\n  expected: Err({})\n    actual: Ok({:?})",
                    format!($($fmt)+),
                    stringify!($pat),
                    $crate::short_debug(&v)
                )))
            }
        }
    };
}

/// `Debug` of a value, cut to a readable length (large values are not dumped whole).
pub fn short_debug<T: fmt::Debug>(v: &T) -> String {
    let s = format!("{v:?}");
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} chars)", &s[..end], s.len())
    } else {
        s
    }
}

/// Per-scenario context: a unique key prefix, the capabilities, more handles, deadlines.
pub struct Ctx {
    scenario: String,
    prefix: String,
    caps: Capabilities,
    opener: Opener,
    namespaced: Option<NamespaceOpener>,
    others: Mutex<Vec<Arc<dyn Store>>>,
}

impl Ctx {
    /// A context for `scenario` in run `run_id`; `opener` opens more handles to the store.
    pub fn new(scenario: &str, run_id: &str, caps: Capabilities, opener: Opener) -> Self {
        let clean: String = scenario
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '.'
                }
            })
            .collect();
        Ctx {
            scenario: scenario.to_string(),
            prefix: format!("ct-{run_id}-{clean}"),
            caps,
            opener,
            namespaced: None,
            others: Mutex::new(Vec::new()),
        }
    }

    /// Adds the way to open handles with a nested namespace (see [`Ctx::open_namespace`]).
    pub fn with_namespace_opener(mut self, opener: NamespaceOpener) -> Self {
        self.namespaced = Some(opener);
        self
    }

    /// Opens a handle whose namespace is `ctx.key(rel)` inside the namespace under test
    /// (closed when the scenario ends).
    pub async fn open_namespace(&self, rel: &str) -> Outcome<Arc<dyn Store>> {
        let opener = self.namespaced.as_ref().ok_or_else(|| {
            Failure::new("the runner gave no namespace opener (Ctx::with_namespace_opener)")
        })?;
        let store = opener(self.key(rel)).await.ok_or_fail(&format!(
            "opening a handle with namespace {:?}",
            self.key(rel)
        ))?;
        self.others
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(store.clone());
        Ok(store)
    }

    /// The scenario's name.
    pub fn scenario(&self) -> &str {
        &self.scenario
    }

    /// The scenario's own key prefix (normalized, unique per scenario and run).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `prefix/rel` (`rel` may be empty: the prefix itself).
    pub fn key(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// The capabilities of the store under test.
    pub fn caps(&self) -> &Capabilities {
        &self.caps
    }

    /// Opens another independent handle to the same store and namespace (closed when the
    /// scenario ends, unless the scenario closes it itself).
    pub async fn open_another(&self) -> Outcome<Arc<dyn Store>> {
        let store = (self.opener)()
            .await
            .ok_or_fail("opening another handle to the store")?;
        self.others
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(store.clone());
        Ok(store)
    }

    /// Closes every handle opened with [`open_another`](Self::open_another).
    pub async fn close_others(&self) {
        let others: Vec<_> =
            std::mem::take(&mut *self.others.lock().unwrap_or_else(|e| e.into_inner()));
        for s in others {
            let _ = s.close().await;
        }
    }

    /// A TTL the backend honours: `max(caps.min_ttl, 2 s)`.
    pub fn short_ttl(&self) -> Duration {
        self.caps.min_ttl.max(Duration::from_secs(2))
    }
}

/// Awaits `fut` for at most `deadline`, failing with a message naming `what`.
pub async fn within<T>(what: &str, deadline: Duration, fut: impl Future<Output = T>) -> Outcome<T> {
    tokio::time::timeout(deadline, fut)
        .await
        .map_err(|_| Failure::new(format!("timed out after {deadline:?} waiting for {what}")))
}

/// The next item of a watch stream within `deadline`: fails on timeout, on the end of the
/// stream and on an `Err` item.
pub async fn wait_for_item<S, T>(stream: &mut S, deadline: Duration, what: &str) -> Outcome<T>
where
    S: Stream<Item = kv_core::Result<T>> + Unpin,
{
    match within(what, deadline, stream.next()).await? {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(Failure::new(format!(
            "{what}: the watch stream yielded an error: {e} ({e:?})"
        ))),
        None => Err(Failure::new(format!(
            "{what}: the watch stream ended (without a final error item)"
        ))),
    }
}

/// Reads items until `done` accepts one (returned together with every item seen, in order).
/// Fails when `deadline` passes, the stream ends or an `Err` item arrives.
pub async fn wait_for_state<S, T, F>(
    stream: &mut S,
    deadline: Duration,
    what: &str,
    mut done: F,
) -> Outcome<Vec<T>>
where
    S: Stream<Item = kv_core::Result<T>> + Unpin,
    T: fmt::Debug,
    F: FnMut(&T) -> bool,
{
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, stream.next()).await {
            Err(_) => {
                return Err(Failure::new(format!(
                    "timed out after {deadline:?} waiting for {what}; items seen: {}",
                    short_debug(&seen)
                )))
            }
            Ok(None) => {
                return Err(Failure::new(format!(
                    "{what}: the watch stream ended; items seen: {}",
                    short_debug(&seen)
                )))
            }
            Ok(Some(Err(e))) => {
                return Err(Failure::new(format!(
                    "{what}: the watch stream yielded an error: {e} ({e:?}); items seen before: {}",
                    short_debug(&seen)
                )))
            }
            Ok(Some(Ok(v))) => {
                let stop = done(&v);
                seen.push(v);
                if stop {
                    return Ok(seen);
                }
            }
        }
    }
}

/// Polls `check` every 50 ms until it gives `Ok(Some(_))`, for at most `deadline`.
/// An `Err` from `check` fails at once.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> Outcome<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Outcome<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            return Err(Failure::new(format!(
                "timed out after {deadline:?} waiting for {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `check` every 50 ms for `window`, the last time when `window` has passed: the
/// counterpart of [`eventually`] for "this must stay true for a while". Fails at the first `Err`.
pub async fn throughout<F, Fut>(window: Duration, mut check: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Outcome>,
{
    let end = Instant::now() + window;
    loop {
        check().await?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        tokio::time::sleep((end - now).min(Duration::from_millis(50))).await;
    }
}

/// Fails if `fut` completes within `window` (used to prove that something waits, e.g. a
/// lock acquisition while the lock is held). The future is dropped when the window elapses.
pub async fn must_not_complete<T: fmt::Debug>(
    what: &str,
    window: Duration,
    fut: impl Future<Output = T>,
) -> Outcome<()> {
    match tokio::time::timeout(window, fut).await {
        Err(_) => Ok(()),
        Ok(v) => Err(Failure::new(format!(
            "{what}: expected it to still be waiting after {window:?}, but it completed with {}",
            short_debug(&v)
        ))),
    }
}

/// Current value of `key` (`None` if absent), as `(value, version)` for compact comparisons.
pub async fn state_of(store: &dyn Store, key: &str) -> Outcome<Option<(Vec<u8>, u64)>> {
    match store.get(key).await {
        Ok(p) => Ok(Some((p.value, p.version))),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Failure::new(format!(
            "get {key:?}: expected a pair or NotFound, got {e} ({e:?})"
        ))),
    }
}

/// Keys of a list of pairs.
pub fn keys_of(pairs: &[KvPair]) -> Vec<String> {
    pairs.iter().map(|p| p.key.clone()).collect()
}

// Scenario modules come after the macros above so they can use them.
pub mod atomic;
pub mod basic;
pub mod close;
pub mod discovery;
pub mod election;
pub mod errors;
pub mod events;
pub mod fencing;
pub mod list;
pub mod lock;
pub mod ttl;
pub mod txn;
pub mod values;
pub mod watch;

mod registry;
mod runner;
pub use registry::{check_unsupported, scenarios, Cap, Scenario, ScenarioFn};
pub use runner::{
    descriptor_openers, random_id, run_suite, Report, ScenarioResult, Target, CONCURRENCY,
    SCENARIO_TIMEOUT,
};

/// A spawned task that is aborted when dropped (so a failing scenario leaves no waiter
/// behind); awaiting it gives its output, or a [`Failure`] if it panicked.
pub struct Task<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> Task<T> {
    /// Spawns `fut` on the current runtime.
    pub fn spawn(fut: impl Future<Output = T> + Send + 'static) -> Self {
        Task(tokio::spawn(fut))
    }

    /// True once the task finished.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("finished", &self.0.is_finished())
            .finish()
    }
}

impl<T> Future for Task<T> {
    type Output = Outcome<T>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| {
            r.map_err(|e| Failure::new(format!("a spawned task failed: {}", panic_message(e))))
        })
    }
}

/// The message of a panicked task (or why it did not finish).
pub fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => {
            if let Some(s) = p.downcast_ref::<&str>() {
                format!("panicked: {s}")
            } else if let Some(s) = p.downcast_ref::<String>() {
                format!("panicked: {s}")
            } else {
                "panicked".to_string()
            }
        }
        Err(e) => e.to_string(),
    }
}
