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

/// No driver quotes a URL's password in an error, whatever is wrong with the URL.
#[tokio::test]
async fn errors_never_quote_a_password() {
    let secret = "s3cret-Pw";
    let mut urls = vec![
        format!("://me:{secret}@h"),
        format!("redis://me:{secret}@h/x"),
    ];
    for s in kv::available_schemes() {
        urls.push(format!("{s}://me:{secret}@127.0.0.1:1/x?bogus_option=1"));
        urls.push(format!("{s}://me:{secret}@/x"));
        urls.push(format!("{s}://me:{secret}@127.0.0.1:99999/x"));
        urls.push(format!("{s}://me:{secret}@127.0.0.1:1/a//b?timeout=1s"));
        urls.push(format!("{s}://me:{secret}@127.0.0.1:1/x?timeout=fast"));
    }
    for url in urls {
        let result = tokio::time::timeout(std::time::Duration::from_secs(30), kv::open(&url))
            .await
            .unwrap_or_else(|_| panic!("{url}: open not bounded"));
        if let Err(e) = result {
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains(secret),
                "{url}: the error quotes the password: {text}"
            );
        }
    }
}

/// `kv::open` goes through the drivers' descriptors: every scheme of every enabled driver
/// reaches its driver (a refused connection, not an unknown-scheme error).
#[tokio::test]
async fn every_descriptor_scheme_reaches_its_driver() {
    for d in kv::DRIVERS {
        for s in d.schemes {
            assert_eq!(kv::driver_for(s).map(|x| x.name), Some(d.name));
            if d.default_port.is_none() {
                continue; // embedded: opened for real by other tests
            }
            let url = format!("{s}://127.0.0.1:1/ns?timeout=300ms");
            let r = tokio::time::timeout(std::time::Duration::from_secs(30), kv::open(&url))
                .await
                .expect("open is bounded");
            match r {
                Err(Error::Unreachable { .. } | Error::Timeout { .. }) => {}
                Err(e) => panic!("{url}: expected Unreachable or Timeout, got {e:?}"),
                Ok(_) => panic!("{url}: nothing listens on port 1"),
            }
        }
    }
}
