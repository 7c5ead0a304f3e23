//! The watch pool's transport: GET requests over at most N HTTP/1.1 connections of its own.
//!
//! reqwest's pool cannot promise a bound (a request that finds no idle connection opens one
//! even if another is about to become idle, and a cancelled request's connection closes
//! later), so the watch pool keeps its connections itself: a request takes an idle
//! connection (waiting until it is ready) or opens one, holds one of N permits until its
//! connection is back in the idle list or closed, and a connection is closed (its socket
//! gone) before that permit is released.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use kv_core::{Error, Result};
use reqwest::header::{HeaderValue, HOST};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::error::{to_error, Failure};
use crate::http::Response;

/// One connection: its agent, its request handle and the task driving it.
struct Conn {
    agent: usize,
    send: SendRequest<Empty<Bytes>>,
    task: JoinHandle<()>,
}

impl Conn {
    /// Closes the connection; returns once its socket is closed.
    async fn close(self) {
        drop(self.send);
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The connections of one watch pool.
pub(crate) struct Lanes {
    /// `http://h:p` / `https://h:p`.
    bases: Vec<String>,
    current: AtomicUsize,
    token: Option<HeaderValue>,
    connect_timeout: Duration,
    #[cfg(feature = "tls")]
    tls: tokio_rustls::TlsConnector,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Conn>>,
    /// The local port of every connection opened (for tests and the benchmark).
    dialed: Mutex<Vec<u16>>,
}

fn unreachable(
    endpoint: &str,
    what: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Unreachable {
        endpoint: endpoint.to_string(),
        message: format!("{what}: {}", kv_core::error::error_chain(&e)),
        source: Some(Box::new(e)),
    }
}

impl Lanes {
    pub fn new(
        bases: Vec<String>,
        token: Option<HeaderValue>,
        connect_timeout: Duration,
        size: usize,
        #[cfg(feature = "tls")] tls: rustls::ClientConfig,
    ) -> Lanes {
        Lanes {
            bases,
            current: AtomicUsize::new(0),
            token,
            connect_timeout,
            #[cfg(feature = "tls")]
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            permits: Arc::new(Semaphore::new(size)),
            idle: Mutex::new(Vec::new()),
            dialed: Mutex::new(Vec::new()),
        }
    }

    /// The local ports of the connections opened so far, closed ones included.
    pub fn dialed_ports(&self) -> Vec<u16> {
        self.dialed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `GET path_and_query`, bounded by `budget`. Dropping the future cancels the request (its
    /// connection is closed before its permit is released).
    pub async fn get(
        self: &Arc<Self>,
        operation: &str,
        path: &str,
        budget: Duration,
    ) -> Result<Response> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let (mut tx, rx) = oneshot::channel();
        let (lanes, path) = (self.clone(), path.to_string());
        tokio::spawn(async move {
            let mut slot = None;
            let r = tokio::select! {
                r = lanes.exchange(&path, &mut slot) => Some(r),
                _ = tx.closed() => None,
                _ = tokio::time::sleep(budget) => Some(Err(Error::Timeout { operation: String::new(), after: budget })),
            };
            match (&r, slot) {
                (Some(Ok(_)), Some(c)) => {
                    lanes.idle.lock().unwrap_or_else(|p| p.into_inner()).push(c)
                }
                (_, Some(c)) => c.close().await,
                (_, None) => {}
            }
            drop(permit);
            if let Some(r) = r {
                let _ = tx.send(r);
            }
        });
        match rx.await {
            Ok(Err(Error::Timeout { after, .. })) => Err(to_error(Failure::Timeout {
                operation: operation.to_string(),
                after,
            })),
            Ok(r) => r,
            Err(_) => Err(Error::Closed),
        }
    }

    /// One request on the connection in `slot` (taken or opened first); a request that fails
    /// on a reused connection (closed by the agent meanwhile) is sent once more on a new one.
    async fn exchange(&self, path: &str, slot: &mut Option<Conn>) -> Result<Response> {
        for attempt in 0..2 {
            let reused = match slot {
                Some(_) => false,
                None => {
                    let (c, reused) = self.checkout().await?;
                    *slot = Some(c);
                    reused
                }
            };
            let conn = slot.as_mut().expect("connection");
            let base = &self.bases[conn.agent];
            let authority = base.split_once("://").map_or(base.as_str(), |(_, a)| a);
            let mut req = hyper::Request::get(path).header(HOST, authority);
            if let Some(t) = &self.token {
                req = req.header(crate::http::TOKEN_HEADER, t.clone());
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| Error::invalid_argument(e.to_string()))?;
            match conn.send.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let index = resp
                        .headers()
                        .get(&crate::http::INDEX_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    let body = resp
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| unreachable(base, "reading the answer", e))?
                        .to_bytes();
                    return Ok(Response {
                        status,
                        index,
                        body,
                    });
                }
                Err(_) if reused && attempt == 0 => {
                    if let Some(c) = slot.take() {
                        c.close().await;
                    }
                }
                Err(e) => return Err(unreachable(base, "request failed", e)),
            }
        }
        unreachable!("the second attempt returns")
    }

    /// An idle connection to the current agent that is ready (`true`), or a new one.
    async fn checkout(&self) -> Result<(Conn, bool)> {
        loop {
            let c = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(mut c) = c else {
                return Ok((self.connect().await?, false));
            };
            if c.agent == self.current.load(Ordering::Relaxed) && c.send.ready().await.is_ok() {
                return Ok((c, true));
            }
            c.close().await;
        }
    }

    /// A new connection, trying the agents in turn from the current one.
    async fn connect(&self) -> Result<Conn> {
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            match tokio::time::timeout(self.connect_timeout, self.dial(idx)).await {
                Ok(Ok(c)) => {
                    if i > 0 {
                        self.current.store(idx, Ordering::Relaxed);
                    }
                    return Ok(c);
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(Error::Unreachable {
                        endpoint: self.bases[idx].clone(),
                        message: format!("no connection within {:?}", self.connect_timeout),
                        source: None,
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::config("no Consul address configured")))
    }

    async fn dial(&self, idx: usize) -> Result<Conn> {
        let base = &self.bases[idx];
        let (scheme, authority) = base.split_once("://").unwrap_or(("http", base));
        let tcp = TcpStream::connect(authority)
            .await
            .map_err(|e| unreachable(base, "connection failed", e))?;
        let _ = tcp.set_nodelay(true);
        if let Ok(a) = tcp.local_addr() {
            self.dialed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(a.port());
        }
        if scheme == "https" {
            #[cfg(feature = "tls")]
            {
                let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| Error::config(format!("agent address {host:?}: {e}")))?;
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(base, "TLS handshake failed", e))?;
                return self.handshake(idx, TokioIo::new(tls)).await;
            }
            #[cfg(not(feature = "tls"))]
            return Err(Error::config("https needs the `tls` feature of kv-consul"));
        }
        self.handshake(idx, TokioIo::new(tcp)).await
    }

    async fn handshake<T>(&self, idx: usize, io: T) -> Result<Conn>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (send, conn) = http1::handshake(io)
            .await
            .map_err(|e| unreachable(&self.bases[idx], "HTTP handshake failed", e))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            agent: idx,
            send,
            task,
        })
    }
}
