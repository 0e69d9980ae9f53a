//! The human leg once it runs, as the endpoint drives it: its RTP in and out, the bridge
//! between the caller's and the human's media sessions (PCM both ways, keys relayed as RFC
//! 4733 events), the ringback that covers the ringing, and requests inside the human's dialog
//! (their BYE, a re-INVITE). Setting the leg up and tearing it down is [`super::outbound`].

use super::ladder::HumanOutcome;
use super::*;
use crate::core::sdp::AnswerParams;

/// How long each key the caller presses is played to the connected human.
const DTMF_RELAY: Duration = Duration::from_millis(100);

impl Endpoint {
    /// RTP or RTCP on a human leg's port; true when the port is one.
    pub(super) fn human_rtp(
        &mut self,
        now: Instant,
        local_port: u16,
        from: SocketAddr,
        data: &[u8],
    ) -> bool {
        let rtp_port = local_port & !1;
        let Some(&id) = self.human.ports.get(&rtp_port) else { return false };
        let Some(c) = self.human.legs.get_mut(&id).and_then(|h| h.connected.as_mut()) else {
            return true; // early media before the answer is not played
        };
        let before = c.media.counters();
        if local_port == rtp_port {
            c.media.on_rtp(now, from, data);
        } else {
            c.media.on_rtcp(now, from, data);
        }
        let after = c.media.counters();
        self.counters.media_refused_source += (after.rtp_wrong_source - before.rtp_wrong_source)
            + (after.rtcp_wrong_source - before.rtcp_wrong_source);
        self.drain_human(now, id);
        true
    }

    /// Sends what the human leg's media queued and hands the human's audio to the caller.
    pub(super) fn drain_human(&mut self, now: Instant, id: u64) {
        let Some(h) = self.human.legs.get_mut(&id) else { return };
        let (Some(c), Some(port)) = (h.connected.as_mut(), h.port) else { return };
        while let Some(t) = c.media.poll_transmit() {
            let local_port = if t.rtcp { port + 1 } else { port };
            self.out.push_back(Output::Transmit(Transmit::Rtp {
                local_port,
                to: t.to,
                data: t.data,
            }));
        }
        while c.media.poll_event().is_some() {}
        let caller = self.calls.get_mut(&id);
        match caller {
            Some(call) => {
                while let Some(pcm) = c.media.poll_caller_audio() {
                    if let Err(e) = call.media.push_ai_audio(now, &pcm) {
                        tracing::debug!(error = %e, "human audio dropped");
                    }
                }
            }
            None => while c.media.poll_caller_frame().is_some() {},
        }
    }

    /// The caller's decoded audio and keys go to the connected human (called from the caller's
    /// media drain, before the AI bridge would take the audio). Keys are re-sent as RFC 4733
    /// events (100 ms each) when the human's side offered telephone-event.
    pub(super) fn relay_caller_to_human(&mut self, now: Instant, id: u64, digits: &[char]) {
        let Some(c) = self.human.legs.get_mut(&id).and_then(|h| h.connected.as_mut()) else {
            return;
        };
        if !digits.is_empty() {
            let keys: String = digits.iter().collect();
            if !c.media.send_digits(now, &keys, DTMF_RELAY) {
                tracing::debug!(call = id, %keys, "keys not relayed: the human's side has no telephone-event");
            }
        }
        let Some(call) = self.calls.get_mut(&id) else { return };
        while let Some(pcm) = call.media.poll_caller_audio() {
            if let Err(e) = c.media.push_ai_audio(now, &pcm) {
                tracing::debug!(error = %e, "caller audio for the human dropped");
            }
        }
    }

    /// While the human leg rings the caller hears ringback whenever nothing else plays.
    pub(super) fn keep_ringback(&mut self, id: u64) {
        if self.human.ringback.is_none() {
            let cycles = self.human.settings.human_timeout.as_secs() as usize / 2 + 6;
            self.human.ringback = crate::core::outbound::ringback::ringback(cycles).ok();
        }
        let Some(ringback) = self.human.ringback.clone() else { return };
        let Some(call) = self.calls.get_mut(&id) else { return };
        if matches!(call.state, CallState::Confirmed) && !call.media.is_playing_prompt() {
            call.media.play_prompt(ringback);
        }
    }

    /// A request inside a human leg's dialog (their BYE, a re-INVITE); true when it was one.
    pub(super) fn human_in_dialog(&mut self, now: Instant, req: &Request) -> bool {
        let Some(id) = self
            .human
            .legs
            .iter()
            .find(|(_, h)| h.connected.as_ref().is_some_and(|c| c.dialog.matches(req)))
            .map(|(id, _)| *id)
        else {
            return false;
        };
        let cseq_ok = self
            .human
            .legs
            .get_mut(&id)
            .and_then(|h| h.connected.as_mut())
            .map(|c| c.dialog.accept_remote_cseq(req).is_ok());
        if cseq_ok != Some(true) {
            let resp = self.response(req, 500, None);
            self.send_response(now, resp);
            return true;
        }
        match req.method {
            Method::Bye => {
                let resp = self.response(req, 200, None);
                self.send_response(now, resp);
                tracing::info!(call = id, "the human hung up");
                if let Some(c) = self.human.legs.get_mut(&id).and_then(|h| h.connected.as_mut()) {
                    c.bye_sent = true; // no BYE of ours
                }
                self.end_human_leg(now, id);
                self.report_human(now, id, HumanOutcome::Ended);
            }
            Method::Invite | Method::Update if !req.body.is_empty() => {
                self.human_reoffer(now, id, req)
            }
            Method::Invite | Method::Update | Method::Info | Method::Options => {
                let resp = self.response(req, 200, None);
                self.send_response(now, resp);
            }
            _ => {
                let mut resp = self.response(req, 405, None);
                resp.headers.push("Allow", build::ALLOW);
                self.send_response(now, resp);
            }
        }
        true
    }

    /// A new offer from the human (e.g. hold): answered on the same port.
    fn human_reoffer(&mut self, now: Instant, id: u64, req: &Request) {
        let Some(h) = self.human.legs.get(&id) else { return };
        let Some(port) = h.port else { return };
        let params = AnswerParams {
            local_ip: self.cfg.media_ip,
            local_port: port,
            session_id: 1,
            session_version: 2,
        };
        let resp = match sdp::answer(&req.body, &params) {
            Ok((neg, answer)) => {
                let local_tag = h.connected.as_ref().map(|c| c.dialog.local_tag.clone());
                if let Some(c) = self.human.legs.get_mut(&id).and_then(|h| h.connected.as_mut()) {
                    c.media.set_remote(neg.remote_rtp);
                }
                let mut resp = self.response(req, 200, local_tag.as_deref());
                let transport = self
                    .human
                    .legs
                    .get(&id)
                    .and_then(|h| h.connected.as_ref())
                    .map(|c| c.dialog.peer.transport);
                resp.headers.push(
                    "Contact",
                    format!("<{}>", self.contact_uri(transport.unwrap_or(Transport::Udp))),
                );
                resp.headers.push("Content-Type", "application/sdp");
                resp.body = answer.into_bytes();
                resp
            }
            Err(_) => self.response(req, 488, None),
        };
        self.send_response(now, resp);
    }

    pub(super) fn push_human_media(&mut self, port: u16, media: &mut MediaSession) {
        while let Some(t) = media.poll_transmit() {
            let local_port = if t.rtcp { port + 1 } else { port };
            self.out.push_back(Output::Transmit(Transmit::Rtp {
                local_port,
                to: t.to,
                data: t.data,
            }));
        }
    }
}
