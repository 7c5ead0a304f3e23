//! Opening a store: the HTTP client (with TLS), the agent addresses, the connect check.

use std::sync::Arc;
use std::time::Duration;

use kv_core::raw::{Connect, DriverInfo, HeldLocks, Lifecycle, Namespace};
use kv_core::url::host_list;
use kv_core::{async_trait, Consistency, Error, Result};
use reqwest::Method;

use crate::error::{to_error, Failure};
use crate::http::Http;
use crate::pool::Pool;
use crate::store::{capabilities, Inner};
use crate::{ConsulConfig, ConsulDriver, BACKEND, DEFAULT_PORT};

/// `http://host:port` or `https://host:port` of each agent address (IPv6-safe, port 8500
/// by default).
pub(crate) fn agent_urls(hosts: &[String], https: bool) -> Result<Vec<String>> {
    if let Some(h) = hosts.iter().find(|h| h.contains("://")) {
        return Err(Error::config(format!(
            "agent address {:?} must be host:port, without a scheme (use ?tls=true for https)",
            h.trim()
        )));
    }
    let scheme = if https { "https" } else { "http" };
    Ok(host_list(hosts.iter().map(|h| h.trim()), DEFAULT_PORT)
        .map_err(|e| Error::config(format!("agent address: {e}")))?
        .into_iter()
        .map(|hp| format!("{scheme}://{hp}"))
        .collect())
}

/// [`agent_urls`] of one address.
#[cfg(test)]
pub(crate) fn normalize_endpoint(host: &str, https: bool) -> Result<String> {
    Ok(agent_urls(&[host.to_string()], https)?.remove(0))
}

/// The connect timeout: configured, or the timeout shared among the agents (at least 200 ms).
fn connect_timeout(c: &ConsulConfig) -> Duration {
    c.connect_timeout.unwrap_or_else(|| {
        let agents = c.endpoints.len().clamp(1, 10) as u32;
        (c.timeout / agents).max(Duration::from_millis(200).min(c.timeout))
    })
}

/// The reqwest client for `c`, whether it speaks HTTPS, and its connect timeout.
pub(crate) fn build_client(c: &ConsulConfig) -> Result<(reqwest::Client, bool, Duration)> {
    if let Some(t) = &c.tls {
        t.validate(cfg!(feature = "tls"), "kv-consul")?;
    }
    let https = c.tls.is_some();
    let connect_timeout = connect_timeout(c);
    let builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    // Always hand reqwest a finished rustls config: it would otherwise look for a process-wide
    // default crypto provider (and panic without one).
    #[cfg(feature = "tls")]
    let builder = builder.use_preconfigured_tls(tls::client_config(c.tls.as_ref())?);
    let client = builder
        .build()
        .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
    Ok((client, https, connect_timeout))
}

#[cfg(feature = "tls")]
mod tls {
    //! rustls settings from [`TlsFiles`], per store (no process-wide provider).

    use std::sync::Arc;

    use kv_core::raw::TlsFiles;
    use kv_core::{Error, Result};
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::config(format!("{what}: {e}")))?;
        if certs.is_empty() {
            return Err(Error::config(format!("{what}: no PEM certificate found")));
        }
        Ok(certs)
    }

    /// The client config: `None` gives an unused one for plain HTTP (no roots: any HTTPS
    /// use fails closed).
    pub(super) fn client_config(files: Option<&TlsFiles>) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS: {e}")))?;
        let Some(files) = files else {
            return Ok(builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth());
        };
        let ca = files.read_ca()?.ok_or_else(|| {
            Error::config(
                "TLS needs the ca= option (a PEM CA bundle); the system trust store is not read",
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(&ca, "ca")? {
            roots
                .add(cert)
                .map_err(|e| Error::config(format!("ca: {e}")))?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| Error::config(format!("ca: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match &files.domain {
            None => webpki,
            Some(d) => Arc::new(Domain {
                name: ServerName::try_from(d.clone())
                    .map_err(|e| Error::config(format!("domain={d:?}: {e}")))?,
                inner: webpki,
            }),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match files.read_identity()? {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = certs(&cert, "cert")?;
                let key = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| Error::config(format!("key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::config(format!("cert/key: {e}")))
            }
        }
    }

    /// Verifies the server's certificate for `name` instead of the host dialled (`domain=`).
    #[derive(Debug)]
    struct Domain {
        name: ServerName<'static>,
        inner: Arc<WebPkiServerVerifier>,
    }

    impl ServerCertVerifier for Domain {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            self.inner
                .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }
}

#[async_trait]
impl Connect for ConsulDriver {
    type Config = ConsulConfig;

    fn parse_url(url: &str) -> Result<ConsulConfig> {
        ConsulConfig::from_url(url)
    }

    /// Connects (checks that an agent answers, has a leader and accepts the token).
    async fn connect(config: ConsulConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::config("no Consul agent address given"));
        }
        if config.timeout.is_zero() {
            return Err(Error::config("timeout must be greater than zero"));
        }
        let ns = Namespace::new(&config.namespace)
            .map_err(|e| Error::config(format!("namespace {:?}: {e}", config.namespace)))?;
        config.validate()?;
        let (client, https, connect_timeout) = build_client(&config)?;
        let bases = agent_urls(&config.endpoints, https)?;
        let http = Http::new(
            client,
            bases,
            config.token.as_ref().map(|t| t.expose()),
            config.timeout,
            connect_timeout,
        )?;
        let watch_http = http.lanes(
            config.watch_pool,
            #[cfg(feature = "tls")]
            tls::client_config(config.tls.as_ref())?,
        );
        let inner = Inner {
            http,
            pool: Pool::new(watch_http, config.watch_pool),
            ns,
            read: config.consistency,
            life: Lifecycle::new(),
            info: DriverInfo {
                backend: BACKEND,
                capabilities: capabilities(),
                timeout: config.timeout,
                reserved: &[],
            },
            locks: HeldLocks::new(),
        };
        check_agent(&inner).await?;
        Ok(ConsulDriver {
            inner: Arc::new(inner),
        })
    }
}

async fn check_agent(inner: &Inner) -> Result<()> {
    let http = &inner.http;
    let r = http
        .send(
            "connect",
            Method::GET,
            "/v1/status/leader",
            None,
            http.timeout,
        )
        .await?;
    if !r.status.is_success() {
        return Err(to_error(Failure::Status {
            operation: "connect".into(),
            key: String::new(),
            status: r.status,
            body: r.text(),
        }));
    }
    if r.text().trim_matches('"').is_empty() {
        return Err(Error::Unreachable {
            endpoint: http.endpoints(),
            message: "the Consul cluster has no leader".into(),
            source: None,
        });
    }
    // A KV read checks the token (a denied token gives 403 here, not later).
    let probe = inner.ns.join("kv-consul-connect-probe");
    http.kv_get(&probe, None, Consistency::Stale).await?;
    Ok(())
}
