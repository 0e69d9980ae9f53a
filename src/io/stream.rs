//! SIP over TCP and TLS (RFC 3261 §18.3): accept loops, one reader and one writer task per
//! connection, messages split by the core's stream framer. Outbound TCP connections are opened
//! on demand when the core sends to a peer with no connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::net::{NetEvent, NetTx};
use crate::core::sip::framing::StreamFramer;
use crate::core::sip::{Peer, Transport};

/// Messages queued for one connection before the writer applies back-pressure.
const WRITE_QUEUE: usize = 256;
/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn spawn_tcp_acceptor(listener: TcpListener, events: NetTx) {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    let _ = stream.set_nodelay(true);
                    let peer = Peer { transport: Transport::Tcp, addr: from };
                    spawn_connection(stream, peer, events.clone());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

pub fn spawn_tls_acceptor(listener: TcpListener, acceptor: TlsAcceptor, events: NetTx) {
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
            let acceptor = acceptor.clone();
            let events = events.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let peer = Peer { transport: Transport::Tls, addr: from };
                        spawn_connection(tls, peer, events);
                    }
                    Ok(Err(e)) => tracing::info!(%from, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%from, "TLS handshake timed out"),
                }
            });
        }
    });
}

/// Opens an outbound TCP connection to `addr` and sends `first` on it.
pub fn spawn_tcp_connect(addr: SocketAddr, first: Vec<u8>, events: NetTx) {
    tokio::spawn(async move {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let peer = Peer { transport: Transport::Tcp, addr };
                let writer = spawn_connection(stream, peer, events);
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
/// the returned channel, and tells the drive loop about it.
fn spawn_connection<S>(stream: S, peer: Peer, events: NetTx) -> mpsc::Sender<Vec<u8>>
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
        read_loop(&mut rd, peer, &ev).await;
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

async fn read_loop<R: AsyncRead + Unpin>(rd: &mut R, peer: Peer, events: &NetTx) {
    let mut framer = StreamFramer::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        while let Some(next) = framer.next_message() {
            match next {
                Ok(data) => {
                    if events.send(NetEvent::Sip { peer, data }).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // a stream that lost its framing cannot be resynchronised: close it
                    tracing::info!(%peer.addr, error = %e, "closing stream with bad framing");
                    return;
                }
            }
        }
    }
}
