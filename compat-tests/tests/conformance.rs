//! The conformance runner: every scenario of `compat_tests::scenarios()` as a libtest-mimic
//! trial against the backend named by `KV_TEST` (sled, etcd, zookeeper, consul; default sled).
//! `KV_SERVER_VERSION`, when set, is the server's version and is appended to the summary line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use compat_tests::{check_unsupported, panic_message, Ctx, NamespaceOpener, Opener, Scenario};
use kv::Store;
use libtest_mimic::{Arguments, Failed, Trial};
use rand::Rng;

/// Longest a single scenario may run before it counts as failed.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

fn random_id() -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

fn endpoint(var: &str, backend: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => panic!(
            "KV_TEST={backend} needs the server address: set {var} (e.g. {var}=127.0.0.1:PORT), \
             and build with `--features {backend}`"
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
    let url = match backend.as_str() {
        "sled" => {
            let dir = tempfile::Builder::new()
                .prefix("kv-conformance-")
                .tempdir()
                .expect("create a temp dir for sled");
            let url = format!("sled://{}", dir.path().join("db").display());
            temp_dir = Some(dir);
            url
        }
        "etcd" => format!(
            "etcd://{}/kvtest-{run_id}",
            endpoint("KV_ETCD_ENDPOINTS", "etcd")
        ),
        "zookeeper" | "zk" => format!(
            "zk://{}/kvtest-{run_id}",
            endpoint("KV_ZK_ENDPOINTS", "zookeeper")
        ),
        "consul" => format!(
            "consul://{}/kvtest-{run_id}",
            endpoint("KV_CONSUL_ADDR", "consul")
        ),
        other => panic!("unknown KV_TEST={other:?}: use sled, etcd, zookeeper or consul"),
    };
    let network = temp_dir.is_none();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store: Arc<dyn Store> = rt
        .block_on(kv::open(&url))
        .unwrap_or_else(|e| panic!("cannot open the {backend} store at {url}: {e} ({e:?})"));
    let caps = store.capabilities();
    eprintln!("running the conformance suite on {backend} at {url}\n  capabilities: {caps:?}");

    let opener: Opener = {
        let url = url.clone();
        Arc::new(move || {
            let url = url.clone();
            Box::pin(async move { kv::open(&url).await })
        })
    };
    // A nested namespace: sled takes it as an option, the network backends in the URL path.
    let namespaced: NamespaceOpener = {
        let url = url.clone();
        let sled = !network;
        Arc::new(move |sub: String| {
            let nested = if sled {
                format!("{url}?namespace={sub}")
            } else {
                format!("{url}/{sub}")
            };
            Box::pin(async move { kv::open(&nested).await })
        })
    };
    let unsupported_passed = Arc::new(AtomicU64::new(0));

    let trials: Vec<Trial> = compat_tests::scenarios()
        .into_iter()
        .map(|sc: Scenario| {
            let missing = sc.missing(&caps);
            let name = match missing {
                Some(_) => format!("{}::unsupported", sc.name),
                None => sc.name.to_string(),
            };
            let (store, opener, handle, run_id) = (
                store.clone(),
                opener.clone(),
                rt.handle().clone(),
                run_id.clone(),
            );
            let namespaced = namespaced.clone();
            let counter = unsupported_passed.clone();
            let trial_name = name.clone();
            let trial = Trial::test(name, move || {
                let ctx =
                    Ctx::new(&trial_name, &run_id, caps, opener).with_namespace_opener(namespaced);
                let body = async move {
                    let result = match missing {
                        Some(cap) => check_unsupported(&*store, &ctx, cap).await,
                        None => (sc.run)(&*store, &ctx).await,
                    };
                    ctx.close_others().await;
                    result
                };
                let outcome = handle.block_on(async move {
                    let task = tokio::spawn(tokio::time::timeout(SCENARIO_TIMEOUT, body));
                    match task.await {
                        Ok(Ok(r)) => r.map_err(|f| f.message),
                        Ok(Err(_)) => Err(format!(
                            "the scenario did not finish within {SCENARIO_TIMEOUT:?}"
                        )),
                        Err(e) => Err(format!("the scenario {}", panic_message(e))),
                    }
                });
                match outcome {
                    Ok(()) => {
                        if missing.is_some() {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(())
                    }
                    Err(m) => Err(Failed::from(m)),
                }
            });
            match missing {
                Some(_) => trial.with_kind("unsupported"),
                None => trial,
            }
        })
        .collect();

    let conclusion = libtest_mimic::run(&args, trials);

    rt.block_on(async {
        if network {
            if let Err(e) = store.delete_tree("").await {
                eprintln!("cleanup: delete_tree(\"\") of the test namespace failed: {e}");
            }
        }
        if let Err(e) = store.close().await {
            eprintln!("cleanup: close failed: {e}");
        }
    });
    drop(store);
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
