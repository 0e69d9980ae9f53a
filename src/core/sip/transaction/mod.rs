//! The SIP transaction layer (RFC 3261 §17): client and server, INVITE and non-INVITE.
//!
//! [`TransactionLayer`] owns every live transaction, matches incoming messages to them
//! ([`key`]), runs timers A-L from [`crate::core::timer`], and queues wire bytes
//! ([`TransactionLayer::poll_transmit`]) and TU events ([`TransactionLayer::poll_event`]).
//!
//! Choices beyond RFC 3261:
//! - INVITE server: the layer sends `100 Trying` itself when the TU has not sent any response
//!   within 200 ms (Timer `Trying`). A 2xx moves it to RFC 6026 `Accepted` (Timer L = 64·T1):
//!   INVITE retransmissions are absorbed, further 2xx from the TU (its §13.3.1.4
//!   retransmissions) may go through [`TransactionLayer::send_response`] or `send_stateless`.
//! - INVITE client: a 2xx terminates it, and its branch is remembered for 64·T1 so that 2xx
//!   retransmissions (and forked 2xx) still reach the TU with the original id. Timer B only
//!   runs in Calling (RFC 3261 Figure 5); in Proceeding a 3-minute Timer C guards against a
//!   peer that never sends a final response.
//! - Responses of server transactions go to the peer the request came from.

mod client_invite;
mod client_non_invite;
mod key;
mod server_invite;
mod server_non_invite;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::headers::HeaderError;
use super::message::{Method, Request, Response, SipMessage};
use super::transport::{Peer, Transport};
use crate::core::timer::SipTimers;
use client_invite::ClientInvite;
use client_non_invite::ClientNonInvite;
use server_invite::ServerInvite;
use server_non_invite::ServerNonInvite;

pub use key::{new_branch, ClientKey, Rfc2543Key, ServerKey, MAGIC_COOKIE};

/// Identifies a client transaction in [`TxEvent`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(pub u64);

/// What the transaction layer tells the transaction user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// A new request for the TU (not a retransmission). Includes ACK for a 2xx (no transaction
    /// matches it) and CANCEL (the TU answers both CANCEL and the INVITE it cancels).
    Request { peer: Peer, req: Request },
    /// A response for a client transaction (provisional and final; 2xx retransmissions for
    /// INVITE are delivered too, since the TU must re-ACK them).
    Response { id: ClientTxId, resp: Response },
    /// Timer B / F (or C) fired, or a transport error: the request got no final response.
    Timeout { id: ClientTxId },
    /// Timer H fired: an INVITE server transaction that sent a non-2xx final never got its ACK.
    AckTimeout { call_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TxError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("no server transaction matches the response")]
    NoServerTransaction,
    #[error("the server transaction already sent its final response")]
    AlreadyFinal,
    #[error("status {0} cannot be sent")]
    BadStatus(u16),
    #[error("ACK is sent without a transaction (send_stateless)")]
    AckHasNoTransaction,
    #[error("a client transaction with this branch and method is live")]
    DuplicateBranch,
}

/// Queued output shared by all transactions.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    transmits: VecDeque<(Peer, Vec<u8>)>,
    events: VecDeque<TxEvent>,
}

impl Outbox {
    fn send(&mut self, peer: Peer, bytes: Vec<u8>) {
        self.transmits.push_back((peer, bytes));
    }

    fn event(&mut self, event: TxEvent) {
        self.events.push_back(event);
    }
}

/// Response classes as the state machines see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Provisional,
    Success,
    Failure,
}

fn classify(status: u16) -> Result<Class, TxError> {
    match status {
        100..=199 => Ok(Class::Provisional),
        200..=299 => Ok(Class::Success),
        300..=699 => Ok(Class::Failure),
        other => Err(TxError::BadStatus(other)),
    }
}

/// How long a transaction lingers in Completed/Confirmed: `udp` on UDP, zero when reliable.
fn linger(transport: Transport, udp: Duration) -> Duration {
    if transport.is_reliable() {
        Duration::ZERO
    } else {
        udp
    }
}

