//! TLS against a real ZooKeeper server with certificates generated here (openssl, keytool).
#![cfg(feature = "tls")]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kv_core::{Error, PutOptions, Store};
use kv_testkit::zookeeper::{ZkOptions, ZkServer, ZkTls};
use kv_testkit::{require_binary, run};
use kv_zookeeper::ZkStore;

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").args(args).current_dir(dir));
}

/// A CA (`{name}-ca.pem`/`.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=kv test {name} CA"),
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
        ],
    );
}

/// A certificate for 127.0.0.1 signed by CA `ca`, as `{name}.pem`/`.key`.
fn make_cert(dir: &Path, ca: &str, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_right_ca_works_wrong_ca_fails_fast() {
    if require_binary("openssl", "apt-get install openssl").is_none()
        || require_binary("keytool", "apt-get install default-jre-headless").is_none()
    {
        return;
    }
    let tmp = kv_testkit::temp_dir("zk-tls-certs");
    let d = tmp.path();
    make_ca(d, "good");
    make_ca(d, "evil");
    make_cert(d, "good", "server");
    make_cert(d, "good", "client");
    openssl(
        d,
        &[
            "pkcs12",
            "-export",
            "-in",
            "server.pem",
            "-inkey",
            "server.key",
            "-certfile",
            "good-ca.pem",
            "-name",
            "server",
            "-out",
            "server.p12",
            "-passout",
            "pass:changeit",
        ],
    );
    run(Command::new("keytool")
        .args([
            "-importcert",
            "-noprompt",
            "-alias",
            "ca",
            "-file",
            "good-ca.pem",
            "-keystore",
            "trust.p12",
            "-storetype",
            "PKCS12",
            "-storepass",
            "changeit",
        ])
        .current_dir(d));
    let tls = ZkTls {
        keystore: d.join("server.p12"),
        keystore_password: "changeit".into(),
        truststore: d.join("trust.p12"),
        truststore_password: "changeit".into(),
        client_auth: true,
    };
    let Some(server) = ZkServer::start_with(ZkOptions {
        tls: Some(tls),
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let sep = server.secure_endpoint();
    let p = |f: &str| d.join(f).display().to_string();

    // Right CA and a client certificate: works.
    let url = format!(
        "zk://{sep}/tls?ca={}&cert={}&key={}",
        p("good-ca.pem"),
        p("client.pem"),
        p("client.key")
    );
    let s = ZkStore::from_url(&url)
        .await
        .unwrap_or_else(|e| panic!("TLS connect: {e}"));
    s.put("k", b"over tls", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(s.get("k").await.unwrap().value, b"over tls");

    // Wrong CA: a quick, clear error.
    let url = format!(
        "zk://{sep}/tls?ca={}&cert={}&key={}&timeout=5s",
        p("evil-ca.pem"),
        p("client.pem"),
        p("client.key")
    );
    let start = Instant::now();
    match ZkStore::from_url(&url).await {
        Err(e @ Error::Unreachable { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("TLS"), "{msg}");
            eprintln!("wrong CA: {msg} (after {:?})", start.elapsed());
        }
        Err(e) => panic!("wrong CA gave {e:?}"),
        Ok(_) => panic!("wrong CA connected"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "took {:?}",
        start.elapsed()
    );

    // Plain text against the TLS port fails too; TLS against the plain port fails.
    let plain = format!(
        "zk://{}/tls?ca={}&cert={}&key={}&timeout=5s",
        server.endpoint(),
        p("good-ca.pem"),
        p("client.pem"),
        p("client.key")
    );
    assert!(ZkStore::from_url(&plain).await.is_err());
    s.close().await.unwrap();
}
