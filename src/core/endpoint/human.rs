//! The human rung of the ladder: hands call `id` to `[fallback] human`, by SIP REFER on the
//! caller's dialog where the carrier allows it (`transfer = "refer"`), else by a bridged
//! outbound INVITE through the healthiest carrier with failover by SIP cause
//! ([`super::outbound`]). While the human leg rings the caller hears ringback; once answered,
//! the caller's and the human's media sessions are bridged through PCM. Reports the outcome
//! to the ladder through [`Endpoint::on_human_outcome`].
//!
//! REFER: `Refer-To: <human>` on the caller's dialog. A 2xx to the REFER and a NOTIFY whose
//! `message/sipfrag` says 2xx mean the carrier connected the human: `Connected`, then we BYE
//! our leg. A 4xx-6xx to the REFER, a failure sipfrag, or nothing within [`REFER_WAIT`]
//! falls back to the bridged INVITE. Once a 1xx sipfrag said the carrier is calling the human,
//! the wait becomes the ring timeout and its end is `NoAnswer` (re-calling would ring twice).

use std::time::{Duration, Instant};

use super::ladder::HumanOutcome;
use super::outbound::{HumanLeg, ReferState};
use super::{
    build, new_branch, CallState, Endpoint, Method, Pending, Request, Timer, TimerTable,
    TransferMode,
};

/// How long a REFER may go without its 2xx and first NOTIFY before the INVITE is tried.
pub const REFER_WAIT: Duration = Duration::from_secs(4);

impl Endpoint {
    /// Starts the transfer of call `id` to the human. Returns `false` when no human can be tried
    /// (none configured, no carrier can place the call); the ladder then goes down a rung.
    /// While it returns `true` the caller hears ringback whenever no other prompt plays, and
    /// the outcome comes later through [`Endpoint::on_human_outcome`].
    #[allow(dead_code)] // called by the ladder (branch `ladder`) and the tests
    pub(super) fn start_human(&mut self, now: Instant, id: u64) -> bool {
        if self.human.settings.human.is_none() {
            return false;
        }
        let Some(call) = self.calls.get(&id) else { return false };
        if self.human.legs.contains_key(&id) {
            return true; // already under way
        }
        let refer = call.state == CallState::Confirmed
            && self
                .cfg
                .carriers
                .get(call.carrier)
                .is_some_and(|c| c.transfer == TransferMode::Refer);
        let started = if refer { self.send_refer(now, id) } else { self.start_invite_leg(now, id) };
        if started {
            self.human.stats.transfers += 1;
            // ringback once the ladder's hold prompt (if any) has played
            self.keep_ringback(id);
        }
        started
    }

    /// The caller's side of call `id` is ending: tear down any human leg it has (CANCEL/BYE).
    /// Nothing is reported. Idempotent.
    pub(super) fn stop_human(&mut self, now: Instant, id: u64) {
        self.end_human_leg(now, id);
    }

    fn send_refer(&mut self, now: Instant, id: u64) -> bool {
        let Some(human) = self.human.settings.human.clone() else { return false };
        let Some(call) = self.calls.get(&id) else { return false };
        let transport = call.dialog.peer.transport;
        let via = build::via(transport, self.local_addr(transport), &new_branch(&mut self.rng));
        let contact = self.contact_uri(transport);
        let ua = self.cfg.user_agent.clone();
        let Some(call) = self.calls.get_mut(&id) else { return false };
        let mut refer = call.dialog.new_request(Method::Refer, via, &contact, &ua);
        refer.headers.push("Refer-To", format!("<{human}>"));
        refer.headers.push("Referred-By", format!("<{}>", call.dialog.local_uri.uri));
        let peer = call.dialog.peer;
        tracing::info!(call = id, %human, "transfer by REFER");
        let tx = self.tx.send_request(now, peer, refer);
        self.pending.insert(tx, Pending::Refer { call: id });
        let mut timers = TimerTable::default();
        timers.set(Timer::ReferWait, now + REFER_WAIT);
        self.human.legs.insert(
            id,
            HumanLeg {
                started: now,
                refer: Some(ReferState::default()),
                leg: None,
                port: None,
                connected: None,
                timers,
            },
        );
        self.human.stats.refers += 1;
        self.human_record(id, |r| r.refer = true);
        true
    }

