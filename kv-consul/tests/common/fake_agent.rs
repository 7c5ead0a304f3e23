//! A scripted HTTP/1.1 "agent" on 127.0.0.1, for answers a real agent cannot be made to give
//! on demand (keep-alive connections; `Content-Length` bodies only).

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One answer: the status (`"200 OK"`), `X-Consul-Index` and the JSON body.
pub struct Answer {
    pub status: &'static str,
    pub index: u64,
    pub body: String,
}

impl Answer {
    /// `200 OK` with this index and body.
    pub fn ok(index: u64, body: impl Into<String>) -> Self {
        Answer {
            status: "200 OK",
            index,
            body: body.into(),
        }
    }
}

/// Answers every request with `answer(method, target)` on a new loopback port; the address.
pub async fn serve<F, Fut>(answer: F) -> String
where
    F: Fn(String, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let mut parts = line.split(' ');
                    let method = parts.next().unwrap_or("").to_string();
                    let target = parts.next().unwrap_or("").to_string();
                    let a = answer(method, target).await;
                    let resp = format!(
                        "HTTP/1.1 {}\r\nContent-Type: application/json\r\nX-Consul-Index: {}\r\nX-Consul-Knownleader: true\r\nContent-Length: {}\r\n\r\n{}",
                        a.status,
                        a.index,
                        a.body.len(),
                        a.body
                    );
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
