//! The non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6): Trying -> Proceeding ->
//! Completed -> Terminated, timers E (UDP retransmission, T1 doubling capped at T2; T2 once
//! Proceeding), F (timeout) and K (absorbs response retransmissions).

use std::time::{Duration, Instant};

use super::{classify, linger, Class, ClientTxId, Outbox, TxEvent};
use crate::core::sip::message::{Request, Response};
use crate::core::sip::transport::Peer;
use crate::core::timer::{SipTimers, Timer, TimerTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

pub(super) struct ClientNonInvite {
    id: ClientTxId,
    peer: Peer,
    wire: Vec<u8>,
    state: State,
    timers: TimerTable,
    cfg: SipTimers,
    interval_e: Duration,
}

impl ClientNonInvite {
    /// Where the request went.
    pub(super) fn peer(&self) -> Peer {
        self.peer
    }

    /// Sends the request and starts E (UDP only) and F.
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
            timers.set(Timer::E, now + cfg.t1);
        }
        timers.set(Timer::F, now + 64 * cfg.t1);
        ClientNonInvite { id, peer, wire, state: State::Trying, timers, cfg, interval_e: cfg.t1 }
    }

    pub(super) fn on_response(&mut self, now: Instant, resp: Response, out: &mut Outbox) {
        let Ok(class) = classify(resp.status) else {
            return;
        };
        match (self.state, class) {
            (State::Trying | State::Proceeding, Class::Provisional) => self.proceed(resp, out),
            (State::Trying | State::Proceeding, Class::Success | Class::Failure) => {
                self.complete(now, resp, out)
            }
            (State::Completed | State::Terminated, _) => {}
        }
    }

    fn proceed(&mut self, resp: Response, out: &mut Outbox) {
        self.state = State::Proceeding;
        out.event(TxEvent::Response { id: self.id, resp });
    }

    fn complete(&mut self, now: Instant, resp: Response, out: &mut Outbox) {
        out.event(TxEvent::Response { id: self.id, resp });
        self.timers.stop_all();
        self.state = State::Completed;
        let wait = linger(self.peer.transport, self.cfg.t4);
        if wait.is_zero() {
            self.terminate();
        } else {
            self.timers.set(Timer::K, now + wait);
        }
    }

    pub(super) fn on_timeout(&mut self, now: Instant, out: &mut Outbox) {
        for timer in self.timers.take_expired(now) {
            self.on_timer(now, timer, out);
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer, out: &mut Outbox) {
        match (self.state, timer) {
            (State::Trying | State::Proceeding, Timer::E) => self.retransmit(now, out),
            (State::Trying | State::Proceeding, Timer::F) => self.time_out(out),
            (State::Completed, Timer::K) => self.terminate(),
            _ => {}
        }
    }

    fn retransmit(&mut self, now: Instant, out: &mut Outbox) {
        out.send(self.peer, self.wire.clone());
        self.interval_e = match self.state {
            State::Proceeding => self.cfg.t2,
            _ => self.interval_e.saturating_mul(2).min(self.cfg.t2),
        };
        self.timers.set(Timer::E, now + self.interval_e);
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
