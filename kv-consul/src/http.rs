//! The HTTP layer: one reqwest client, several agent addresses with failover, the ACL token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kv_core::{Error, Result};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::error::{is_tls_rejection, to_error, Failure};
use crate::lanes::Lanes;

pub(crate) const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-consul-token");
/// `X-Consul-Index` (a constant: looking a header up by `&str` parses the name each time).
pub(crate) const INDEX_HEADER: HeaderName = HeaderName::from_static("x-consul-index");

/// A response whose status the caller decides about.
pub(crate) struct Response {
    pub status: StatusCode,
    /// `X-Consul-Index`, when present.
    pub index: Option<u64>,
    pub body: bytes::Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_string()
    }
}

/// Characters kept as-is in a key's URL path; everything else is percent-encoded.
fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/')
}

/// `base` followed by `key` percent-encoded, e.g. a stored key for `/v1/kv/<key>` (Consul
/// decodes the path). Room is left for a query string.
pub(crate) fn encode_path(base: &str, key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(base.len() + key.len() + 32);
    out.push_str(base);
    // Runs of kept (ASCII) bytes are copied whole: a run starts and ends on char boundaries.
    let mut run = 0;
    for (i, b) in key.bytes().enumerate() {
        if keep(b) {
            continue;
        }
        if i > run {
            out.push_str(&key[run..i]);
        }
        out.push('%');
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xF)] as char);
        run = i + 1;
    }
    if run < key.len() {
        out.push_str(&key[run..]);
    }
    out
}

/// Each agent's base URL, parsed.
fn parse_bases(bases: &[String]) -> Result<Vec<reqwest::Url>> {
    bases
        .iter()
        .map(|b| {
            reqwest::Url::parse(b).map_err(|e| Error::config(format!("agent address {b:?}: {e}")))
        })
        .collect()
}

/// `base` with `path_and_query` (already percent-encoded, e.g. by [`encode_path`]) in place of
/// its path and query: the URL that parsing `base` + `path_and_query` gives, parsing only the
/// path and query.
pub(crate) fn with_path(base: &reqwest::Url, path_and_query: &str) -> reqwest::Url {
    let mut url = base.clone();
    match path_and_query.split_once('?') {
        Some((path, query)) => {
            url.set_path(path);
            url.set_query(Some(query));
        }
        None => url.set_path(path_and_query),
    }
    url
}

/// The client for a set of Consul agents.
pub(crate) struct Http {
    client: reqwest::Client,
    /// `http://h:p` / `https://h:p`, no trailing slash.
    bases: Vec<String>,
    /// `bases`, parsed once: a request URL is a clone with its path and query set, which skips
    /// parsing the scheme and host (with its IDNA check) on every request.
    urls: Vec<reqwest::Url>,
    current: AtomicUsize,
    /// `X-Consul-Token`, validated once (marked sensitive: never printed).
    token: Option<HeaderValue>,
    pub timeout: Duration,
    /// Connect timeout of the client (for error messages).
    connect_timeout: Duration,
    /// The watch pool's own connections: GET requests go there instead of `client`.
    lanes: Option<Arc<Lanes>>,
}

