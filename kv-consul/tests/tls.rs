//! TLS and mutual TLS with test-generated certificates.
#![cfg(feature = "tls")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kv_consul::ConsulStore;
use kv_core::{Error, PutOptions, Store};
use kv_testkit::consul::{Consul, Options, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(p, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.extended_key_usages = usages;
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn pki(dir: &Path, tag: &str) -> Pki {
    let (ca_pem, issuer) = ca(&format!("kv test CA {tag}"));
    let (sc, sk) = leaf(
        &issuer,
        &["server.dc1.consul", "localhost", "127.0.0.1"],
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    let (cc, ck) = leaf(
        &issuer,
        &["kv client"],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    );
    Pki {
        ca: write(dir, &format!("{tag}-ca.pem"), &ca_pem),
        server_cert: write(dir, &format!("{tag}-server.pem"), &sc),
        server_key: write(dir, &format!("{tag}-server-key.pem"), &sk),
        client_cert: write(dir, &format!("{tag}-client.pem"), &cc),
        client_key: write(dir, &format!("{tag}-client-key.pem"), &ck),
    }
}

async fn start(verify_incoming: bool) -> Option<(Consul, Pki, Pki, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let good = pki(dir.path(), "good");
    let other = pki(dir.path(), "other");
    let consul = Consul::start(Options {
        tls: Some(TlsFiles {
            ca: good.ca.clone(),
            cert: good.server_cert.clone(),
            key: good.server_key.clone(),
            verify_incoming,
        }),
        ..Default::default()
    })
    .await?;
    Some((consul, good, other, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls() {
    let Some((consul, good, other, _dir)) = start(false).await else {
        return;
    };
    let port = consul.https_port.unwrap();
    let url = format!("consul://127.0.0.1:{port}/tls?ca={}", good.ca.display());
    let s = ConsulStore::from_url(&url).await.unwrap();
    let p = s.put("k", b"v", PutOptions::default()).await.unwrap();
    assert_eq!(s.get("k").await.unwrap(), p);

    // domain=: the certificate is verified for that name instead of the host dialled.
    let url = format!(
        "consul://127.0.0.1:{port}/tls?ca={}&domain=server.dc1.consul",
        good.ca.display()
    );
    let d = ConsulStore::from_url(&url).await.unwrap();
    assert_eq!(d.get("k").await.unwrap(), p);
    let url = format!(
        "consul://127.0.0.1:{port}/tls?ca={}&domain=elsewhere.example&timeout=3s",
        good.ca.display()
    );
    match ConsulStore::from_url(&url).await {
        Err(Error::Unreachable { message, .. }) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}")
        }
        Err(e) => panic!("expected Unreachable naming the certificate, got {e:?}"),
        Ok(_) => panic!("connected although the certificate is not for elsewhere.example"),
    }

    // The wrong CA fails fast with a clear error.
    let t0 = Instant::now();
    let url = format!("consul://127.0.0.1:{port}/tls?ca={}", other.ca.display());
    match ConsulStore::from_url(&url).await {
        Err(Error::Unreachable { message, .. }) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}");
            eprintln!("wrong CA: {message}");
        }
        Err(e) => panic!("expected Unreachable naming the certificate, got {e:?}"),
        Ok(_) => panic!("connected with the wrong CA"),
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // Plain HTTP against the HTTPS port is not silently accepted either.
    assert!(
        ConsulStore::from_url(&format!("consul://127.0.0.1:{port}/tls?timeout=3s"))
            .await
            .is_err()
    );
    // Bad files are configuration errors.
    let url = format!("consul://127.0.0.1:{port}/tls?ca=/nonexistent.pem");
    assert!(matches!(
        ConsulStore::from_url(&url).await,
        Err(Error::Config { .. })
    ));
    let url = format!(
        "consul://127.0.0.1:{port}/tls?ca={}&cert={}",
        good.ca.display(),
        good.client_cert.display()
    );
    assert!(matches!(
        ConsulStore::from_url(&url).await,
        Err(Error::Config { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    let Some((consul, good, other, _dir)) = start(true).await else {
        return;
    };
    let port = consul.https_port.unwrap();
    let url = format!(
        "consul://127.0.0.1:{port}/mtls?ca={}&cert={}&key={}",
        good.ca.display(),
        good.client_cert.display(),
        good.client_key.display()
    );
    let s = ConsulStore::from_url(&url).await.unwrap();
    let p = s.put("k", b"v", PutOptions::default()).await.unwrap();
    assert_eq!(s.get("k").await.unwrap(), p);
    // Watches use the watch pool's own connections, with the same TLS settings.
    let mut w = s.watch("k").await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut w))
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        Some(p)
    );
    let p2 = s.put("k", b"v2", PutOptions::default()).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut w))
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        Some(p2)
    );

    // No client certificate, or one from another CA: refused.
    for url in [
        format!(
            "consul://127.0.0.1:{port}/mtls?ca={}&timeout=3s",
            good.ca.display()
        ),
        format!(
            "consul://127.0.0.1:{port}/mtls?ca={}&cert={}&key={}&timeout=3s",
            good.ca.display(),
            other.client_cert.display(),
            other.client_key.display()
        ),
    ] {
        let t0 = Instant::now();
        match ConsulStore::from_url(&url).await {
            Err(e @ (Error::Unauthorized { .. } | Error::Unreachable { .. })) => {
                eprintln!("refused: {e}")
            }
            Err(e) => panic!("{url}: unexpected error {e:?}"),
            Ok(_) => panic!("{url}: connected without a valid client certificate"),
        }
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    }
}