/// A response to `req` with Via, From, To, Call-ID and CSeq copied (§8.2.6.2), no To tag added.
pub(crate) fn response_to(req: &Request, status: u16, reason: &str) -> Response {
    let mut resp = Response::new(status, reason);
    for name in ["Via", "From", "To", "Call-ID", "CSeq", "Timestamp"] {
        for value in req.headers.get_all(name) {
            resp.headers.push(name, value);
        }
    }
    resp
}

enum ClientTx {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

impl ClientTx {
    fn peer(&self) -> Peer {
        match self {
            ClientTx::Invite(t) => t.peer(),
            ClientTx::NonInvite(t) => t.peer(),
        }
    }

    fn on_response(&mut self, now: Instant, resp: Response, out: &mut Outbox) {
        match self {
            ClientTx::Invite(tx) => tx.on_response(now, resp, out),
            ClientTx::NonInvite(tx) => tx.on_response(now, resp, out),
        }
    }

    fn on_timeout(&mut self, now: Instant, out: &mut Outbox) {
        match self {
            ClientTx::Invite(tx) => tx.on_timeout(now, out),
            ClientTx::NonInvite(tx) => tx.on_timeout(now, out),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            ClientTx::Invite(tx) => tx.poll_timeout(),
            ClientTx::NonInvite(tx) => tx.poll_timeout(),
        }
    }

    fn is_terminated(&self) -> bool {
        match self {
            ClientTx::Invite(tx) => tx.is_terminated(),
            ClientTx::NonInvite(tx) => tx.is_terminated(),
        }
    }
}

#[allow(clippy::large_enum_variant)] // one per transaction, never moved after insertion
enum ServerTx {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

impl ServerTx {
    fn on_request(&mut self, now: Instant, peer: Peer, req: Request, out: &mut Outbox) {
        match self {
            ServerTx::Invite(tx) => tx.on_request(now, peer, req, out),
            ServerTx::NonInvite(tx) => tx.on_request(out),
        }
    }

    fn send_response(
        &mut self,
        now: Instant,
        resp: Response,
        out: &mut Outbox,
    ) -> Result<(), TxError> {
        match self {
            ServerTx::Invite(tx) => tx.send_response(now, resp, out),
            ServerTx::NonInvite(tx) => tx.send_response(now, resp, out),
        }
    }

    fn on_timeout(&mut self, now: Instant, out: &mut Outbox) {
        match self {
            ServerTx::Invite(tx) => tx.on_timeout(now, out),
            ServerTx::NonInvite(tx) => tx.on_timeout(now),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            ServerTx::Invite(tx) => tx.poll_timeout(),
            ServerTx::NonInvite(tx) => tx.poll_timeout(),
        }
    }

    fn is_terminated(&self) -> bool {
        match self {
            ServerTx::Invite(tx) => tx.is_terminated(),
            ServerTx::NonInvite(tx) => tx.is_terminated(),
        }
    }
}

struct ClientEntry {
    key: ClientKey,
    tx: ClientTx,
}

struct ServerEntry {
    key: ServerKey,
    tx: ServerTx,
}

/// Every live transaction, keyed for matching; ordered maps keep timer processing deterministic.
pub struct TransactionLayer {
    timers: SipTimers,
    next_client: u64,
    next_server: u64,
    clients: BTreeMap<ClientTxId, ClientEntry>,
    client_index: HashMap<ClientKey, ClientTxId>,
    servers: BTreeMap<u64, ServerEntry>,
    server_index: HashMap<ServerKey, u64>,
    /// Branches of ended INVITE client transactions, for late 2xx: id, forget-at and the
    /// address the INVITE went to.
    ended_invites: HashMap<String, (ClientTxId, Instant, IpAddr)>,
    out: Outbox,
    dropped_responses: u64,
    dropped_requests: u64,
}

impl TransactionLayer {
    pub fn new(timers: SipTimers) -> Self {
        TransactionLayer {
            timers,
            next_client: 0,
            next_server: 0,
            clients: BTreeMap::new(),
            client_index: HashMap::new(),
            servers: BTreeMap::new(),
            server_index: HashMap::new(),
            ended_invites: HashMap::new(),
            out: Outbox::default(),
            dropped_responses: 0,
            dropped_requests: 0,
        }
    }

