//! The conformance runner: every scenario of `compat_tests::scenarios()` as a libtest-mimic
//! trial against the backend named by `KV_TEST` (sled, memory, etcd, zookeeper, consul;
//! default sled). `KV_SERVER_VERSION`, when set, is the server's version and is appended to
//! the summary line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use compat_tests::{random_id, NamespaceOpener, Opener, Scenario, Target};
use kv_core::raw::DriverDescriptor;
use libtest_mimic::{Arguments, Failed, Trial};

fn endpoint(var: &str, backend: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => panic!(
            "KV_TEST={backend} needs the server address: set {var} (e.g. {var}=127.0.0.1:PORT), \
             and build with `--features {backend}`"
        ),
    }
}

/// The descriptor of the driver behind `backend` (its scheme): it says how a namespace goes
/// into its URLs.
fn driver(backend: &str) -> DriverDescriptor {
    match kv::driver_for(backend) {
        Some(d) => *d,
        None => panic!(
            "unknown KV_TEST={backend:?} (or its feature is off): use one of {}",
            kv::available_schemes().join(", ")
        ),
    }
}

fn main() {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(4);
    }
    let backend = std::env::var("KV_TEST").unwrap_or_else(|_| "sled".to_string());
    let run_id = random_id();
    let mut temp_dir = None;
    // The store's URL without a namespace, and the namespace of this run.
    let (base, namespace) = match backend.as_str() {
        "sled" => {
            let dir = tempfile::Builder::new()
                .prefix("kv-conformance-")
                .tempdir()
                .expect("create a temp dir for sled");
            let url = format!("sled://{}", dir.path().join("db").display());
            temp_dir = Some(dir);
            (url, String::new())
        }
        "memory" => (format!("memory://conformance-{run_id}"), String::new()),
        "etcd" => (
            format!("etcd://{}", endpoint("KV_ETCD_ENDPOINTS", "etcd")),
            format!("kvtest-{run_id}"),
        ),
        "zookeeper" | "zk" => (
            format!("zk://{}", endpoint("KV_ZK_ENDPOINTS", "zookeeper")),
            format!("kvtest-{run_id}"),
        ),
        "consul" => (
            format!("consul://{}", endpoint("KV_CONSUL_ADDR", "consul")),
            format!("kvtest-{run_id}"),
        ),
        other => panic!("unknown KV_TEST={other:?}: use sled, memory, etcd, zookeeper or consul"),
    };
    let network = temp_dir.is_none() && backend != "memory";
    let driver = driver(&backend);
    let url = driver.with_namespace(&base, &namespace);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let opener: Opener = {
        let url = url.clone();
        Arc::new(move || {
            let url = url.clone();
            Box::pin(async move { kv::open(&url).await })
        })
    };
    // A nested namespace, built from the driver's descriptor (URL path or `namespace=`).
    let namespaced: NamespaceOpener = Arc::new(move |sub: String| {
        let nested = driver.with_namespace(&base, &kv_core::key::join(&namespace, &sub));
        Box::pin(async move { kv::open(&nested).await })
    });
    let target = rt
        .block_on(Target::new(backend.clone(), opener))
        .unwrap_or_else(|e| panic!("cannot open the {backend} store at {url}: {e} ({e:?})"))
        .with_namespace_opener(namespaced);
    let target = Arc::new(target);
    eprintln!(
        "running the conformance suite on {backend} at {url}\n  capabilities: {:?}",
        target.capabilities()
    );
    let unsupported_passed = Arc::new(AtomicU64::new(0));

    let trials: Vec<Trial> = compat_tests::scenarios()
        .into_iter()
        .map(|sc: Scenario| {
            let (target, handle) = (target.clone(), rt.handle().clone());
            let counter = unsupported_passed.clone();
            let unsupported = sc.missing(&target.capabilities()).is_some();
            let trial = Trial::test(target.trial_name(&sc), move || {
                let r = handle.block_on(target.run(sc));
                match r.result {
                    Ok(()) => {
                        if r.unsupported {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(())
                    }
                    Err(m) => Err(Failed::from(m)),
                }
            });
            match unsupported {
                true => trial.with_kind("unsupported"),
                false => trial,
            }
        })
        .collect();

    let conclusion = libtest_mimic::run(&args, trials);

    rt.block_on(async {
        let store = target.store();
        if network {
            if let Err(e) = store.delete_tree("").await {
                eprintln!("cleanup: delete_tree(\"\") of the test namespace failed: {e}");
            }
        }
        if let Err(e) = store.close().await {
            eprintln!("cleanup: close failed: {e}");
        }
    });
    drop(target);
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(temp_dir);

    let unsupported = unsupported_passed.load(Ordering::SeqCst);
    let passed = conclusion.num_passed.saturating_sub(unsupported);
    // The server's version, when the caller says which it is (scripts/test takes it from the
    // running server): `conformance etcd@3.5.16: ...`.
    let label = match std::env::var("KV_SERVER_VERSION") {
        Ok(v) if !v.trim().is_empty() && network => format!("{backend}@{}", v.trim()),
        _ => backend.clone(),
    };
    println!(
        "conformance {label}: {passed} passed, {} failed, {unsupported} unsupported",
        conclusion.num_failed
    );
    conclusion.exit();
}
