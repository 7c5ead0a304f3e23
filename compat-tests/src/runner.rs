//! Running the whole suite against one store: the entry point for a driver's own CI.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kv_core::raw::DriverDescriptor;
use kv_core::{Capabilities, Store};

use crate::{check_unsupported, panic_message, scenarios, Ctx, NamespaceOpener, Opener, Scenario};

/// Longest a single scenario may run before it counts as failed.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

/// How many scenarios [`Target::run_all`] runs at once.
pub const CONCURRENCY: usize = 4;

/// A fresh random id (16 hex digits) for key prefixes and namespaces.
pub fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// What one scenario gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioResult {
    /// Trial name: the scenario's name, with `::unsupported` when the backend lacks a
    /// capability it needs (then the unsupported check ran instead).
    pub name: String,
    /// True when the unsupported check ran.
    pub unsupported: bool,
    /// `Err(message)` when it failed.
    pub result: Result<(), String>,
}

/// The results of a whole run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The label of the summary line (the backend name).
    pub label: String,
    /// One result per scenario, in [`scenarios`] order.
    pub results: Vec<ScenarioResult>,
}

impl Report {
    /// Scenarios that ran and passed (unsupported checks not counted).
    pub fn passed(&self) -> usize {
        self.count(|r| !r.unsupported && r.result.is_ok())
    }

    /// Failed scenarios and failed unsupported checks.
    pub fn failed(&self) -> usize {
        self.count(|r| r.result.is_err())
    }

    /// Passed unsupported checks (capabilities the backend lacks).
    pub fn unsupported(&self) -> usize {
        self.count(|r| r.unsupported && r.result.is_ok())
    }

    fn count(&self, f: impl Fn(&ScenarioResult) -> bool) -> usize {
        self.results.iter().filter(|r| f(r)).count()
    }

    /// `conformance <label>: P passed, F failed, U unsupported`.
    pub fn summary(&self) -> String {
        format!(
            "conformance {}: {} passed, {} failed, {} unsupported",
            self.label,
            self.passed(),
            self.failed(),
            self.unsupported()
        )
    }

    /// Panics with every failure's message unless all passed (for a `#[test]`).
    pub fn assert_passed(&self) {
        let failures: Vec<String> = self
            .results
            .iter()
            .filter_map(|r| r.result.as_ref().err().map(|m| format!("{}: {m}", r.name)))
            .collect();
        assert!(
            failures.is_empty(),
            "{}\n\n{}",
            self.summary(),
            failures.join("\n\n")
        );
    }
}

/// The store under test: a main handle, a way to open more handles, and (optionally) a way
/// to open handles with a nested namespace.
pub struct Target {
    label: String,
    store: Arc<dyn Store>,
    caps: Capabilities,
    opener: Opener,
    namespaced: Option<NamespaceOpener>,
    run_id: String,
}

impl Target {
    /// Opens the main handle with `opener` (called again for every extra handle).
    pub async fn new(label: impl Into<String>, opener: Opener) -> kv_core::Result<Self> {
        let store = opener().await?;
        Ok(Target {
            label: label.into(),
            caps: store.capabilities(),
            store,
            opener,
            namespaced: None,
            run_id: random_id(),
        })
    }

    /// Adds the opener of nested namespaces (`namespace_isolation` needs it).
    pub fn with_namespace_opener(mut self, opener: NamespaceOpener) -> Self {
        self.namespaced = Some(opener);
        self
    }

    /// The target of a driver's descriptor: `url` (a URL of the driver without a namespace)
    /// with a fresh namespace `kvtest-<random>` added as the descriptor says, handles opened
    /// with `driver.open`, nested namespaces inside it. Call [`Target::cleanup`] at the end.
    pub async fn from_descriptor(driver: &DriverDescriptor, url: &str) -> kv_core::Result<Self> {
        let namespace = format!("kvtest-{}", random_id());
        let (opener, namespaced) = descriptor_openers(*driver, url, &namespace);
        Ok(Target::new(driver.name, opener)
            .await?
            .with_namespace_opener(namespaced))
    }

    /// The main handle.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The capabilities of the store under test.
    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    /// The trial name of `scenario` here (`::unsupported` added when a capability is missing).
    pub fn trial_name(&self, scenario: &Scenario) -> String {
        match scenario.missing(&self.caps) {
            Some(_) => format!("{}::unsupported", scenario.name),
            None => scenario.name.to_string(),
        }
    }

    /// Runs one scenario (or its unsupported check) in a task of its own, bounded by
    /// [`SCENARIO_TIMEOUT`]; a panic is a failure.
    pub async fn run(&self, scenario: Scenario) -> ScenarioResult {
        let name = self.trial_name(&scenario);
        let missing = scenario.missing(&self.caps);
        let mut ctx = Ctx::new(&name, &self.run_id, self.caps, self.opener.clone());
        if let Some(n) = &self.namespaced {
            ctx = ctx.with_namespace_opener(n.clone());
        }
        let store = self.store.clone();
        let body = async move {
            let result = match missing {
                Some(cap) => check_unsupported(&*store, &ctx, cap).await,
                None => (scenario.run)(&*store, &ctx).await,
            };
            ctx.close_others().await;
            result
        };
        let task = tokio::spawn(tokio::time::timeout(SCENARIO_TIMEOUT, body));
        let result = match task.await {
            Ok(Ok(r)) => r.map_err(|f| f.message),
            Ok(Err(_)) => Err(format!(
                "the scenario did not finish within {SCENARIO_TIMEOUT:?}"
            )),
            Err(e) => Err(format!("the scenario {}", panic_message(e))),
        };
        ScenarioResult {
            name,
            unsupported: missing.is_some(),
            result,
        }
    }

    /// Runs every scenario, [`CONCURRENCY`] at a time.
    pub async fn run_all(&self) -> Report {
        let results = futures::stream::iter(scenarios())
            .map(|sc| self.run(sc))
            .buffered(CONCURRENCY)
            .collect()
            .await;
        Report {
            label: self.label.clone(),
            results,
        }
    }

    /// Deletes every key of the namespace under test and closes the main handle.
    pub async fn cleanup(&self) -> kv_core::Result<()> {
        self.store.delete_tree("").await?;
        self.store.close().await
    }
}

/// Openers for `driver`: handles of `driver.with_namespace(url, namespace)`, and nested
/// namespaces `namespace/<sub>` built the same way (path segment or `namespace=` option).
pub fn descriptor_openers(
    driver: DriverDescriptor,
    url: &str,
    namespace: &str,
) -> (Opener, NamespaceOpener) {
    let main = driver.with_namespace(url, namespace);
    let opener: Opener = Arc::new(move || {
        let url = main.clone();
        Box::pin(async move { (driver.open)(&url).await })
    });
    let (base, ns) = (url.to_string(), namespace.to_string());
    let namespaced: NamespaceOpener = Arc::new(move |sub: String| {
        let url = driver.with_namespace(&base, &kv_core::key::join(&ns, &sub));
        Box::pin(async move { (driver.open)(&url).await })
    });
    (opener, namespaced)
}

/// Runs the whole suite against `url` of `driver` in a fresh namespace, cleans up, and
/// returns the report (see the [crate docs](crate#running-the-suite-in-a-drivers-own-ci)).
pub async fn run_suite(driver: &DriverDescriptor, url: &str) -> kv_core::Result<Report> {
    let target = Target::from_descriptor(driver, url).await?;
    let report = target.run_all().await;
    target.cleanup().await?;
    Ok(report)
}
