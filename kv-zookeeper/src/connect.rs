//! Opening a ZooKeeper session (plain or TLS), the connect-time checks, and the task that
//! replaces an expired session.

use std::sync::{Arc, Weak};
use std::time::Duration;

use kv_core::raw::{Lifecycle, Namespace};
use kv_core::{retry, Error, Result};
use zookeeper_client as zk;
use zookeeper_client::Client;

use crate::inner::{Conn, Inner};
use crate::ZkConfig;

/// Everything needed to open a session, kept for the sessions after an expiry.
#[derive(Clone)]
pub(crate) struct Dialer {
    cfg: ZkConfig,
    /// `host:port,host:port`.
    cluster: String,
    /// The same, one per entry (for [`crate::nodelay`]).
    hosts: Arc<Vec<String>>,
    #[cfg(feature = "tls")]
    tls: Option<zk::TlsOptions>,
}

impl Dialer {
    /// Checks the configuration and reads the TLS files.
    pub fn new(cfg: &ZkConfig) -> Result<Self> {
        cfg.validate()?;
        let hosts = cfg.hosts()?;
        Ok(Dialer {
            cluster: hosts.join(","),
            hosts: Arc::new(hosts),
            #[cfg(feature = "tls")]
            tls: cfg.tls.as_ref().map(tls_options).transpose()?,
            cfg: cfg.clone(),
        })
    }

    /// Opens one session.
    pub async fn dial(&self) -> std::result::Result<Client, zk::Error> {
        let mut c = Client::connector()
            .with_session_timeout(self.cfg.session_timeout)
            .with_fail_eagerly();
        if let Some((user, password)) = &self.cfg.digest {
            c = c.with_auth("digest", format!("{user}:{}", password.expose()).as_bytes());
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                // Ignored if another thread installed one meanwhile.
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            }
            return c.with_tls(tls.clone()).secure_connect(&self.cluster).await;
        }
        c.connect(&self.cluster).await
    }

    /// Turns Nagle's algorithm off on the session's socket (see [`crate::nodelay`]).
    pub async fn nodelay(&self) {
        crate::nodelay::apply(self.hosts.clone(), self.cfg.timeout).await;
    }
}

#[cfg(feature = "tls")]
fn tls_options(tls: &kv_core::raw::TlsFiles) -> Result<zk::TlsOptions> {
    let text = |pem: Vec<u8>, what: &str| {
        String::from_utf8(pem)
            .map_err(|_| Error::config(format!("the TLS {what} file is not UTF-8 PEM")))
    };
    let bad = |what: &str, e: zk::Error| Error::config(format!("TLS {what}: {e}"));
    let mut o = zk::TlsOptions::new();
    if let Some(ca) = tls.read_ca()? {
        o = o
            .with_pem_ca(&text(ca, "CA certificate")?)
            .map_err(|e| bad("CA certificate", e))?;
    }
    if let Some((cert, key)) = tls.read_identity()? {
        o = o
            .with_pem_identity(
                &text(cert, "client certificate")?,
                &text(key, "client key")?,
            )
            .map_err(|e| bad("client certificate or key", e))?;
    }
    Ok(o)
}

/// Opens the first session (bounded by the timeout), checks that the server answers with our
/// credentials, and starts the session monitor.
pub(crate) async fn connect(cfg: ZkConfig) -> Result<Arc<Inner>> {
    let dialer = Dialer::new(&cfg)?;
    let ns = Namespace::new(&cfg.namespace)
        .map_err(|e| Error::config(format!("namespace {:?}: {e}", cfg.namespace)))?;
    let endpoints = dialer.cluster.clone();
    let tls = if cfg.tls.is_some() {
        " over TLS (check ca=/cert=/key= and that the port is the server's secureClientPort)"
    } else {
        ""
    };
    let dialed = retry::timed("connect", cfg.timeout, async {
        dialer.dial().await.map_err(|e| {
            let cx = crate::error::Context {
                key: "",
                endpoints: &endpoints,
                timeout: cfg.timeout,
                ttl: false,
            };
            match crate::error::map(e, cx) {
                Error::Unreachable {
                    endpoint,
                    message,
                    source,
                } => Error::Unreachable {
                    endpoint,
                    message: format!("{message}{tls}"),
                    source,
                },
                Error::Timeout { .. } => Error::Unreachable {
                    endpoint: endpoints.clone(),
                    message: format!("no ZooKeeper session could be established{tls}"),
                    source: None,
                },
                other => other,
            }
        })
    })
    .await;
    let client = match dialed {
        Ok(c) => c,
        Err(Error::Timeout { after, .. }) => {
            return Err(Error::Unreachable {
                endpoint: endpoints,
                message: format!(
                    "no ZooKeeper session within {after:?}{}",
                    if cfg.tls.is_some() { " (TLS)" } else { "" }
                ),
                source: None,
            })
        }
        Err(e) => return Err(e),
    };
    dialer.nodelay().await;
    let inner = Arc::new(Inner::new(cfg.clone(), ns, endpoints, client));
    // Check the server answers with our credentials before returning.
    let check_path = inner.prefix_path("");
    let probe = inner.conn()?.client;
    let checked = retry::timed("connect", cfg.timeout, async {
        probe
            .check_stat(&check_path)
            .await
            .map_err(|e| inner.err(e, ""))
    })
    .await;
    match checked {
        Ok(_) | Err(Error::Unauthorized { .. }) => {}
        Err(e) => return Err(e),
    }
    drop(probe);
    tokio::spawn(session_monitor(
        Arc::downgrade(&inner),
        inner.life.clone(),
        dialer,
    ));
    Ok(inner)
}

/// Watches the session; after a terminal state (expiry) opens a new session and publishes it.
async fn session_monitor(inner: Weak<Inner>, life: Lifecycle, dialer: Dialer) {
    loop {
        let (mut sw, gen) = {
            let Some(i) = inner.upgrade() else { return };
            let Some(conn) = i.conn.borrow().clone() else {
                return;
            };
            (conn.client.state_watcher(), conn.gen)
        };
        if !sw.peek_state().is_terminated() {
            loop {
                tokio::select! {
                    s = sw.changed() => match s {
                        s if s.is_terminated() => break,
                        // Connected again (a new socket, maybe to another server).
                        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                            dialer.nodelay().await
                        }
                        _ => {}
                    },
                    _ = life.closed() => return,
                }
            }
        }
        drop(sw);
        tracing::info!(backend = crate::BACKEND, endpoints = %dialer.cluster, "ZooKeeper session ended; opening a new one");
        let mut backoff = retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            if life.is_closed() || inner.strong_count() == 0 {
                return;
            }
            match tokio::time::timeout(dialer.cfg.timeout, dialer.dial()).await {
                Ok(Ok(client)) => {
                    dialer.nodelay().await;
                    let Some(i) = inner.upgrade() else { return };
                    if life.is_closed() {
                        return;
                    }
                    tracing::info!(
                        backend = crate::BACKEND,
                        session = gen + 1,
                        "new ZooKeeper session"
                    );
                    i.conn.send_replace(Some(Conn {
                        client: Arc::new(client),
                        gen: gen + 1,
                    }));
                    break;
                }
                r => {
                    if let Ok(Err(e)) = r {
                        tracing::debug!(backend = crate::BACKEND, error = %e, "new ZooKeeper session failed; retrying");
                    }
                    tokio::select! {
                        _ = backoff.wait() => {},
                        _ = life.closed() => return,
                    }
                }
            }
        }
    }
}
