//! One inbound call as the endpoint tracks it: its dialog, where it stands (ringing, answered
//! waiting for ACK, playing, hanging up), its RTP port and the prompt being played, and its own
//! timers. Only data and small state steps live here; the endpoint wires them to SIP and RTP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::media::prompt::PromptPlayer;
use crate::core::sdp::Negotiated;
use crate::core::sip::dialog::Dialog;
use crate::core::sip::message::{Request, Response};
use crate::core::timer::{Timer, TimerTable};

/// The 20 ms frame clock of the prompt.
pub const FRAME: Duration = Duration::from_millis(20);

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

#[derive(Debug)]
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
    pub player: Option<PromptPlayer>,
    pub timers: TimerTable,
    pub rtp_received: u64,
    pub rtp_invalid: u64,
    pub rtp_sent: u64,
    /// Where RTP is sent: the offer's address until the first valid packet arrives from the
    /// carrier, then that packet's source (symmetric RTP).
    pub remote_rtp: SocketAddr,
}

impl Call {
    /// Starts retransmitting `response` (a 2xx) until ACK, giving up after 64·T1.
    pub fn arm_2xx(&mut self, now: Instant, response: Response, t1: Duration) {
        self.pending_2xx = Some(Pending2xx {
            response,
            interval: t1,
        });
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

    /// Starts the prompt on the 20 ms frame clock.
    pub fn start_media(&mut self, now: Instant, player: Option<PromptPlayer>) {
        self.player = player;
        self.timers.set(Timer::MediaTick, now);
    }

    /// Packets due at `now`. Frames are scheduled from the previous deadline, not from `now`,
    /// so a late wake-up catches up instead of drifting. Returns `None` when the prompt is over.
    pub fn media_tick(&mut self, now: Instant) -> Option<Vec<Vec<u8>>> {
        let player = self.player.as_mut()?;
        let mut due = self.timers.get(Timer::MediaTick).unwrap_or(now);
        let mut packets = Vec::new();
        // bound the catch-up: at most 10 frames (200 ms) per wake-up
        while due <= now && packets.len() < 10 {
            match player.next_packet() {
                Some(p) => packets.push(p),
                None => {
                    self.timers.stop(Timer::MediaTick);
                    self.player = None;
                    return if packets.is_empty() { None } else { Some(packets) };
                }
            }
            due += FRAME;
        }
        self.timers.set(Timer::MediaTick, due.max(now));
        Some(packets)
    }
}
