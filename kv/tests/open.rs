//! `kv::open` dispatch: URLs, schemes and their errors.

use kv::Error;

#[tokio::test]
async fn malformed_urls_are_config_errors() {
    for url in ["", "sled", "/tmp/x", "://x", "sl ed://x"] {
        match kv::open(url).await {
            Err(Error::Config { message }) => {
                assert!(message.contains("available schemes"), "{url:?}: {message}")
            }
            Err(other) => panic!("{url:?}: expected Config, got {other:?}"),
            Ok(_) => panic!("{url:?}: expected an error"),
        }
    }
}

#[tokio::test]
async fn unknown_scheme_lists_available_ones() {
    match kv::open("redis://127.0.0.1:6379").await {
        Err(Error::Config { message }) => {
            assert!(message.contains("\"redis\""), "{message}");
            for s in kv::available_schemes() {
                assert!(message.contains(s), "{message} should list {s}");
            }
        }
        Err(other) => panic!("expected Config, got {other:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[cfg(feature = "sled")]
#[tokio::test]
async fn sled_url_opens_a_working_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv::open(&format!("sled://{}", dir.path().display()))
        .await
        .unwrap();
    assert_eq!(store.backend(), "sled");
    let put = store
        .put("a/b", b"1", kv::PutOptions::default())
        .await
        .unwrap();
    let got = store.get("/a/b/").await.unwrap();
    assert_eq!(got, put);
    store.close().await.unwrap();
    assert!(matches!(store.get("a/b").await, Err(Error::Closed)));
}

#[cfg(feature = "sled")]
#[tokio::test]
async fn sled_bad_option_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    match kv::open(&format!("sled://{}?no_such_option=1", dir.path().display())).await {
        Err(Error::Config { message }) => assert!(message.contains("no_such_option"), "{message}"),
        Err(other) => panic!("expected Config, got {other:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[cfg(not(feature = "etcd"))]
#[tokio::test]
async fn disabled_scheme_names_its_feature() {
    match kv::open("etcd://127.0.0.1:2379").await {
        Err(Error::Config { message }) => assert!(message.contains("`etcd` feature"), "{message}"),
        Err(other) => panic!("expected Config, got {other:?}"),
        Ok(_) => panic!("expected an error"),
    }
}