    /// Incoming request from `peer`, matched per §17.2.3. A retransmission makes its server
    /// transaction resend the last response and produces no event.
    pub fn handle_request(&mut self, now: Instant, peer: Peer, req: Request) {
        let key = match ServerKey::from_request(&req) {
            Ok(key) => key,
            Err(err) => {
                self.dropped_requests += 1;
                tracing::debug!(?peer, %err, "request without usable Via/CSeq dropped");
                return;
            }
        };
        if let Some(sid) = self.find_server(&key, &req) {
            if let Some(entry) = self.servers.get_mut(&sid) {
                entry.tx.on_request(now, peer, req, &mut self.out);
            }
            self.reap_server(sid);
            return;
        }
        if req.method == Method::Ack {
            self.out.event(TxEvent::Request { peer, req });
            return;
        }
        self.create_server(now, peer, key, req);
    }

    fn create_server(&mut self, now: Instant, peer: Peer, key: ServerKey, req: Request) {
        let tx = match req.method {
            Method::Invite => {
                ServerTx::Invite(ServerInvite::new(now, peer, req.clone(), self.timers))
            }
            _ => ServerTx::NonInvite(ServerNonInvite::new(peer, self.timers)),
        };
        let sid = self.next_server;
        self.next_server += 1;
        self.server_index.insert(key.clone(), sid);
        self.servers.insert(sid, ServerEntry { key, tx });
        self.out.event(TxEvent::Request { peer, req });
    }

    fn find_server(&self, key: &ServerKey, req: &Request) -> Option<u64> {
        match key {
            ServerKey::Rfc2543(ack) if req.method == Method::Ack => self.find_2543_invite(ack),
            _ => self.server_index.get(key).copied(),
        }
    }

    /// RFC 2543 ACK matching: the To tag is that of the response the transaction sent.
    fn find_2543_invite(&self, ack: &Rfc2543Key) -> Option<u64> {
        self.servers.iter().find_map(|(sid, entry)| match (&entry.key, &entry.tx) {
            (ServerKey::Rfc2543(k), ServerTx::Invite(tx)) => {
                k.matches_ack(ack, tx.response_to_tag().as_deref()).then_some(*sid)
            }
            _ => None,
        })
    }

    /// Incoming response, matched by top Via branch + CSeq method (§17.1.3). Unmatched ones are
    /// dropped and counted, except a 2xx to an INVITE whose transaction ended recently.
    pub fn handle_response(&mut self, now: Instant, peer: Peer, resp: Response) {
        self.forget_ended(now);
        let Ok(key) = ClientKey::from_response(&resp) else {
            return self.drop_response(peer, "no branch or CSeq");
        };
        if let Some(&id) = self.client_index.get(&key) {
            if let Some(entry) = self.clients.get_mut(&id) {
                entry.tx.on_response(now, resp, &mut self.out);
            }
            return self.reap_client(now, id);
        }
        match self.ended_invites.get(&key.branch) {
            Some(&(id, _, _)) if key.method == Method::Invite && resp.status / 100 == 2 => {
                self.out.event(TxEvent::Response { id, resp });
            }
            _ => self.drop_response(peer, "no matching client transaction"),
        }
    }

