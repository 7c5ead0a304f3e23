//! The whole conformance suite through `compat_tests::run_suite`, the entry point a driver
//! outside the workspace uses: the descriptor opens every handle and nests the namespaces.

use kv_core::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_suite_through_the_descriptor() {
    let url = "memory://conformance-entry";
    // Keeps the named store alive across the run, to see what the run leaves behind.
    let outside = kv_memory::MemoryStore::from_url(url).await.unwrap();
    let report = compat_tests::run_suite(&kv_memory::DRIVER, url)
        .await
        .expect("open the memory store");
    println!("{}", report.summary());
    report.assert_passed();
    assert_eq!(report.passed(), compat_tests::scenarios().len());
    assert_eq!((report.failed(), report.unsupported()), (0, 0));
    let left = outside.list("").await.unwrap();
    assert!(
        left.is_empty(),
        "the run's namespace was not cleaned up: {left:?}"
    );
}
