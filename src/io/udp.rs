//! SIP over UDP: one socket per `udp:` listen address, a task reading datagrams.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;

use super::net::{NetEvent, NetTx};
use crate::core::sip::{Peer, Transport};

/// Largest SIP datagram we accept (RFC 3261 allows up to 65535 over UDP).
const MAX_DATAGRAM: usize = 65_535;

pub async fn bind(addr: SocketAddr) -> std::io::Result<Arc<UdpSocket>> {
    Ok(Arc::new(UdpSocket::bind(addr).await?))
}

/// Reads datagrams until the drive loop goes away.
pub fn spawn_reader(socket: Arc<UdpSocket>, events: NetTx) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    let peer = Peer { transport: Transport::Udp, addr: from };
                    let ev = NetEvent::Sip { peer, data: buf[..n].to_vec() };
                    if events.send(ev).await.is_err() {
                        return;
                    }
                }
                // ICMP port unreachable and friends surface here on Linux: keep reading
                Err(e) => tracing::debug!(error = %e, "udp recv error"),
            }
        }
    });
}
