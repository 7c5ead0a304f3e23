//! ACLs (default deny): the right token works; a wrong or missing token is Unauthorized.

use kv_consul::{ConsulConfig, ConsulStore};
use kv_core::{Error, PutOptions, Store};
use kv_testkit::consul::{Consul, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens() {
    let Some(consul) = Consul::start(Options {
        acl: true,
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let token = consul.management_token.clone().expect("bootstrapped token");
    let s = ConsulStore::from_url(&format!("consul://{}/acl?token={token}", consul.addr()))
        .await
        .unwrap();
    let p = s.put("k", b"v", PutOptions::default()).await.unwrap();
    assert_eq!(s.get("k").await.unwrap(), p);
    let cfg = ConsulConfig::new([consul.addr()])
        .with_namespace("acl")
        .with_token(token.clone());
    assert!(!format!("{cfg:?}").contains(&token), "{cfg:?}");
    let s2 = ConsulStore::connect(cfg).await.unwrap();
    // Neither the store's Debug shows the token.
    for shown in [format!("{s:?}"), format!("{s2:?}")] {
        assert!(!shown.contains(&token), "{shown}");
        assert!(shown.contains("acl"), "{shown}");
    }
    assert_eq!(s2.get("k").await.unwrap(), p);

    for url in [
        format!(
            "consul://{}/acl?token=00000000-0000-0000-0000-000000000000",
            consul.addr()
        ),
        format!("consul://{}/acl", consul.addr()),
    ] {
        match ConsulStore::from_url(&url).await {
            Err(Error::Unauthorized { message, .. }) => eprintln!("{url}: {message}"),
            Err(e) => panic!("{url}: expected Unauthorized, got {e:?}"),
            Ok(_) => panic!("{url}: connected without a valid token"),
        }
    }
    // A token that becomes invalid after connecting: every call reports Unauthorized.
    let d = consul.http("GET", "/v1/acl/token/self", "").await;
    assert_eq!(d.status, 200, "{d:?}");
    let ns = "acl";
    let create = consul
        .http(
            "PUT",
            "/v1/acl/token",
            r#"{"Description":"short-lived","Policies":[{"Name":"global-management"}]}"#,
        )
        .await;
    assert_eq!(create.status, 200, "{create:?}");
    let field = |name: &str| {
        create
            .body
            .split(&format!("\"{name}\":\""))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("no {name} in {create:?}"))
            .to_string()
    };
    let (secret, accessor) = (field("SecretID"), field("AccessorID"));
    let s3 = ConsulStore::from_url(&format!("consul://{}/{ns}?token={secret}", consul.addr()))
        .await
        .unwrap();
    s3.put("k2", b"v", PutOptions::default()).await.unwrap();
    let del = consul
        .http("DELETE", &format!("/v1/acl/token/{accessor}"), "")
        .await;
    assert_eq!(del.status, 200, "{del:?}");
    assert!(matches!(
        s3.get("k2").await,
        Err(Error::Unauthorized { .. })
    ));
    assert!(matches!(
        s3.put("k2", b"x", PutOptions::default()).await,
        Err(Error::Unauthorized { .. })
    ));
    assert!(matches!(
        s3.delete("k2").await,
        Err(Error::Unauthorized { .. })
    ));
    // Consul may filter unreadable entries instead of refusing: then nothing is listed.
    match s3.list("").await {
        Err(Error::Unauthorized { .. }) => {}
        Ok(pairs) => assert!(pairs.is_empty(), "a revoked token listed {pairs:?}"),
        Err(e) => panic!("expected Unauthorized, got {e:?}"),
    }
}
