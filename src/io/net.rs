//! What the socket tasks tell the drive loop.

use tokio::sync::mpsc;

use crate::core::sip::Peer;

/// An event from a socket task to the drive loop.
#[derive(Debug)]
pub enum NetEvent {
    /// One SIP datagram or one framed stream message.
    Sip {
        peer: Peer,
        data: Vec<u8>,
    },
    /// An RTP/RTCP datagram on a media port.
    Rtp {
        port: u16,
        from: std::net::SocketAddr,
        data: Vec<u8>,
    },
    /// A stream connection is up; messages for `peer` go to `writer`.
    Connected {
        peer: Peer,
        writer: mpsc::Sender<Vec<u8>>,
    },
    /// A stream connection closed.
    Disconnected {
        peer: Peer,
    },
    /// SIP could not be delivered to `peer` (TCP connect failed, network unreachable).
    Unreachable {
        peer: Peer,
    },
    /// An agent WebSocket is open; frames for it go to `writer`.
    AiOpened {
        conn: u64,
        writer: mpsc::Sender<super::ai::WsCommand>,
    },
    /// An agent's `health_url` answered 2xx (a health probe).
    AiHealthy {
        conn: u64,
    },
    /// An agent WebSocket failed to open or closed.
    AiClosed {
        conn: u64,
        kind: crate::core::ai::FailureKind,
    },
    AiText {
        conn: u64,
        text: String,
    },
    AiBinary {
        conn: u64,
    },
    AiPong {
        conn: u64,
    },
}

pub type NetTx = mpsc::Sender<NetEvent>;