    /// True when `resp` answers a request of ours that went to `ip` (a live client
    /// transaction, or a late 2xx to an ended INVITE). The endpoint lets responses from
    /// sources outside every carrier's networks reach the transactions only then.
    pub fn expects_response_from(&self, ip: IpAddr, resp: &Response) -> bool {
        let Ok(key) = ClientKey::from_response(resp) else {
            return false;
        };
        if let Some(entry) = self.client_index.get(&key).and_then(|id| self.clients.get(id)) {
            return entry.tx.peer().addr.ip() == ip;
        }
        self.ended_invites.get(&key.branch).is_some_and(|(_, _, to)| *to == ip)
    }

    fn drop_response(&mut self, peer: Peer, why: &'static str) {
        self.dropped_responses += 1;
        tracing::debug!(?peer, why, "response dropped");
    }

    /// Starts a client transaction and returns its id. A request that cannot start one (ACK,
    /// no top Via branch, duplicate branch) gets an immediate [`TxEvent::Timeout`]; use
    /// [`Self::try_send_request`] to see the reason.
    pub fn send_request(&mut self, now: Instant, peer: Peer, req: Request) -> ClientTxId {
        match self.try_send_request(now, peer, req) {
            Ok(id) => id,
            Err(err) => {
                let id = self.alloc_client_id();
                tracing::debug!(%err, ?id, "request not sent");
                self.out.event(TxEvent::Timeout { id });
                id
            }
        }
    }

    /// Like [`Self::send_request`], with the reason when no transaction can start.
    pub fn try_send_request(
        &mut self,
        now: Instant,
        peer: Peer,
        req: Request,
    ) -> Result<ClientTxId, TxError> {
        if req.method == Method::Ack {
            return Err(TxError::AckHasNoTransaction);
        }
        let key = ClientKey::from_request(&req)?;
        if self.client_index.contains_key(&key) {
            return Err(TxError::DuplicateBranch);
        }
        let id = self.alloc_client_id();
        let tx = match req.method {
            Method::Invite => ClientTx::Invite(ClientInvite::start(
                now,
                id,
                peer,
                req,
                self.timers,
                &mut self.out,
            )),
            _ => ClientTx::NonInvite(ClientNonInvite::start(
                now,
                id,
                peer,
                req,
                self.timers,
                &mut self.out,
            )),
        };
        self.client_index.insert(key.clone(), id);
        self.clients.insert(id, ClientEntry { key, tx });
        Ok(id)
    }

    fn alloc_client_id(&mut self) -> ClientTxId {
        let id = ClientTxId(self.next_client);
        self.next_client += 1;
        id
    }

    /// The transport could not deliver a client transaction's request: it ends with
    /// [`TxEvent::Timeout`] (§17.1.4). Unknown ids are ignored.
    pub fn handle_transport_error(&mut self, now: Instant, id: ClientTxId) {
        if self.clients.contains_key(&id) {
            self.out.event(TxEvent::Timeout { id });
            self.remove_client(now, id);
        }
    }

    /// Sends a response through the server transaction matching its Via branch + CSeq method
    /// (RFC 2543 requests: its top Via, Call-ID, From tag and CSeq).
    pub fn send_response(&mut self, now: Instant, resp: Response) -> Result<(), TxError> {
        let sid = self.find_server_for(&resp)?;
        let entry = self.servers.get_mut(&sid).ok_or(TxError::NoServerTransaction)?;
        let result = entry.tx.send_response(now, resp, &mut self.out);
        self.reap_server(sid);
        result
    }

    fn find_server_for(&self, resp: &Response) -> Result<u64, TxError> {
        let found = match ServerKey::from_response(resp)? {
            Some(key) => self.server_index.get(&key).copied(),
            None => self.servers.iter().find_map(|(sid, entry)| match &entry.key {
                ServerKey::Rfc2543(k) if k.matches_response(resp) => Some(*sid),
                _ => None,
            }),
        };
        found.ok_or(TxError::NoServerTransaction)
    }

