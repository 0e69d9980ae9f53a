//! Inbound calls as user agent server: the INVITE (answer or refuse), CANCEL, ACK, requests
//! inside a dialog (BYE, re-INVITE, UPDATE), the call's own timers, its media, and hang-up.

use super::*;
use crate::core::ladder::Rung;

impl Endpoint {
    // ---- inbound INVITE ----------------------------------------------------------------

    pub(super) fn on_invite(&mut self, now: Instant, peer: Peer, req: Request) {
        let Some(carrier) = self.acl.classify(peer.addr.ip()) else {
            return; // filtered before the transaction layer; kept as a second line of defence
        };
        if let Some(existing) = self.find_call_by_invite(&req) {
            tracing::debug!(call = existing, "INVITE for an existing call absorbed");
            return;
        }
        let full = self.calls.len() >= self.cfg.limits.max_calls;
        if full || self.refused_by_admin(carrier) {
            if full {
                self.counters.shed_calls += 1;
            }
            let mut resp = self.response(&req, 503, None);
            resp.headers.push("Retry-After", self.cfg.limits.retry_after.as_secs().to_string());
            self.send_response(now, resp);
            return;
        }
        let Some(port) = self.ports.allocate(&mut self.rng) else {
            let resp = self.response(&req, 503, None);
            self.send_response(now, resp);
            return;
        };
        let params = AnswerParams {
            local_ip: self.cfg.media_ip,
            local_port: port,
            session_id: self.rng_u32() as u64,
            session_version: 1,
        };
        let (negotiated, answer) = match self.negotiate(&req, &params) {
            Ok(ok) => ok,
            Err(status) => {
                self.ports.release(port);
                let resp = self.response(&req, status, None);
                self.send_response(now, resp);
                return;
            }
        };
        let local_tag = random_token(&mut self.rng);
        let dialog = match Dialog::new_uas(&req, &local_tag, peer, self.rng_u32() & 0x7fff) {
            Ok(d) => d,
            Err(_) => {
                self.ports.release(port);
                let resp = self.response(&req, 400, None);
                self.send_response(now, resp);
                return;
            }
        };
        let id = self.next_call;
        self.next_call += 1;
        let invite_branch =
            req.top_via().ok().and_then(|v| v.branch().map(str::to_string)).unwrap_or_default();
        let media = match self.media_session(now, &negotiated, &dialog.call_id, carrier) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up media for the negotiated codec");
                self.ports.release(port);
                let resp = self.response(&req, 488, None);
                self.send_response(now, resp);
                return;
            }
        };
        let mut timers = TimerTable::default();
        if !self.cfg.answer_delay.is_zero() {
            timers.set(Timer::Answer, now + self.cfg.answer_delay);
        }
        timers.set(Timer::Hangup, now + self.cfg.max_call_duration);
        let call = Call {
            id,
            carrier,
            state: CallState::Ringing,
            dialog,
            invite: req,
            invite_branch,
            local_port: port,
            negotiated,
            answer_sdp: answer,
            pending_2xx: None,
            media,
            timers,
            started: now,
            bridge: None,
            record: Default::default(),
            ladder: None,
        };
        self.out.push_back(Output::Event(Event::MediaOpen { port }));
        self.port_to_call.insert(port, id);
        for status in [100, 180] {
            let resp = self.response(&call.invite, status, Some(&call.dialog.local_tag));
            self.send_response(now, resp);
        }
        self.calls.insert(id, call);
        self.counters.calls_offered += 1;
        if self.ai.is_some() {
            // ringing covers the agent setup; the call is answered when an agent is live or
            // the fallback takes it
            self.start_bridge(now, id);
        } else if self.cfg.answer_delay.is_zero() {
            self.answer_call(now, id);
        }
    }

    /// SDP offer/answer for an INVITE: its offer, or ours when it has none.
    pub(super) fn negotiate(
        &mut self,
        req: &Request,
        params: &AnswerParams,
    ) -> Result<(sdp::Negotiated, String), u16> {
        if req.body.is_empty() {
            return Err(488); // offer-less INVITE: not supported by the foundation yet
        }
        sdp::answer(&req.body, params).map_err(|e| match e {
            SdpError::NoCommonCodec => 488,
            _ => 488,
        })
    }

    pub(super) fn media_session(
        &mut self,
        now: Instant,
        negotiated: &sdp::Negotiated,
        call_id: &str,
        carrier: usize,
    ) -> Result<MediaSession, crate::core::media::session::MediaError> {
        let ntp_now = self
            .cfg
            .ntp_anchor
            .map(|(at, ntp)| ntp.wrapping_add(ntp_duration(now.saturating_duration_since(at))))
            .unwrap_or(0);
        let params = MediaParams {
            negotiated: negotiated.clone(),
            ai_format: self.cfg.ai_format,
            jitter: self.cfg.jitter,
            opus: self.cfg.opus,
            ssrc: self.rng_u32(),
            initial_seq: self.rng_u32() as u16,
            initial_timestamp: self.rng_u32(),
            cname: format!("trunkguard-{}", sanitize(call_id)),
            ntp_now,
            seed: rand::RngCore::next_u64(&mut self.rng),
        };
        let mut media = MediaSession::new(params, now)?;
        media.allow_latch_from(self.media_sources(carrier));
        Ok(media)
    }

    /// Where a carrier's media may be latched from when NAT hides the SDP's address: its
    /// `inbound_from` networks and its proxy's address.
    fn media_sources(&self, carrier: usize) -> Vec<ipnet::IpNet> {
        let Some(c) = self.cfg.carriers.get(carrier) else { return Vec::new() };
        let proxy = c.proxy.map(|p| ipnet::IpNet::from(p.addr.ip()));
        c.inbound_from.iter().copied().chain(proxy).collect()
    }

    pub(super) fn find_call_by_invite(&self, req: &Request) -> Option<u64> {
        let call_id = req.call_id().ok()?;
        let from_tag = req.from_hdr().ok()?.tag().map(str::to_string);
        self.calls
            .values()
            .find(|c| c.dialog.call_id == call_id && c.dialog.remote_tag == from_tag)
            .map(|c| c.id)
    }

    pub(super) fn answer_call(&mut self, now: Instant, id: u64) {
        let Some(call) = self.calls.get(&id) else { return };
        if call.state != CallState::Ringing {
            return;
        }
        let mut ok = self.response(&call.invite, 200, Some(&call.dialog.local_tag));
        ok.headers.push("Contact", format!("<{}>", self.contact_uri(call.dialog.peer.transport)));
        ok.headers.push("Allow", build::ALLOW);
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = call.answer_sdp.clone().into_bytes();
        let carrier = self.cfg.carriers[call.carrier].name.clone();
        let call_id = call.dialog.call_id.clone();
        self.latencies.call_setup.record(now.saturating_duration_since(call.started));
        if let Some(call) = self.calls.get_mut(&id) {
            call.record.answered_at = Some(now);
        }
        // the record goes out before the 200 OK (the transaction layer's transmits are moved
        // to the output queue after this)
        self.record(id, RecordPhase::Answered, None);
        self.send_response(now, ok.clone());
        let t1 = self.cfg.timers.t1;
        if let Some(call) = self.calls.get_mut(&id) {
            call.state = CallState::Answered;
            call.arm_2xx(now, ok, t1);
        }
        self.counters.calls_answered += 1;
        self.out.push_back(Output::Event(Event::CallAnswered { call_id, carrier }));
    }

    pub(super) fn on_ack(&mut self, now: Instant, ack: &Request) {
        let Some(id) = self.find_dialog(ack) else {
            return; // stray ACK: nothing to answer
        };
        let Some(call) = self.calls.get_mut(&id) else { return };
        if !call.acknowledge() || call.state != CallState::Answered {
            return; // ACK of a re-INVITE, or a retransmitted ACK
        }
        call.state = CallState::Confirmed;
        call.media.start(now);
        if !call.bridge.as_ref().is_some_and(|b| b.is_live()) {
            self.start_ladder(now, id); // no agent: the canned prompt, then the menu
        }
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.media.handle_timeout(now);
        self.drain_media(now, id);
    }

    pub(super) fn on_cancel(&mut self, now: Instant, cancel: &Request) {
        let branch = cancel.top_via().ok().and_then(|v| v.branch().map(str::to_string));
        let call_id = cancel.call_id().ok().map(str::to_string);
        let found = self
            .calls
            .values()
            .find(|c| {
                Some(&c.dialog.call_id) == call_id.as_ref()
                    && Some(&c.invite_branch) == branch.as_ref()
            })
            .map(|c| (c.id, c.state));
        let status = if found.is_some() { 200 } else { 481 };
        let resp = self.response(cancel, status, None);
        self.send_response(now, resp);
        if let Some((id, CallState::Ringing)) = found {
            if let Some(call) = self.calls.get(&id) {
                let resp = self.response(&call.invite, 487, Some(&call.dialog.local_tag));
                self.send_response(now, resp);
            }
            self.end_call(id, "cancelled");
        }
    }

    // ---- in-dialog requests ------------------------------------------------------------

    pub(super) fn find_dialog(&self, req: &Request) -> Option<u64> {
        self.calls.values().find(|c| c.dialog.matches(req)).map(|c| c.id)
    }

    pub(super) fn on_in_dialog(&mut self, now: Instant, req: Request) {
        if self.human_in_dialog(now, &req) {
            return;
        }
        let Some(id) = self.find_dialog(&req) else {
            let resp = self.response(&req, 481, None);
            self.send_response(now, resp);
            return;
        };
        let cseq_ok = self.calls.get_mut(&id).map(|c| c.dialog.accept_remote_cseq(&req).is_ok());
        if cseq_ok != Some(true) {
            let resp = self.response(&req, 500, None);
            self.send_response(now, resp);
            return;
        }
        match req.method {
            Method::Bye => {
                let resp = self.response(&req, 200, None);
                self.send_response(now, resp);
                self.end_call(id, "remote BYE");
            }
            Method::Invite | Method::Update => self.on_reoffer(now, id, req),
            Method::Info | Method::Options => {
                let resp = self.response(&req, 200, None);
                self.send_response(now, resp);
            }
            Method::Notify => self.on_notify(now, id, &req),
            _ => {
                let mut resp = self.response(&req, 405, None);
                resp.headers.push("Allow", build::ALLOW);
                self.send_response(now, resp);
            }
        }
    }

    /// re-INVITE or UPDATE: answer a new offer on the same RTP port (or repeat our last
    /// answer when there is no offer). A re-INVITE's 2xx is retransmitted until its ACK.
    pub(super) fn on_reoffer(&mut self, now: Instant, id: u64, req: Request) {
        let Some(call) = self.calls.get(&id) else { return };
        let params = AnswerParams {
            local_ip: self.cfg.media_ip,
            local_port: call.local_port,
            session_id: 1,
            session_version: 2,
        };
        let renegotiated =
            if req.body.is_empty() { None } else { Some(sdp::answer(&req.body, &params)) };
        let (status, body) = match renegotiated {
            Some(Ok((neg, answer))) => {
                if let Some(call) = self.calls.get_mut(&id) {
                    call.media.set_remote(neg.remote_rtp);
                    call.negotiated = neg;
                    call.answer_sdp = answer.clone();
                }
                (200, Some(answer))
            }
            Some(Err(_)) => (488, None),
            None => (200, Some(call.answer_sdp.clone())),
        };
        let Some(call) = self.calls.get(&id) else { return };
        let mut resp = self.response(&req, status, Some(&call.dialog.local_tag));
        if status == 200 {
            resp.headers
                .push("Contact", format!("<{}>", self.contact_uri(call.dialog.peer.transport)));
            if let Some(body) = body {
                resp.headers.push("Content-Type", "application/sdp");
                resp.body = body.into_bytes();
            }
        }
        self.send_response(now, resp.clone());
        if status == 200 && req.method == Method::Invite {
            let t1 = self.cfg.timers.t1;
            if let Some(call) = self.calls.get_mut(&id) {
                call.arm_2xx(now, resp, t1);
            }
        }
    }

    // ---- call timers and hang-up -------------------------------------------------------

    pub(super) fn call_timeouts(&mut self, now: Instant, id: u64) {
        let expired = match self.calls.get_mut(&id) {
            Some(call) => call.timers.take_expired(now),
            None => return,
        };
        for timer in expired {
            match timer {
                Timer::Answer => self.answer_call(now, id),
                Timer::Retransmit2xx => self.retransmit_2xx(now, id),
                Timer::AckWait => self.hang_up(now, id, "no ACK"),
                Timer::Hangup => {
                    let reason = self.hangup_reason(id);
                    self.hang_up(now, id, reason)
                }
                _ => {}
            }
        }
        self.ladder_timeouts(now, id);
    }

    /// Why call `id` is hung up when its Hangup timer fires: the ladder's way out, else the
    /// prompt (or the call's maximum duration) is over.
    fn hangup_reason(&self, id: u64) -> &'static str {
        let Some(call) = self.calls.get(&id) else { return "prompt played" };
        match (call.record.callback, call.record.ladder.last()) {
            (Some(_), _) => "callback requested",
            (None, Some(Rung::Goodbye)) => "goodbye",
            (None, Some(Rung::Connected)) => "human hung up",
            _ => "prompt played",
        }
    }

    fn retransmit_2xx(&mut self, now: Instant, id: u64) {
        let t2 = self.cfg.timers.t2;
        let Some(call) = self.calls.get_mut(&id) else { return };
        if call.dialog.peer.transport.is_reliable() {
            return;
        }
        if let Some(resp) = call.retransmit_2xx(now, t2) {
            let peer = call.dialog.peer;
            self.tx.send_stateless(peer, SipMessage::Response(resp));
        }
    }

    /// Sends what the call's media queued and handles its events.
    pub(super) fn drain_media(&mut self, now: Instant, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        let port = call.local_port;
        while let Some(t) = call.media.poll_transmit() {
            let local_port = if t.rtcp { port + 1 } else { port };
            if !t.rtcp {
                self.counters.rtp_sent += 1;
            }
            self.out.push_back(Output::Transmit(Transmit::Rtp {
                local_port,
                to: t.to,
                data: t.data,
            }));
        }
        self.counters.ai_underruns += call.media.take_new_underruns();
        for latency in call.media.take_latencies() {
            match latency {
                MediaLatency::RtpToAi(d) => self.latencies.rtp_to_ai.record(d),
                MediaLatency::AiToRtp(d) => self.latencies.ai_to_rtp.record(d),
            }
        }
        let mut digits = Vec::new();
        let mut prompt_finished = false;
        let on_ladder = call.ladder.is_some();
        while let Some(ev) = call.media.poll_event() {
            match ev {
                MediaEvent::PromptFinished if on_ladder => prompt_finished = true,
                // the filler ending during a failover is not the end of the call
                MediaEvent::PromptFinished
                    if call.bridge.as_ref().is_some_and(|b| !b.is_fallback()) => {}
                MediaEvent::PromptFinished => {
                    call.timers.set(Timer::Hangup, now + self.cfg.hangup_after_prompt)
                }
                MediaEvent::Dtmf { digit, .. } => {
                    tracing::info!(call_id = %call.dialog.call_id, %digit, "DTMF");
                    let call_id = call.dialog.call_id.clone();
                    self.out.push_back(Output::Event(Event::Dtmf { call_id, digit }));
                    digits.push(digit);
                }
            }
        }
        self.relay_caller_to_human(now, id, &digits);
        if on_ladder {
            // the ladder has the caller's keys; the bridge (in fallback) only drains audio
            if prompt_finished {
                self.feed_ladder(now, id, |l| l.prompt_finished(now));
            }
            for digit in digits.drain(..) {
                self.feed_ladder(now, id, |l| l.digit(now, digit));
            }
        }
        self.feed_bridge(now, id, &digits);
    }

    /// Sends BYE for an answered call (or 487/end for one still ringing).
    pub(super) fn hang_up(&mut self, now: Instant, id: u64, reason: &'static str) {
        let Some(call) = self.calls.get(&id) else { return };
        match call.state {
            CallState::Ending => return,
            CallState::Ringing => {
                let resp = self.response(&call.invite, 480, Some(&call.dialog.local_tag));
                self.send_response(now, resp);
                self.end_call(id, reason);
                return;
            }
            CallState::Answered | CallState::Confirmed => {}
        }
        let transport = call.dialog.peer.transport;
        let via = build::via(transport, self.local_addr(transport), &new_branch(&mut self.rng));
        let contact = self.contact_uri(transport);
        let user_agent = self.cfg.user_agent.clone();
        self.ladder_call_gone(now, id);
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.state = CallState::Ending;
        call.timers.stop_all();
        call.media.close(now, reason);
        self.close_bridge(now, id);
        let Some(call) = self.calls.get_mut(&id) else { return };
        let bye = call.dialog.new_request(Method::Bye, via, &contact, &user_agent);
        let peer = call.dialog.peer;
        self.drain_media(now, id);
        let Some(call) = self.calls.get(&id) else { return };
        tracing::info!(call_id = %call.dialog.call_id, reason, "hanging up");
        let tx = self.tx.send_request(now, peer, bye);
        self.pending.insert(tx, Pending::Bye { call: id });
    }

    pub(super) fn end_call(&mut self, id: u64, reason: &'static str) {
        self.ladder_call_gone(self.last_now, id);
        self.stop_human(self.last_now, id);
        self.close_bridge(self.last_now, id);
        let end = self.call_end(self.last_now, id, reason);
        self.record(id, RecordPhase::Ended, end);
        let Some(call) = self.calls.remove(&id) else { return };
        self.port_to_call.remove(&call.local_port);
        self.ports.release(call.local_port);
        self.counters.calls_ended += 1;
        self.out.push_back(Output::Event(Event::MediaClose { port: call.local_port }));
        self.out
            .push_back(Output::Event(Event::CallEnded { call_id: call.dialog.call_id, reason }));
    }
}
