//! The status server's accept loop (instead of `axum::serve`, which has no caps or timeouts):
//! connections are admitted by the connection table (`127.0.0.1` and `::1` keep a reserved
//! share, so the operator on the box and local health checks always get in), TLS handshakes
//! are bounded in time, a request head must arrive within the head timeout (hyper's header read
//! timeout), and a connection with no bytes either way for the idle timeout is closed. Each connection's slot
//! is given back when its task ends. Under HTTPS every response carries HSTS.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use crate::core::conn_table::ConnClass;
use crate::io::conns::{Conns, Timeouts};

/// `Strict-Transport-Security` sent under HTTPS: one year.
pub const HSTS: &str = "max-age=31536000";

/// Adds HSTS to every response (HTTPS only).
pub fn with_hsts(app: Router) -> Router {
    app.layer(axum::middleware::map_response(|mut res: axum::response::Response| async move {
        res.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
        res
    }))
}

/// Accepts on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    conns: Conns,
    timeouts: Timeouts,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // out of file descriptors and the like: back off instead of spinning
                tracing::debug!(error = %e, "status server accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = canonical(from.ip());
        let class = if is_local(ip) { ConnClass::Privileged } else { ConnClass::Ordinary };
        let Some(slot) = conns.admit(ip, class) else { continue };
        let (app, tls, conns) = (app.clone(), tls.clone(), conns.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(stream, from, app, timeouts, &conns).await,
                Some(acceptor) => {
                    match tokio::time::timeout(timeouts.handshake, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_connection(s, from, app, timeouts, &conns).await,
                        Ok(Err(e)) => tracing::debug!(%from, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            conns.note_timeout();
                            tracing::debug!(%from, "status server TLS handshake timed out")
                        }
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(io: S, from: SocketAddr, app: Router, t: Timeouts, conns: &Conns)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(app.layer(axum::Extension(ConnectInfo(from))));
    let io = TokioIo::new(IdleIo::new(io, t.http_idle));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(t.head)
        .serve_connection(io, svc)
        .await;
    if let Err(e) = served {
        if e.is_timeout() || e.to_string().contains("timed out") {
            conns.note_timeout();
        }
        tracing::debug!(%from, error = %e, "status server connection ended");
    }
}

/// The box's own clients (the operator's browser on the console, local health checks) connect
/// from `127.0.0.1` or `::1`; they keep the reserved share.
fn is_local(ip: IpAddr) -> bool {
    ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A stream that fails with `TimedOut` when no byte moved either way for `idle`.
struct IdleIo<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleIo<S> {
    fn new(inner: S, idle: Duration) -> Self {
        IdleIo { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    fn progressed(&mut self) {
        let next = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection idle")
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                self.progressed();
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