    /// True when an INVITE server transaction that has not sent a final response matches the
    /// CANCEL (same branch/sent-by, or RFC 2543 fields): the TU then answers the INVITE 487.
    pub fn cancel_matches_pending_invite(&self, cancel: &Request) -> bool {
        let Ok(ServerKey::Rfc3261 { branch, sent_by, .. }) = ServerKey::from_request(cancel) else {
            return self.cancel_matches_2543(cancel);
        };
        let key = ServerKey::Rfc3261 { branch, sent_by, method: Method::Invite };
        self.server_index
            .get(&key)
            .and_then(|sid| self.servers.get(sid))
            .is_some_and(|entry| matches!(&entry.tx, ServerTx::Invite(tx) if tx.is_proceeding()))
    }

    fn cancel_matches_2543(&self, cancel: &Request) -> bool {
        let Ok(ServerKey::Rfc2543(mut key)) = ServerKey::from_request(cancel) else {
            return false;
        };
        key.method = Method::Invite;
        self.server_index
            .get(&ServerKey::Rfc2543(key))
            .and_then(|sid| self.servers.get(sid))
            .is_some_and(|entry| matches!(&entry.tx, ServerTx::Invite(tx) if tx.is_proceeding()))
    }

    /// Sends without a transaction (ACK for 2xx, stateless responses, 2xx retransmissions).
    pub fn send_stateless(&mut self, peer: Peer, msg: SipMessage) {
        self.out.send(peer, msg.to_bytes());
    }

    /// Runs every expired timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.forget_ended(now);
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        let clients: Vec<ClientTxId> = self
            .clients
            .iter()
            .filter(|(_, e)| due(e.tx.poll_timeout()))
            .map(|(id, _)| *id)
            .collect();
        for id in clients {
            if let Some(entry) = self.clients.get_mut(&id) {
                entry.tx.on_timeout(now, &mut self.out);
            }
            self.reap_client(now, id);
        }
        let servers: Vec<u64> = self
            .servers
            .iter()
            .filter(|(_, e)| due(e.tx.poll_timeout()))
            .map(|(id, _)| *id)
            .collect();
        for sid in servers {
            if let Some(entry) = self.servers.get_mut(&sid) {
                entry.tx.on_timeout(now, &mut self.out);
            }
            self.reap_server(sid);
        }
    }

    /// Next bytes to send and where.
    pub fn poll_transmit(&mut self) -> Option<(Peer, Vec<u8>)> {
        self.out.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.out.events.pop_front()
    }

    /// The earliest deadline over all live transactions.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let clients = self.clients.values().filter_map(|e| e.tx.poll_timeout());
        let servers = self.servers.values().filter_map(|e| e.tx.poll_timeout());
        clients.chain(servers).min()
    }

    /// Live transactions, client and server.
    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Responses that matched no transaction.
    pub fn dropped_responses(&self) -> u64 {
        self.dropped_responses
    }

    /// Requests without a usable top Via or CSeq.
    pub fn dropped_requests(&self) -> u64 {
        self.dropped_requests
    }

    fn reap_client(&mut self, now: Instant, id: ClientTxId) {
        if self.clients.get(&id).is_some_and(|e| e.tx.is_terminated()) {
            self.remove_client(now, id);
        }
    }

    fn remove_client(&mut self, now: Instant, id: ClientTxId) {
        let Some(entry) = self.clients.remove(&id) else {
            return;
        };
        self.client_index.remove(&entry.key);
        if entry.key.method == Method::Invite {
            let forget_at = now + 64 * self.timers.t1;
            let ip = entry.tx.peer().addr.ip();
            self.ended_invites.insert(entry.key.branch, (id, forget_at, ip));
        }
    }

    fn reap_server(&mut self, sid: u64) {
        if self.servers.get(&sid).is_some_and(|e| e.tx.is_terminated()) {
            if let Some(entry) = self.servers.remove(&sid) {
                self.server_index.remove(&entry.key);
            }
        }
    }

    fn forget_ended(&mut self, now: Instant) {
        self.ended_invites.retain(|_, (_, forget_at, _)| *forget_at > now);
    }
}
