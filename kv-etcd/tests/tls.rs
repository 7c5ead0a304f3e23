//! TLS against a real etcd: right CA, wrong CA, mutual TLS (with the `tls` feature), and the
//! clear error without it.

use kv_core::Error;
use kv_etcd::EtcdStore;

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn tls_options_need_the_feature() {
    match EtcdStore::from_url("etcd://127.0.0.1:1/?ca=/tmp/ca.pem").await {
        Err(Error::Config { message }) => assert!(message.contains("`tls` feature"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use std::time::{Duration, Instant};

    use futures::StreamExt;
    use kv_core::{PutOptions, Store};
    use kv_testkit::etcd::{EtcdOptions, EtcdServer, EtcdTls};
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    struct Pki {
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn path(&self, name: &str) -> std::path::PathBuf {
            self.dir.path().join(name)
        }
    }

    fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (params, key, cert.pem())
    }

    fn leaf(
        issuer: &Issuer<'_, &KeyPair>,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn make_pki() -> Pki {
        let dir = kv_testkit::temp_dir("etcd-pki");
        let (ca_params, ca_key, ca_pem) = ca("kv test CA");
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let (server_pem, server_key) = leaf(&issuer, "etcd", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_pem, client_key) = leaf(&issuer, "root", ExtendedKeyUsagePurpose::ClientAuth);
        let (_, _, other_ca_pem) = ca("some other CA");
        let files = [
            ("ca.pem", ca_pem),
            ("server.pem", server_pem),
            ("server.key", server_key),
            ("client.pem", client_pem),
            ("client.key", client_key),
            ("other-ca.pem", other_ca_pem),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Pki { dir }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutual_tls() {
        let pki = make_pki();
        let options = EtcdOptions {
            tls: Some(EtcdTls {
                cert: pki.path("server.pem"),
                key: pki.path("server.key"),
                ca: pki.path("ca.pem"),
                client_cert_auth: true,
                client_cert: Some(pki.path("client.pem")),
                client_key: Some(pki.path("client.key")),
            }),
            ..Default::default()
        };
        let Some(server) = EtcdServer::start_with(options).await else {
            return;
        };
        let ep = server.endpoint();
        let p = |n: &str| pki.path(n).display().to_string();

        // Right CA and client certificate: works.
        let url = format!(
            "etcd://{ep}/tls?ca={}&cert={}&key={}",
            p("ca.pem"),
            p("client.pem"),
            p("client.key")
        );
        let s = EtcdStore::from_url(&url).await.unwrap();
        s.put("k", b"v", PutOptions::default()).await.unwrap();
        assert_eq!(s.get("k").await.unwrap().value, b"v");
        let mut w = s.watch("k").await.unwrap();
        assert!(w.next().await.unwrap().unwrap().is_some());

        // Wrong CA: fails fast with a clear error.
        let started = Instant::now();
        let url = format!(
            "etcd://{ep}/tls?ca={}&cert={}&key={}&timeout=5s",
            p("other-ca.pem"),
            p("client.pem"),
            p("client.key")
        );
        let e = EtcdStore::from_url(&url).await.unwrap_err();
        println!("wrong CA after {:?}: {e}", started.elapsed());
        assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(6));

        // No client certificate: refused, fast.
        let started = Instant::now();
        let url = format!("etcd://{ep}/tls?ca={}&timeout=5s", p("ca.pem"));
        let e = EtcdStore::from_url(&url).await.unwrap_err();
        println!("no client certificate after {:?}: {e}", started.elapsed());
        match &e {
            Error::Unauthorized { .. } => {}
            Error::Unreachable { message, .. } => {
                assert!(message.contains("client certificate"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(6));

        // Plain TCP against a TLS server fails too.
        let e = EtcdStore::from_url(&format!("etcd://{ep}/tls?timeout=3s"))
            .await
            .unwrap_err();
        println!("plain TCP against TLS: {e}");
        assert!(
            e.is_transient() || matches!(e, Error::Unauthorized { .. }),
            "{e:?}"
        );

        // Missing file: a Config error naming it.
        let e = EtcdStore::from_url(&format!("etcd://{ep}/tls?ca=/nonexistent/ca.pem"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Config { ref message } if message.contains("/nonexistent/ca.pem")),
            "{e:?}"
        );
    }
}
