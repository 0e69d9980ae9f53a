//! The non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8): Trying -> Proceeding ->
//! Completed -> Terminated. Request retransmissions get the last response again; Timer J keeps
//! the Completed state for 64·T1 on UDP (zero on reliable transports).

use std::time::Instant;

use super::{classify, linger, Class, Outbox, TxError};
use crate::core::sip::message::Response;
use crate::core::sip::transport::Peer;
use crate::core::timer::{SipTimers, Timer, TimerTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

pub(super) struct ServerNonInvite {
    peer: Peer,
    state: State,
    timers: TimerTable,
    cfg: SipTimers,
    last_wire: Option<Vec<u8>>,
}

impl ServerNonInvite {
    pub(super) fn new(peer: Peer, cfg: SipTimers) -> Self {
        ServerNonInvite {
            peer,
            state: State::Trying,
            timers: TimerTable::default(),
            cfg,
            last_wire: None,
        }
    }

    /// A retransmission of the request: resend the last response, if any.
    pub(super) fn on_request(&self, out: &mut Outbox) {
        match self.state {
            State::Proceeding | State::Completed => self.resend(out),
            State::Trying | State::Terminated => {}
        }
    }

    pub(super) fn send_response(
        &mut self,
        now: Instant,
        resp: Response,
        out: &mut Outbox,
    ) -> Result<(), TxError> {
        match (self.state, classify(resp.status)?) {
            (State::Trying | State::Proceeding, Class::Provisional) => {
                self.state = State::Proceeding;
                self.transmit(resp, out);
            }
            (State::Trying | State::Proceeding, Class::Success | Class::Failure) => {
                self.transmit(resp, out);
                self.complete(now);
            }
            (State::Completed | State::Terminated, _) => return Err(TxError::AlreadyFinal),
        }
        Ok(())
    }

    fn transmit(&mut self, resp: Response, out: &mut Outbox) {
        let wire = resp.to_bytes();
        out.send(self.peer, wire.clone());
        self.last_wire = Some(wire);
    }

    fn resend(&self, out: &mut Outbox) {
        if let Some(wire) = &self.last_wire {
            out.send(self.peer, wire.clone());
        }
    }

    fn complete(&mut self, now: Instant) {
        self.state = State::Completed;
        let wait = linger(self.peer.transport, 64 * self.cfg.t1);
        if wait.is_zero() {
            self.state = State::Terminated;
        } else {
            self.timers.set(Timer::J, now + wait);
        }
    }

    pub(super) fn on_timeout(&mut self, now: Instant) {
        for timer in self.timers.take_expired(now) {
            if let (State::Completed, Timer::J) = (self.state, timer) {
                self.state = State::Terminated;
            }
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    pub(super) fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }
}
