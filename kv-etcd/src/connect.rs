//! Connecting: the client, its options, TLS, and the connect-time probe.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, GetOptions, KvClient, LeaseClient, WatchClient};
use kv_core::raw::{Connect, DriverInfo, HeldLocks, Lifecycle, Namespace};
use kv_core::retry::timed;
use kv_core::{Error, Result};

use crate::config::EtcdConfig;
use crate::error::{map_err, Ctx};
use crate::hub::Hub;
use crate::{capabilities, lock, BACKEND};

/// Largest gRPC message the client decodes (lists and watch batches of large values).
const MAX_DECODE: usize = 512 * 1024 * 1024;

/// The etcd driver: etcd-client's clients plus the store's state. Wrapped in
/// [`Checked`](kv_core::raw::Checked) it is an [`EtcdStore`](crate::EtcdStore); its own
/// methods (`store.namespace()`) stay reachable through it.
pub struct EtcdDriver {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .field("namespace", &self.inner.ns.as_str())
            .finish()
    }
}

/// What the driver's background tasks (watches, lock keepers and monitors) share.
pub(crate) struct Inner {
    pub(crate) kv: KvClient,
    pub(crate) watch: WatchClient,
    pub(crate) lease: LeaseClient,
    pub(crate) ns: Namespace,
    pub(crate) info: DriverInfo,
    pub(crate) endpoints: String,
    pub(crate) life: Lifecycle,
    pub(crate) locks: HeldLocks<lock::Held>,
    /// `consistency=stale`: user reads are serializable (served by the member asked).
    pub(crate) stale: bool,
    /// The shared watch stream's task, started by the first watch.
    pub(crate) hub: OnceLock<Hub>,
    /// The batched initial reads of key watches, started by the first watch.
    pub(crate) reads: OnceLock<crate::batch::Reads>,
}

impl Inner {
    /// The handle's shared watch stream (its task starts on the first call).
    pub(crate) fn hub(&self) -> &Hub {
        self.hub.get_or_init(|| Hub::start(self))
    }
}

impl EtcdDriver {
    /// The normalized namespace.
    pub fn namespace(&self) -> &str {
        self.inner.ns.as_str()
    }
}

#[async_trait]
impl Connect for EtcdDriver {
    type Config = EtcdConfig;

    fn parse_url(url: &str) -> Result<EtcdConfig> {
        EtcdConfig::from_url(url)
    }

    /// Connects to the cluster and checks that it answers (and that the credentials work),
    /// within the configured timeout.
    async fn connect(config: EtcdConfig) -> Result<Self> {
        let (ns, urls) = config.validate()?;
        let endpoints = config.endpoints.join(",");
        let connect_timeout = config
            .connect_timeout
            .unwrap_or_else(|| config.timeout.min(Duration::from_secs(5)));
        let mut options = ConnectOptions::new()
            .with_connect_timeout(connect_timeout)
            // etcd's gRPC server tolerates pings every 5 s at most, and only with open streams.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(false)
            .with_require_leader(true);
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options
                .with_user(user.clone(), password.expose())
                .with_auto_token_refresh(true);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        let ctx = Ctx {
            endpoints: &endpoints,
            op: "connect",
            key: "",
            size: None,
            timeout: config.timeout,
        };
        let client = timed("connect", config.timeout, async {
            Client::connect(&urls, Some(options))
                .await
                .map_err(|e| map_err(e, &ctx))
        })
        .await
        .map_err(|e| connect_error(e, &endpoints, &config))?;
        let inner = Arc::new(Inner {
            kv: client.kv_client().max_decoding_message_size(MAX_DECODE),
            watch: client.watch_client().max_decoding_message_size(MAX_DECODE),
            lease: client.lease_client(),
            ns: Namespace::new(&ns)?,
            info: DriverInfo {
                backend: BACKEND,
                capabilities: capabilities(),
                timeout: config.timeout,
                // Lock bookkeeping lives beside the namespace (`<ns>\x01lock/`), not in it.
                reserved: &[],
            },
            endpoints: endpoints.clone(),
            life: Lifecycle::new(),
            locks: HeldLocks::new(),
            stale: config.consistency.is_stale(),
            hub: OnceLock::new(),
            reads: OnceLock::new(),
        });
        // Probe: a count-only read proves the cluster answers, has a leader and accepts us.
        let probe_key = if inner.ns.is_empty() {
            " ".to_string()
        } else {
            inner.ns.as_str().to_string()
        };
        inner
            .bounded(
                "connect",
                inner.kv_get(
                    "connect",
                    "",
                    probe_key.into_bytes(),
                    Some(GetOptions::new().with_count_only()),
                ),
            )
            .await
            .map_err(|e| connect_error(e, &endpoints, &config))?;
        tracing::debug!(backend = BACKEND, endpoints = %endpoints, "connected");
        Ok(EtcdDriver { inner })
    }
}

/// Connect-time errors, made explicit: a timeout means nothing answered; a connection the
/// server drops at once is usually a TLS mismatch, so say which setting to check.
fn connect_error(e: Error, endpoints: &str, config: &EtcdConfig) -> Error {
    match e {
        Error::Timeout { after, .. } => Error::Unreachable {
            endpoint: endpoints.to_string(),
            message: format!("no etcd endpoint answered within {after:?}"),
            source: None,
        },
        Error::Unreachable {
            endpoint,
            message,
            source,
        } => {
            let m = message.to_ascii_lowercase();
            let refused = ["refused", "dns", "no route", "unreachable"]
                .iter()
                .any(|x| m.contains(x));
            let tls = config.uses_tls();
            let dropped = !refused
                && !m.contains("invalid peer certificate")
                && (tls
                    || [
                        "broken pipe",
                        "connection closed",
                        "connection reset",
                        "h2 protocol",
                        "frame",
                        "eof",
                    ]
                    .iter()
                    .any(|x| m.contains(x)));
            let client_cert = config.tls.as_ref().is_some_and(|t| t.cert.is_some());
            let hint = match (dropped, tls, client_cert) {
                (true, true, false) => {
                    " (the server closed the TLS connection: does it require a client certificate? set cert= and key=)"
                }
                (true, true, true) => {
                    " (the server closed the TLS connection: was the client certificate refused?)"
                }
                (true, false, _) => {
                    " (the server closed the connection: does it use TLS? set ca=, and cert=/key= for mutual TLS)"
                }
                _ => "",
            };
            Error::Unreachable {
                endpoint,
                message: format!("{message}{hint}"),
                source,
            }
        }
        other => other,
    }
}

/// etcd-client's TLS settings from the shared [`TlsFiles`](kv_core::raw::TlsFiles).
#[cfg(feature = "tls")]
fn tls_options(files: &kv_core::raw::TlsFiles) -> Result<etcd_client::TlsOptions> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let mut tls = TlsOptions::new();
    if let Some(ca) = files.read_ca()? {
        tls = tls.ca_certificate(Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = files.read_identity()? {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    if let Some(d) = &files.domain {
        tls = tls.domain_name(d.clone());
    }
    Ok(tls)
}