impl Http {
    pub fn new(
        client: reqwest::Client,
        bases: Vec<String>,
        token: Option<&str>,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self> {
        let token = token
            .map(|t| {
                let mut v = HeaderValue::from_str(t).map_err(|_| {
                    Error::config("the ACL token must not contain control or non-ASCII characters")
                })?;
                v.set_sensitive(true);
                Ok::<_, Error>(v)
            })
            .transpose()?;
        let urls = parse_bases(&bases)?;
        Ok(Http {
            client,
            urls,
            bases,
            current: AtomicUsize::new(0),
            token,
            timeout,
            connect_timeout,
            lanes: None,
        })
    }

    /// The same agents and token over at most `size` connections of the watch pool's own.
    pub fn lanes(&self, size: usize, #[cfg(feature = "tls")] tls: rustls::ClientConfig) -> Http {
        let lanes = Lanes::new(
            self.bases.clone(),
            self.token.clone(),
            self.connect_timeout,
            size,
            #[cfg(feature = "tls")]
            tls,
        );
        Http {
            client: self.client.clone(),
            bases: self.bases.clone(),
            urls: self.urls.clone(),
            current: AtomicUsize::new(0),
            token: self.token.clone(),
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            lanes: Some(Arc::new(lanes)),
        }
    }

    /// The local ports of the watch pool's connections so far (empty for other clients).
    pub fn dialed_ports(&self) -> Vec<u16> {
        self.lanes
            .as_ref()
            .map(|l| l.dialed_ports())
            .unwrap_or_default()
    }

    pub fn endpoints(&self) -> String {
        self.bases.join(",")
    }

    /// Sends one request, trying the next agent on connection errors, bounded by `budget`.
    pub async fn send(
        &self,
        operation: &str,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        budget: Duration,
    ) -> Result<Response> {
        if let Some(lanes) = &self.lanes {
            debug_assert!(method == Method::GET && body.is_none());
            return lanes.get(operation, path_and_query, budget).await;
        }
        match tokio::time::timeout(budget, self.send_inner(method, path_and_query, body)).await {
            Ok(r) => r,
            Err(_) => Err(to_error(Failure::Timeout {
                operation: operation.to_string(),
                after: budget,
            })),
        }
    }

    /// [`Http::send`] for the single request of a user call, without a timer of its own:
    /// kv-core's checking layer bounds the whole call by the same store timeout (one timer
    /// per call instead of two). Never for background work.
    pub async fn send_in_call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response> {
        debug_assert!(self.lanes.is_none());
        self.send_inner(method, path_and_query, body).await
    }

    async fn send_inner(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response> {
        // Bytes: cloning for a retry on the next agent does not copy the body.
        let body = body.map(bytes::Bytes::from);
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let base = &self.bases[idx];
            let mut req = self
                .client
                .request(method.clone(), with_path(&self.urls[idx], path_and_query));
            if let Some(t) = &self.token {
                req = req.header(TOKEN_HEADER, t.clone());
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            match req.send().await {
                Ok(resp) => {
                    if i > 0 {
                        self.current.store(idx, Ordering::Relaxed);
                        tracing::info!(backend = "consul", agent = %base, "failed over to another agent");
                    }
                    let status = resp.status();
                    let index = resp
                        .headers()
                        .get(&INDEX_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    let body = match resp.bytes().await {
                        Ok(b) => b,
                        Err(error) => {
                            return Err(to_error(Failure::Transport {
                                endpoint: base.clone(),
                                error,
                                timeout: self.connect_timeout,
                            }))
                        }
                    };
                    return Ok(Response {
                        status,
                        index,
                        body,
                    });
                }
                Err(error) => {
                    let retry_next = error.is_connect() && !is_tls_rejection(&error);
                    let e = to_error(Failure::Transport {
                        endpoint: base.clone(),
                        error,
                        timeout: self.connect_timeout,
                    });
                    if !retry_next {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::config("no Consul address configured")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded() {
        assert_eq!(
            encode_path("/v1/kv/", "a/b c/%?#"),
            "/v1/kv/a/b%20c/%25%3F%23"
        );
        assert_eq!(encode_path("", "ünï"), "%C3%BCn%C3%AF");
        assert_eq!(encode_path("/", "é"), "/%C3%A9");
        assert_eq!(encode_path("", ""), "");
        // Every string up to 3 chars over a mixed alphabet against the byte-by-byte rule.
        let alphabet = ['a', '/', ' ', '%', 'é', '€', '-', '😀'];
        let mut words = vec![String::new()];
        for _ in 0..3 {
            let next: Vec<String> = words
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            words.extend(next);
        }
        for w in &words {
            let mut want = String::new();
            for b in w.bytes() {
                if keep(b) {
                    want.push(b as char);
                } else {
                    want.push_str(&format!("%{b:02X}"));
                }
            }
            assert_eq!(encode_path("", w), want, "{w:?}");
        }
    }

    #[test]
    fn a_path_on_a_parsed_base_is_the_url_of_the_whole_string() {
        let bases = [
            "http://127.0.0.1:8500",
            "https://[::1]:8501",
            "http://agent.local",
        ];
        let paths = [
            "/v1/kv/a/b%20c/%25%3F%23",
            "/v1/kv/a?recurse&consistent&index=7&wait=16000ms",
            "/v1/txn?stale",
            "/v1/status/leader",
            "/v1/kv/%C3%BCn%C3%AF?",
            "/v1/kv/x?a=%3F?b",
        ];
        for b in bases {
            let base = reqwest::Url::parse(b).unwrap();
            for p in paths {
                let whole = reqwest::Url::parse(&format!("{b}{p}")).unwrap();
                assert_eq!(with_path(&base, p), whole, "{b} + {p}");
            }
        }
        for w in ["", "a", "a/b c", "%", "é/€", "😀/-"] {
            let p = encode_path("/v1/kv/", w);
            let base = reqwest::Url::parse(bases[0]).unwrap();
            let whole = reqwest::Url::parse(&format!("{}{p}", bases[0])).unwrap();
            assert_eq!(with_path(&base, &p), whole, "{w:?}");
        }
    }

    /// The request URL (which holds the key) must not decide how a transport error is read.
    #[tokio::test]
    async fn url_words_do_not_classify_transport_errors() {
        let (client, _, timeout) =
            crate::connect::build_client(&crate::ConsulConfig::new(["h"])).unwrap();
        let dead = kv_testkit::free_port();
        let error = client
            .get(format!(
                "http://127.0.0.1:{dead}/v1/kv/tls/certificate/badcertificate"
            ))
            .send()
            .await
            .unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        assert!(!is_tls_rejection(&error), "{error:?}");
        let e = to_error(Failure::Transport {
            endpoint: format!("http://127.0.0.1:{dead}"),
            error,
            timeout,
        });
        assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
    }
}
