//! SIP over TCP and TLS (RFC 3261 §18.3): accept loops, one reader and one writer task per
//! connection, messages split by the core's stream framer. Outbound TCP connections are opened
//! on demand when the core sends to a peer with no connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::conns::{ConnGuard, Conns, Timeouts};
use super::net::{NetEvent, NetTx};
use crate::core::carrier::acl::InboundAcl;
use crate::core::conn_table::ConnClass;
use crate::core::sip::framing::StreamFramer;
use crate::core::sip::{Peer, Transport};

/// Messages queued for one connection before the writer applies back-pressure.
const WRITE_QUEUE: usize = 256;

/// Who may hold a SIP stream connection, and for how long.
#[derive(Clone)]
pub struct StreamPolicy {
    /// Carriers' `inbound_from`: any other source is closed at once, without a word.
    pub acl: Arc<InboundAcl>,
    /// Carriers' proxies: they may use the reserved share of the connections.
    pub proxies: Arc<Vec<IpAddr>>,
    pub conns: Conns,
    pub timeouts: Timeouts,
}

impl StreamPolicy {
    /// A slot for a connection from `from`, or `None` (the stream is then dropped unanswered).
    fn admit(&self, from: SocketAddr) -> Option<ConnGuard> {
        let ip = canonical(from.ip());
        if self.acl.classify(ip).is_none() {
            self.conns.refused_source.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::trace!(%from, "stream from no carrier's address closed");
            return None;
        }
        self.conns.admit(ip, self.class(ip))
    }

    fn class(&self, ip: IpAddr) -> ConnClass {
        if self.proxies.contains(&ip) {
            ConnClass::Privileged
        } else {
            ConnClass::Ordinary
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub fn spawn_tcp_acceptor(listener: TcpListener, events: NetTx, policy: StreamPolicy) {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    let Some(guard) = policy.admit(from) else { continue };
                    let _ = stream.set_nodelay(true);
                    let peer = Peer { transport: Transport::Tcp, addr: from };
                    spawn_connection(stream, peer, events.clone(), guard, policy.clone());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

pub fn spawn_tls_acceptor(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    events: NetTx,
    policy: StreamPolicy,
) {
    tokio::spawn(async move {
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!(error = %e, "tls accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // the source is checked before any handshake: a stranger learns nothing
            let Some(guard) = policy.admit(from) else { continue };
            let acceptor = acceptor.clone();
            let events = events.clone();
            let policy = policy.clone();
            tokio::spawn(async move {
                let handshake = policy.timeouts.handshake;
                match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let peer = Peer { transport: Transport::Tls, addr: from };
                        spawn_connection(tls, peer, events, guard, policy);
                    }
                    Ok(Err(e)) => tracing::info!(%from, error = %e, "TLS handshake refused"),
                    Err(_) => {
                        policy.conns.note_timeout();
                        tracing::info!(%from, "TLS handshake timed out")
                    }
                }
            });
        }
    });
}

/// Opens an outbound TCP connection to `addr` and sends `first` on it.
/// Our own connections count against the total as privileged (they carry carrier traffic).
pub fn spawn_tcp_connect(addr: SocketAddr, first: Vec<u8>, events: NetTx, policy: StreamPolicy) {
    tokio::spawn(async move {
        let Some(guard) = policy.conns.admit(canonical(addr.ip()), ConnClass::Privileged) else {
            let peer = Peer { transport: Transport::Tcp, addr };
            let _ = events.send(NetEvent::Unreachable { peer }).await;
            return;
        };
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let peer = Peer { transport: Transport::Tcp, addr };
                let writer = spawn_connection(stream, peer, events, guard, policy);
                let _ = writer.send(first).await;
            }
            Ok(Err(e)) => {
                tracing::info!(%addr, error = %e, "tcp connect failed");
                let _ = events
                    .send(NetEvent::Unreachable { peer: Peer { transport: Transport::Tcp, addr } })
                    .await;
            }
            Err(_) => {
                tracing::info!(%addr, "tcp connect timed out");
                let _ = events
                    .send(NetEvent::Unreachable { peer: Peer { transport: Transport::Tcp, addr } })
                    .await;
            }
        }
    });
}

