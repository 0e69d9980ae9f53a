//! Every timer in the core, named in one enum (after quinn-proto's `connection/timer.rs`), and
//! a fixed table of deadlines. A state machine owns one [`TimerTable`]; its `poll_timeout()` is
//! the table's [`TimerTable::next_timeout`], and the endpoint's is the minimum over all of them.
//!
//! RFC 3261 defaults: T1 = 500 ms, T2 = 4 s, T4 = 5 s.

use std::time::{Duration, Instant};

/// A named timer. Transaction timers follow RFC 3261 §17 and Table 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// A: INVITE client retransmission over UDP, starts at T1 and doubles.
    A = 0,
    /// B: INVITE client transaction timeout, 64·T1.
    B = 1,
    /// D: INVITE client waits in Completed for response retransmissions (32 s on UDP, 0 on TCP).
    D = 2,
    /// E: non-INVITE client retransmission over UDP, T1 doubling up to T2.
    E = 3,
    /// F: non-INVITE client transaction timeout, 64·T1.
    F = 4,
    /// G: INVITE server retransmits its final response over UDP, T1 doubling up to T2.
    G = 5,
    /// H: INVITE server gives up waiting for the ACK, 64·T1.
    H = 6,
    /// I: INVITE server absorbs ACK retransmissions in Confirmed (T4 on UDP, 0 on TCP).
    I = 7,
    /// J: non-INVITE server absorbs request retransmissions in Completed (64·T1 UDP, 0 TCP).
    J = 8,
    /// K: non-INVITE client absorbs response retransmissions in Completed (T4 UDP, 0 TCP).
    K = 9,
    /// Provisional: an INVITE server sends 100 Trying if the TU has not answered within 200 ms.
    Trying = 10,
    /// 2xx retransmission by the UAS core until the ACK arrives (RFC 3261 §13.3.1.4).
    Retransmit2xx = 11,
    /// The UAS core gives up on a missing ACK for its 2xx (64·T1) and ends the dialog.
    AckWait = 12,
    /// Next OPTIONS probe to a carrier.
    Probe = 13,
    /// An outstanding OPTIONS probe counts as failed (independent of Timer F).
    ProbeTimeout = 14,
    /// Registration refresh (about 85 % of the granted expiry) or retry after backoff.
    Register = 15,
    /// Next 20 ms media frame of a call.
    MediaTick = 16,
    /// A call has played its prompt and now hangs up.
    Hangup = 17,
    /// A circuit breaker leaves Open for Half-open.
    BreakerCooldown = 18,
    /// L (RFC 6026): an INVITE server in Accepted absorbs INVITE retransmissions, 64·T1.
    L = 19,
    /// C (RFC 3261 §16.6 step 11, applied to the UAC): an INVITE client in Proceeding gives up
    /// after 3 minutes without a final response (Timer B only runs in Calling).
    C = 20,
    /// A ringing call is answered with 200 OK (after the configured answer delay).
    Answer = 21,
    /// Next RTCP report of a call (RFC 3550 §6.2, randomized around the report interval).
    RtcpReport = 22,
    /// Next RFC 4733 telephone-event packet (start, update or end retransmission).
    DtmfSend = 23,
    /// A received telephone-event got no packet for a while: it is reported as ended.
    DtmfTimeout = 24,
    /// AI call setup: the whole connect budget (primary, standby, retries) is spent.
    AiSetupBudget = 25,
    /// AI call setup: one WebSocket connect attempt gives up.
    AiConnectTimeout = 26,
    /// AI call setup: the backoff before the next connect attempt ends.
    AiConnectRetry = 27,
    /// AI session: no frame from the agent for the stall timeout while the caller talks.
    AiStall = 28,
    /// AI session: send a WebSocket ping to probe a quiet agent connection.
    AiPing = 29,
    /// Fallback ladder: the DTMF menu got no usable key in time after it was played.
    MenuTimeout = 30,
    /// Fallback ladder: the human leg rang without an answer for the configured time.
    HumanRing = 31,
    /// Outbound INVITE: no provisional response within `no_provisional_ms`; try the next carrier.
    OutboundProvisional = 32,
    /// Transfer by REFER: no final NOTIFY about the referred call in time.
    ReferWait = 33,
}

impl Timer {
    pub const COUNT: usize = 34;
    pub const ALL: [Timer; Timer::COUNT] = [
        Timer::A,
        Timer::B,
        Timer::D,
        Timer::E,
        Timer::F,
        Timer::G,
        Timer::H,
        Timer::I,
        Timer::J,
        Timer::K,
        Timer::Trying,
        Timer::Retransmit2xx,
        Timer::AckWait,
        Timer::Probe,
        Timer::ProbeTimeout,
        Timer::Register,
        Timer::MediaTick,
        Timer::Hangup,
        Timer::BreakerCooldown,
        Timer::L,
        Timer::C,
        Timer::Answer,
        Timer::RtcpReport,
        Timer::DtmfSend,
        Timer::DtmfTimeout,
        Timer::AiSetupBudget,
        Timer::AiConnectTimeout,
        Timer::AiConnectRetry,
        Timer::AiStall,
        Timer::AiPing,
        Timer::MenuTimeout,
        Timer::HumanRing,
        Timer::OutboundProvisional,
        Timer::ReferWait,
    ];
}

/// RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipTimers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for SipTimers {
    fn default() -> Self {
        SipTimers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// One deadline per [`Timer`]; unset slots are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerTable {
    data: [Option<Instant>; Timer::COUNT],
}

impl Default for TimerTable {
    fn default() -> Self {
        TimerTable { data: [None; Timer::COUNT] }
    }
}

impl TimerTable {
    pub fn set(&mut self, timer: Timer, deadline: Instant) {
        self.data[timer as usize] = Some(deadline);
    }

    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.data[timer as usize]
    }

    pub fn stop(&mut self, timer: Timer) {
        self.data[timer as usize] = None;
    }

    pub fn stop_all(&mut self) {
        self.data = [None; Timer::COUNT];
    }

    pub fn is_set(&self, timer: Timer) -> bool {
        self.data[timer as usize].is_some()
    }

    /// The earliest deadline, if any timer is set.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.data.iter().filter_map(|t| *t).min()
    }

    /// True when `timer` is set and its deadline is at or before `now`.
    pub fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.data[timer as usize].is_some_and(|t| t <= now)
    }

    /// Removes and returns every timer that has expired at `now`, earliest first.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Timer> {
        let mut due: Vec<(Instant, Timer)> = Timer::ALL
            .iter()
            .filter_map(|&t| self.data[t as usize].filter(|d| *d <= now).map(|d| (d, t)))
            .collect();
        due.sort_by_key(|(d, t)| (*d, *t as usize));
        for (_, t) in &due {
            self.stop(*t);
        }
        due.into_iter().map(|(_, t)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_timeout_is_the_minimum_and_expiry_is_ordered() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        assert_eq!(table.next_timeout(), None);
        table.set(Timer::F, t0 + Duration::from_secs(32));
        table.set(Timer::E, t0 + Duration::from_millis(500));
        table.set(Timer::Probe, t0 + Duration::from_millis(400));
        assert_eq!(table.next_timeout(), Some(t0 + Duration::from_millis(400)));
        assert_eq!(table.take_expired(t0 + Duration::from_millis(499)), vec![Timer::Probe]);
        assert_eq!(table.take_expired(t0 + Duration::from_secs(40)), vec![Timer::E, Timer::F]);
        assert_eq!(table.next_timeout(), None);
    }
}
