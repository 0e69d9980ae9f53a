//! RTP sockets: one UDP socket per call port, bound when the core opens it and closed when
//! the core says the call is over. Reads go to the drive loop; sends never block.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::net::{NetEvent, NetTx};

pub struct MediaSockets {
    bind_ip: IpAddr,
    sockets: HashMap<u16, (Arc<UdpSocket>, JoinHandle<()>)>,
    pub send_errors: u64,
    pub bind_errors: u64,
}

impl MediaSockets {
    pub fn new(bind_ip: IpAddr) -> Self {
        MediaSockets { bind_ip, sockets: HashMap::new(), send_errors: 0, bind_errors: 0 }
    }

    /// Binds `port` and starts its reader. A failure is logged and counted; the call goes on
    /// without media on that port.
    pub fn open(&mut self, port: u16, events: NetTx) {
        if self.sockets.contains_key(&port) {
            return;
        }
        let socket = match bind_now(SocketAddr::new(self.bind_ip, port)) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                self.bind_errors += 1;
                tracing::warn!(port, error = %e, "cannot bind RTP port");
                return;
            }
        };
        let reader = socket.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                match reader.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        let ev = NetEvent::Rtp { port, from, data: buf[..n].to_vec() };
                        if events.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::trace!(port, error = %e, "rtp recv error"),
                }
            }
        });
        self.sockets.insert(port, (socket, task));
    }

    pub fn close(&mut self, port: u16) {
        if let Some((_, task)) = self.sockets.remove(&port) {
            task.abort();
        }
    }

    pub fn send(&mut self, port: u16, to: SocketAddr, data: &[u8]) {
        let Some((socket, _)) = self.sockets.get(&port) else {
            self.send_errors += 1;
            return;
        };
        if socket.try_send_to(data, to).is_err() {
            self.send_errors += 1;
        }
    }
}

/// Binds synchronously so the port is ready before the 200 OK that names it goes out.
fn bind_now(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let std_socket = std::net::UdpSocket::bind(addr)?;
    std_socket.set_nonblocking(true)?;
    UdpSocket::from_std(std_socket)
}
