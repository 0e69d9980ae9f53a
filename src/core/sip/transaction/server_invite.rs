//! The INVITE server transaction (RFC 3261 §17.2.1, Figure 7, with RFC 6026's Accepted
//! state): Proceeding -> Completed -> Confirmed, or Proceeding -> Accepted on 2xx. Timers
//! `Trying` (automatic 100 after 200 ms), G (UDP final retransmission), H (ACK wait),
//! I (ACK absorption) and L (Accepted).

use std::time::{Duration, Instant};

use super::{classify, linger, response_to, Class, Outbox, TxError, TxEvent};
use crate::core::sip::message::{Method, Request, Response};
use crate::core::sip::parse::SipHeaders;
use crate::core::sip::transport::Peer;
use crate::core::timer::{SipTimers, Timer, TimerTable};

/// The TU has this long to send a provisional before the transaction sends 100 Trying.
const TRYING_DELAY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

pub(super) struct ServerInvite {
    peer: Peer,
    /// Kept until a response is sent, to build the automatic 100 Trying.
    request: Option<Request>,
    call_id: String,
    state: State,
    timers: TimerTable,
    cfg: SipTimers,
    interval_g: Duration,
    last: Option<Response>,
    last_wire: Option<Vec<u8>>,
}

impl ServerInvite {
    pub(super) fn new(now: Instant, peer: Peer, request: Request, cfg: SipTimers) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Trying, now + TRYING_DELAY);
        ServerInvite {
            peer,
            call_id: request.call_id().unwrap_or_default().to_string(),
            request: Some(request),
            state: State::Proceeding,
            timers,
            cfg,
            interval_g: cfg.t1,
            last: None,
            last_wire: None,
        }
    }

    /// A retransmitted INVITE or an ACK matched this transaction.
    pub(super) fn on_request(&mut self, now: Instant, peer: Peer, req: Request, out: &mut Outbox) {
        let is_ack = req.method == Method::Ack;
        match (self.state, is_ack) {
            (State::Proceeding | State::Completed, false) => self.resend(out),
            (State::Completed, true) => self.confirm(now),
            // RFC 6026: an ACK in Accepted goes to the TU (it acknowledges the 2xx).
            (State::Accepted, true) => out.event(TxEvent::Request { peer, req }),
            (State::Proceeding | State::Confirmed, true)
            | (State::Confirmed | State::Accepted, false)
            | (State::Terminated, _) => {}
        }
    }

    pub(super) fn send_response(
        &mut self,
        now: Instant,
        resp: Response,
        out: &mut Outbox,
    ) -> Result<(), TxError> {
        match (self.state, classify(resp.status)?) {
            (State::Proceeding, Class::Provisional) => self.provisional(resp, out),
            (State::Proceeding, Class::Success) => self.accept(now, resp, out),
            (State::Proceeding, Class::Failure) => self.complete(now, resp, out),
            (State::Accepted, Class::Success) => self.transmit(resp, out),
            (State::Accepted, _) | (State::Completed | State::Confirmed | State::Terminated, _) => {
                return Err(TxError::AlreadyFinal)
            }
        }
        Ok(())
    }

    fn provisional(&mut self, resp: Response, out: &mut Outbox) {
        self.timers.stop(Timer::Trying);
        self.transmit(resp, out);
    }

    fn accept(&mut self, now: Instant, resp: Response, out: &mut Outbox) {
        self.timers.stop_all();
        self.transmit(resp, out);
        self.state = State::Accepted;
        self.timers.set(Timer::L, now + 64 * self.cfg.t1);
    }

    fn complete(&mut self, now: Instant, resp: Response, out: &mut Outbox) {
        self.timers.stop_all();
        self.transmit(resp, out);
        self.state = State::Completed;
        if !self.peer.transport.is_reliable() {
            self.timers.set(Timer::G, now + self.interval_g);
        }
        self.timers.set(Timer::H, now + 64 * self.cfg.t1);
    }

    fn confirm(&mut self, now: Instant) {
        self.timers.stop_all();
        self.state = State::Confirmed;
        let wait = linger(self.peer.transport, self.cfg.t4);
        if wait.is_zero() {
            self.terminate();
        } else {
            self.timers.set(Timer::I, now + wait);
        }
    }

    fn transmit(&mut self, resp: Response, out: &mut Outbox) {
        let wire = resp.to_bytes();
        out.send(self.peer, wire.clone());
        self.request = None;
        self.last = Some(resp);
        self.last_wire = Some(wire);
    }

    fn resend(&self, out: &mut Outbox) {
        if let Some(wire) = &self.last_wire {
            out.send(self.peer, wire.clone());
        }
    }

    pub(super) fn on_timeout(&mut self, now: Instant, out: &mut Outbox) {
        for timer in self.timers.take_expired(now) {
            self.on_timer(now, timer, out);
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer, out: &mut Outbox) {
        match (self.state, timer) {
            (State::Proceeding, Timer::Trying) => self.send_trying(out),
            (State::Completed, Timer::G) => self.retransmit_final(now, out),
            (State::Completed, Timer::H) => self.ack_timeout(out),
            (State::Confirmed, Timer::I) | (State::Accepted, Timer::L) => self.terminate(),
            _ => {}
        }
    }

    fn send_trying(&mut self, out: &mut Outbox) {
        if let Some(req) = self.request.take() {
            self.transmit(response_to(&req, 100, "Trying"), out);
        }
    }

    fn retransmit_final(&mut self, now: Instant, out: &mut Outbox) {
        self.resend(out);
        self.interval_g = self.interval_g.saturating_mul(2).min(self.cfg.t2);
        self.timers.set(Timer::G, now + self.interval_g);
    }

    fn ack_timeout(&mut self, out: &mut Outbox) {
        out.event(TxEvent::AckTimeout { call_id: self.call_id.clone() });
        self.terminate();
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.timers.stop_all();
    }

    /// To tag of the last response sent (RFC 2543 ACK matching compares it).
    pub(super) fn response_to_tag(&self) -> Option<String> {
        let to = self.last.as_ref()?.to_hdr().ok()?;
        to.tag().map(str::to_string)
    }

    /// No final response sent yet (a CANCEL can still take effect).
    pub(super) fn is_proceeding(&self) -> bool {
        self.state == State::Proceeding
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    pub(super) fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }
}
