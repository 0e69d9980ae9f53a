//! The INVITE client transaction (RFC 3261 §17.1.1, Figure 5): Calling -> Proceeding ->
//! Completed -> Terminated, timers A, B, C and D, and the ACK for a non-2xx final response
//! (§17.1.1.3), which this transaction builds and resends on every final retransmission.

use std::time::{Duration, Instant};

use super::{classify, linger, Class, ClientTxId, Outbox, TxEvent};
use crate::core::sip::message::{Method, Request, Response};
use crate::core::sip::transport::Peer;
use crate::core::timer::{SipTimers, Timer, TimerTable};

/// Timer C: how long Proceeding may last without a final response.
const TIMER_C: Duration = Duration::from_secs(180);
/// Timer D on UDP (RFC 3261 Table 4: at least 32 s).
const TIMER_D: Duration = Duration::from_secs(32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Calling,
    Proceeding,
    Completed,
    Terminated,
}

pub(super) struct ClientInvite {
    id: ClientTxId,
    peer: Peer,
    request: Request,
    wire: Vec<u8>,
    state: State,
    timers: TimerTable,
    interval_a: Duration,
    ack: Option<Vec<u8>>,
}

impl ClientInvite {
    /// Where the INVITE went.
    pub(super) fn peer(&self) -> Peer {
        self.peer
    }

    /// Sends the INVITE and starts A (UDP only) and B.
    pub(super) fn start(
        now: Instant,
        id: ClientTxId,
        peer: Peer,
        request: Request,
        cfg: SipTimers,
        out: &mut Outbox,
    ) -> Self {
        let wire = request.to_bytes();
        out.send(peer, wire.clone());
        let mut timers = TimerTable::default();
        if !peer.transport.is_reliable() {
            timers.set(Timer::A, now + cfg.t1);
        }
        timers.set(Timer::B, now + 64 * cfg.t1);
        ClientInvite {
            id,
            peer,
            request,
            wire,
            state: State::Calling,
            timers,
            interval_a: cfg.t1,
            ack: None,
        }
    }

    pub(super) fn on_response(&mut self, now: Instant, resp: Response, out: &mut Outbox) {
        let Ok(class) = classify(resp.status) else {
            return;
        };
        match (self.state, class) {
            (State::Calling | State::Proceeding, Class::Provisional) => {
                self.proceed(now, resp, out)
            }
            (State::Calling | State::Proceeding, Class::Success) => self.accept(resp, out),
            (State::Calling | State::Proceeding, Class::Failure) => self.complete(now, resp, out),
            (State::Completed, Class::Failure) => self.resend_ack(out),
            // A 2xx after a non-2xx final: the TU must still ACK (and BYE) it.
            (State::Completed, Class::Success) => self.deliver(resp, out),
            (State::Completed, Class::Provisional) | (State::Terminated, _) => {}
        }
    }

    fn deliver(&self, resp: Response, out: &mut Outbox) {
        out.event(TxEvent::Response { id: self.id, resp });
    }

    fn proceed(&mut self, now: Instant, resp: Response, out: &mut Outbox) {
        self.state = State::Proceeding;
        self.timers.stop(Timer::A);
        self.timers.stop(Timer::B);
        self.timers.set(Timer::C, now + TIMER_C);
        self.deliver(resp, out);
    }

    fn accept(&mut self, resp: Response, out: &mut Outbox) {
        self.deliver(resp, out);
        self.terminate();
    }

    fn complete(&mut self, now: Instant, resp: Response, out: &mut Outbox) {
        self.timers.stop_all();
        self.ack = Some(build_ack(&self.request, &resp).to_bytes());
        self.resend_ack(out);
        self.deliver(resp, out);
        self.state = State::Completed;
        let wait = linger(self.peer.transport, TIMER_D);
        if wait.is_zero() {
            self.terminate();
        } else {
            self.timers.set(Timer::D, now + wait);
        }
    }

    fn resend_ack(&self, out: &mut Outbox) {
        if let Some(ack) = &self.ack {
            out.send(self.peer, ack.clone());
        }
    }

    pub(super) fn on_timeout(&mut self, now: Instant, out: &mut Outbox) {
        for timer in self.timers.take_expired(now) {
            self.on_timer(now, timer, out);
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer, out: &mut Outbox) {
        match (self.state, timer) {
            (State::Calling, Timer::A) => self.retransmit(now, out),
            (State::Calling, Timer::B) | (State::Proceeding, Timer::C) => self.time_out(out),
            (State::Completed, Timer::D) => self.terminate(),
            _ => {}
        }
    }

    fn retransmit(&mut self, now: Instant, out: &mut Outbox) {
        out.send(self.peer, self.wire.clone());
        self.interval_a = self.interval_a.saturating_mul(2);
        self.timers.set(Timer::A, now + self.interval_a);
    }

    fn time_out(&mut self, out: &mut Outbox) {
        out.event(TxEvent::Timeout { id: self.id });
        self.terminate();
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.timers.stop_all();
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    pub(super) fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }
}

/// The ACK for a non-2xx final response (§17.1.1.3): the INVITE's Request-URI, top Via, Route
/// set, From, Call-ID and CSeq number, and the response's To (with its tag).
pub(super) fn build_ack(invite: &Request, resp: &Response) -> Request {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    if let Some(via) = invite.headers.get("Via") {
        let top = crate::core::sip::headers::Via::parse_all(via)
            .ok()
            .and_then(|v| v.into_iter().next())
            .map_or_else(|| via.to_string(), |v| v.to_string());
        ack.headers.push("Via", top);
    }
    ack.headers.push("Max-Forwards", "70");
    for route in invite.headers.get_all("Route") {
        ack.headers.push("Route", route);
    }
    copy(invite, &mut ack, "From");
    if let Some(to) = resp.headers.get("To") {
        ack.headers.push("To", to);
    }
    copy(invite, &mut ack, "Call-ID");
    let seq = invite.headers.get("CSeq").and_then(|c| c.split_whitespace().next()).unwrap_or("1");
    ack.headers.push("CSeq", format!("{seq} ACK"));
    ack
}

fn copy(from: &Request, to: &mut Request, name: &str) {
    if let Some(v) = from.headers.get(name) {
        to.headers.push(name, v);
    }
}