/// Splits a connection into a reader task (framing into NetEvents) and a writer task fed by
/// the returned channel, and tells the drive loop about it. The reader holds the connection's
/// slot: it is given back when the reader ends (closed, bad framing, or a timeout).
fn spawn_connection<S>(
    stream: S,
    peer: Peer,
    events: NetTx,
    guard: ConnGuard,
    policy: StreamPolicy,
) -> mpsc::Sender<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let connected = NetEvent::Connected { peer, writer: wtx.clone() };
    let ev = events.clone();
    tokio::spawn(async move {
        if ev.send(connected).await.is_err() {
            return;
        }
        let _slot = guard;
        if read_loop(&mut rd, peer, &ev, policy.timeouts).await == End::TimedOut {
            policy.conns.note_timeout();
        }
        let _ = ev.send(NetEvent::Disconnected { peer }).await;
    });
    tokio::spawn(async move {
        while let Some(data) = wrx.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    wtx
}

/// How a connection's reader ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Closed,
    TimedOut,
}

/// Reads and frames until the peer closes, the framing breaks, nothing arrives for the idle
/// timeout, or a message started is not complete within the head timeout (slowloris).
async fn read_loop<R: AsyncRead + Unpin>(
    rd: &mut R,
    peer: Peer,
    events: &NetTx,
    timeouts: Timeouts,
) -> End {
    let mut framer = StreamFramer::default();
    let mut buf = vec![0u8; 16 * 1024];
    // the deadline of the message under way, set when its first bytes arrive
    let mut message_deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let slow_message = async {
            match message_deadline.as_mut() {
                Some(deadline) => deadline.await,
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) | Err(_) => return End::Closed,
                Ok(n) => n,
            },
            _ = tokio::time::sleep(timeouts.idle) => {
                tracing::debug!(%peer.addr, "closing an idle stream");
                return End::TimedOut;
            }
            _ = slow_message => {
                tracing::info!(%peer.addr, "closing a stream whose message did not complete in time");
                return End::TimedOut;
            }
        };
        framer.push(&buf[..n]);
        let mut completed = false;
        while let Some(next) = framer.next_message() {
            match next {
                Ok(data) => {
                    completed = true;
                    if events.send(NetEvent::Sip { peer, data }).await.is_err() {
                        return End::Closed;
                    }
                }
                Err(e) => {
                    // a stream that lost its framing cannot be resynchronised: close it
                    tracing::info!(%peer.addr, error = %e, "closing stream with bad framing");
                    return End::Closed;
                }
            }
        }
        if !has_partial(&framer) {
            message_deadline = None;
        } else if completed || message_deadline.is_none() {
            message_deadline = Some(Box::pin(tokio::time::sleep(timeouts.head)));
        }
    }
}

/// Bytes of a message not yet complete (CRLF keep-alives between messages do not count).
fn has_partial(framer: &StreamFramer) -> bool {
    framer.buffered() > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts(head_ms: u64, idle_ms: u64) -> Timeouts {
        Timeouts {
            head: Duration::from_millis(head_ms),
            idle: Duration::from_millis(idle_ms),
            http_idle: Duration::from_secs(60),
            handshake: Duration::from_secs(5),
        }
    }

    fn peer() -> Peer {
        Peer { transport: Transport::Tcp, addr: "127.0.0.2:5060".parse().unwrap() }
    }

    const OPTIONS: &[u8] = b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n";

    #[tokio::test]
    async fn a_message_head_that_does_not_complete_in_time_closes_the_stream() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let (tx, mut rx) = mpsc::channel(8);
        let reader =
            tokio::spawn(
                async move { read_loop(&mut server, peer(), &tx, timeouts(200, 5000)).await },
            );
        client.write_all(OPTIONS).await.unwrap();
        client.write_all(b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: ").await.unwrap();
        // a byte every 50 ms keeps the stream busy but the head never completes
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if client.write_all(b"x").await.is_err() || reader.is_finished() {
                break;
            }
        }
        let end = tokio::time::timeout(Duration::from_secs(2), reader).await.unwrap().unwrap();
        assert_eq!(end, End::TimedOut);
        assert!(matches!(rx.recv().await, Some(NetEvent::Sip { .. })), "the whole one went on");
    }

    #[tokio::test]
    async fn an_idle_stream_is_closed_and_keepalives_count_as_traffic() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let (tx, _rx) = mpsc::channel(8);
        let reader =
            tokio::spawn(
                async move { read_loop(&mut server, peer(), &tx, timeouts(5000, 300)).await },
            );
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(b"\r\n\r\n").await.unwrap();
        }
        assert!(!reader.is_finished(), "CRLF keep-alives keep it open");
        let end = tokio::time::timeout(Duration::from_secs(2), reader).await.unwrap().unwrap();
        assert_eq!(end, End::TimedOut);
    }
}