    /// The final response to the REFER (408 for a transaction timeout).
    pub(super) fn on_refer_response(&mut self, now: Instant, id: u64, status: u16) {
        if status < 300 {
            return; // accepted: the NOTIFYs tell the rest
        }
        tracing::info!(call = id, status, "REFER refused: bridged INVITE instead");
        self.refer_fallback(now, id);
    }

    /// NOTIFY on the caller's dialog: the progress of the call the carrier placed.
    pub(super) fn on_notify(&mut self, now: Instant, id: u64, req: &Request) {
        let referring = self.human.legs.get(&id).is_some_and(|h| h.refer.is_some());
        let resp = self.response(req, if referring { 200 } else { 481 }, None);
        self.send_response(now, resp);
        if !referring {
            return;
        }
        let Some(status) = sipfrag_status(&req.body) else { return };
        match status {
            100..=199 => {
                let ring_until =
                    self.human.legs.get(&id).map(|h| h.started + self.human.settings.human_timeout);
                if let (Some(h), Some(until)) = (self.human.legs.get_mut(&id), ring_until) {
                    h.refer = Some(ReferState { progress: true });
                    h.timers.set(Timer::ReferWait, until);
                }
            }
            200..=299 => {
                tracing::info!(call = id, "REFER: the carrier connected the human");
                self.human.legs.remove(&id);
                self.human.stats.connected += 1;
                if let Some(call) = self.calls.get_mut(&id) {
                    call.media.stop_prompt();
                }
                self.report_human(now, id, HumanOutcome::Connected);
                self.hang_up(now, id, "transferred");
            }
            _ => {
                tracing::info!(
                    call = id,
                    status,
                    "REFER: the referred call failed: bridged INVITE instead"
                );
                self.refer_fallback(now, id);
            }
        }
    }

    /// ReferWait ran out.
    pub(super) fn refer_timeout(&mut self, now: Instant, id: u64) {
        let progress = self.human.legs.get(&id).and_then(|h| h.refer).is_some_and(|r| r.progress);
        if progress {
            self.human.legs.remove(&id);
            self.human.stats.no_answer += 1;
            self.report_human(now, id, HumanOutcome::NoAnswer);
        } else {
            tracing::info!(call = id, "REFER not answered in time: bridged INVITE instead");
            self.refer_fallback(now, id);
        }
    }

    /// The REFER did not work: place the bridged INVITE (or report the human unavailable).
    fn refer_fallback(&mut self, now: Instant, id: u64) {
        if self.human.legs.get(&id).is_none_or(|h| h.refer.is_none()) {
            return;
        }
        self.human.legs.remove(&id);
        self.human.stats.refer_fallbacks += 1;
        if !self.start_invite_leg(now, id) {
            self.human.stats.unavailable += 1;
            let cause = "REFER refused and no carrier can place the call".to_string();
            self.report_human(now, id, HumanOutcome::Unavailable { cause });
        }
    }
}

/// The status code of a `message/sipfrag` body ("SIP/2.0 200 OK").
fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    let rest = line.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok().filter(|s| (100..700).contains(s))
}

#[cfg(test)]
mod tests {
    use super::sipfrag_status;

    #[test]
    fn sipfrag_status_lines() {
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying"), Some(100));
        assert_eq!(sipfrag_status(b"SIP/2.0 603 Declined\r\nFoo: bar\r\n"), Some(603));
        assert_eq!(sipfrag_status(b"garbage"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 99"), None);
        assert_eq!(sipfrag_status(&[0xff, 0xfe]), None);
    }
}
