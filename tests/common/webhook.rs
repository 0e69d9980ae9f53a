//! A webhook receiver for the callback tests: a small HTTP/1.1 server on a tokio
//! `TcpListener` (loopback) that records every request and answers as its script says
//! (a status, garbage, a hang), one script entry per request, then `Then` for the rest.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// How the server answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    /// Bytes that are not HTTP, then close.
    Garbage,
    /// Read the request, answer nothing, wait for the client to give up.
    Hang,
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
    pub answer: Answer,
    /// For `Hang`: how long until the client closed the connection.
    pub closed_after: Option<Duration>,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

#[derive(Debug)]
struct State {
    script: VecDeque<Answer>,
    then: Answer,
    hits: Vec<Hit>,
    /// Connections open now, per `Idempotency-Key`, and the most seen at once.
    open: HashMap<String, usize>,
    max_open_per_key: usize,
    open_total: usize,
    max_open_total: usize,
}

/// The running server; stopped on drop.
pub struct Webhook {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Webhook {
    /// Listens on `addr` (port 0: any) and answers `then` to every request.
    pub async fn start(addr: SocketAddr, then: Answer) -> Webhook {
        Webhook::start_shared(addr, then, None).await
    }

    /// As [`Webhook::start`], keeping the records of `previous` (a restarted receiver).
    pub async fn restart(addr: SocketAddr, then: Answer, previous: &Webhook) -> Webhook {
        Webhook::start_shared(addr, then, Some(previous.state.clone())).await
    }

    /// As [`Webhook::start`], over TLS (`https://`) with `acceptor`'s certificate.
    pub async fn start_tls(addr: SocketAddr, then: Answer, acceptor: TlsAcceptor) -> Webhook {
        Webhook::start_with(addr, then, None, Some(acceptor)).await
    }

    async fn start_shared(
        addr: SocketAddr,
        then: Answer,
        state: Option<Arc<Mutex<State>>>,
    ) -> Webhook {
        Webhook::start_with(addr, then, state, None).await
    }

    async fn start_with(
        addr: SocketAddr,
        then: Answer,
        state: Option<Arc<Mutex<State>>>,
        tls: Option<TlsAcceptor>,
    ) -> Webhook {
        let listener = TcpListener::bind(addr).await.expect("bind webhook");
        let addr = listener.local_addr().unwrap();
        let state = state.unwrap_or_else(|| {
            Arc::new(Mutex::new(State {
                script: VecDeque::new(),
                then,
                hits: Vec::new(),
                open: HashMap::new(),
                max_open_per_key: 0,
                open_total: 0,
                max_open_total: 0,
            }))
        });
        state.lock().unwrap().then = then;
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let shared = shared.clone();
                match tls.clone() {
                    None => conns.spawn(serve(stream, shared)),
                    Some(acceptor) => conns.spawn(async move {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve(stream, shared).await;
                        }
                    }),
                };
            }
        });
        Webhook { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/callback", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}/hooks/callback", self.addr)
    }

    /// The next requests get these answers, in order.
    pub fn script(&self, answers: &[Answer]) {
        self.state.lock().unwrap().script.extend(answers.iter().copied());
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.lock().unwrap().hits.clone()
    }

    /// (most connections of one request at once, most connections at once)
    pub fn max_open(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        (s.max_open_per_key, s.max_open_total)
    }

    /// Stops listening (connections in progress are dropped).
    pub fn stop(self) {}
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback address whose port nobody listens on (bound, then released).
pub async fn unused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, state: Arc<Mutex<State>>) {
    loop {
        let Some((headers, body)) = read_request(&mut stream).await else { return };
        let key = headers.get("idempotency-key").cloned().unwrap_or_default();
        let answer = {
            let mut s = state.lock().unwrap();
            let answer = match s.script.pop_front() {
                Some(a) => a,
                None => s.then,
            };
            let n = s.open.entry(key.clone()).or_insert(0);
            *n += 1;
            let n = *n;
            s.max_open_per_key = s.max_open_per_key.max(n);
            s.open_total += 1;
            s.max_open_total = s.max_open_total.max(s.open_total);
            let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            s.hits.push(Hit { at: Instant::now(), headers, body, answer, closed_after: None });
            answer
        };
        let started = Instant::now();
        let keep = match answer {
            Answer::Status(code) => {
                let head = format!("HTTP/1.1 {code} Test\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok");
                stream.write_all(head.as_bytes()).await.is_ok()
            }
            Answer::Garbage => {
                let _ = stream.write_all(b"\x00\x01this is not HTTP at all\r\n\r\n").await;
                false
            }
            Answer::Hang => {
                let mut buf = [0u8; 512];
                // until the client closes (or 30 s)
                let _ = tokio::time::timeout(Duration::from_secs(30), async {
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
                let mut s = state.lock().unwrap();
                if let Some(hit) = s
                    .hits
                    .iter_mut()
                    .rev()
                    .find(|h| h.header("idempotency-key") == Some(key.as_str()))
                {
                    hit.closed_after = Some(started.elapsed());
                }
                false
            }
        };
        {
            let mut s = state.lock().unwrap();
            if let Some(n) = s.open.get_mut(&key) {
                *n -= 1;
            }
            s.open_total -= 1;
        }
        if !keep {
            return;
        }
    }
}

/// One request: lower-cased headers and the body (by Content-Length).
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Option<(HashMap<String, String>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut headers = HashMap::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    headers.insert(":request-line".into(), head.lines().next().unwrap_or_default().to_string());
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some((headers, body))
}
