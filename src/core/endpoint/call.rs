//! One inbound call as the endpoint tracks it: its dialog, where it stands (ringing, answered
//! waiting for ACK, playing, hanging up), its RTP port and the prompt being played, and its own
//! timers. Only data and small state steps live here; the endpoint wires them to SIP and RTP.

use std::time::{Duration, Instant};

use crate::core::media::session::MediaSession;
use crate::core::sdp::Negotiated;
use crate::core::sip::dialog::Dialog;
use crate::core::sip::message::{Request, Response};
use crate::core::timer::{Timer, TimerTable};

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// 100/180 sent; 200 OK not yet.
    Ringing,
    /// 200 OK sent, retransmitted until the ACK.
    Answered,
    /// ACK received: media flows.
    Confirmed,
    /// We sent BYE and wait for its transaction to end.
    Ending,
}

/// A 2xx the UAS core retransmits until it is acknowledged (RFC 3261 §13.3.1.4).
#[derive(Debug, Clone)]
pub struct Pending2xx {
    pub response: Response,
    pub interval: Duration,
}

pub struct Call {
    pub id: u64,
    pub carrier: usize,
    pub state: CallState,
    pub dialog: Dialog,
    /// The initial INVITE: its headers build every response to it.
    pub invite: Request,
    /// Top Via branch of the initial INVITE (CANCEL carries the same one).
    pub invite_branch: String,
    pub local_port: u16,
    pub negotiated: Negotiated,
    pub answer_sdp: String,
    pub pending_2xx: Option<Pending2xx>,
    /// The call's media: RTP both ways, the prompt, DTMF, RTCP.
    pub media: MediaSession,
    pub timers: TimerTable,
    pub started: Instant,
    /// The bridge to the AI agent, when agents are configured.
    pub bridge: Option<super::bridge::Bridge>,
    /// What the call's record says so far.
    pub record: super::record::RecordState,
    /// The degradation ladder, once the call fell to it (no agent took it).
    pub ladder: Option<crate::core::ladder::Ladder>,
}

impl Call {
    /// Starts retransmitting `response` (a 2xx) until ACK, giving up after 64·T1.
    pub fn arm_2xx(&mut self, now: Instant, response: Response, t1: Duration) {
        self.pending_2xx = Some(Pending2xx { response, interval: t1 });
        self.timers.set(Timer::Retransmit2xx, now + t1);
        self.timers.set(Timer::AckWait, now + 64 * t1);
    }

    /// The next 2xx retransmission (interval doubles up to T2), if one is pending.
    pub fn retransmit_2xx(&mut self, now: Instant, t2: Duration) -> Option<Response> {
        let pending = self.pending_2xx.as_mut()?;
        pending.interval = (pending.interval * 2).min(t2);
        self.timers.set(Timer::Retransmit2xx, now + pending.interval);
        Some(pending.response.clone())
    }

    /// The ACK arrived: stop retransmitting. Returns true if a 2xx was waiting for it.
    pub fn acknowledge(&mut self) -> bool {
        self.timers.stop(Timer::Retransmit2xx);
        self.timers.stop(Timer::AckWait);
        self.pending_2xx.take().is_some()
    }

    /// The ladder's next deadline, if it runs.
    pub fn ladder_timeout(&self) -> Option<Instant> {
        self.ladder.as_ref().and_then(|l| l.poll_timeout())
    }
}
