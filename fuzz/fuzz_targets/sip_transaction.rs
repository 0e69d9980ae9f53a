//! Sequences of SIP input for the RFC 3261 §17 transaction layer: datagrams from a few peers
//! (parsed, then handed in as requests or responses), our requests and responses, transport
//! errors and time passing (timers A-K fire). Never panics; its queues stay drained.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use trunkguard::core::sip::transaction::{TransactionLayer, TxEvent};
use trunkguard::core::sip::{parse_message, Peer, Request, Response, SipMessage, Transport};
use trunkguard::core::timer::SipTimers;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Wire bytes from peer `peer % 4`.
    Receive { peer: u8, udp: bool, data: Vec<u8> },
    /// Answer the last request received with this status.
    Respond { status: u16 },
    /// Send wire bytes as our request to `peer % 4` (when they parse as a request).
    Send { peer: u8, data: Vec<u8> },
    /// The transport failed for our last request.
    TransportError,
    /// Time passes.
    Advance { ms: u16 },
}

fn peer(i: u8, udp: bool) -> Peer {
    let addr: SocketAddr = format!("127.0.0.{}:5060", 2 + i % 4).parse().unwrap();
    let transport = if udp { Transport::Udp } else { Transport::Tcp };
    Peer { transport, addr }
}

fn answer(req: &Request, status: u16) -> Response {
    let mut resp = Response::new(status, "Fuzz");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for v in req.headers.get_all(name) {
            resp.headers.push(name, v.to_string());
        }
    }
    resp
}

fuzz_target!(|ops: Vec<Op>| {
    let mut now = Instant::now();
    let mut tx = TransactionLayer::new(SipTimers::default());
    let mut last_request: Option<Request> = None;
    let mut last_sent = None;
    for op in ops.into_iter().take(256) {
        match op {
            Op::Receive { peer: p, udp, data } => match parse_message(&data) {
                Ok(SipMessage::Request(req)) => tx.handle_request(now, peer(p, udp), req),
                Ok(SipMessage::Response(resp)) => tx.handle_response(now, peer(p, udp), resp),
                Err(_) => {}
            },
            Op::Respond { status } => {
                if let Some(req) = &last_request {
                    let _ = tx.send_response(now, answer(req, 100 + status % 600));
                }
            }
            Op::Send { peer: p, data } => {
                if let Ok(SipMessage::Request(req)) = parse_message(&data) {
                    last_sent = Some(tx.send_request(now, peer(p, true), req));
                }
            }
            Op::TransportError => {
                if let Some(id) = last_sent {
                    tx.handle_transport_error(now, id);
                }
            }
            Op::Advance { ms } => {
                now += Duration::from_millis(u64::from(ms));
                tx.handle_timeout(now);
            }
        }
        while tx.poll_transmit().is_some() {}
        while let Some(ev) = tx.poll_event() {
            if let TxEvent::Request { req, .. } = ev {
                last_request = Some(req);
            }
        }
        let _ = tx.poll_timeout();
    }
});
