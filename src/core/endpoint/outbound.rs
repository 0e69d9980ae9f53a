//! Outbound INVITE legs as the endpoint runs them (the human leg of the ladder): the INVITE
//! with our SDP offer to a carrier's proxy, responses fed to the [`OutboundLeg`] policy, the
//! next carrier on a failure by cause, CANCEL of a ringing leg, the transaction-less ACK of a
//! 2xx (RFC 3261 §13.2.2.4, re-sent for each retransmitted 2xx), the UAC dialog, the leg's own
//! RTP session, and late responses to attempts already given up (CANCEL a 1xx, ACK + BYE a
//! 2xx). [`super::human`] decides when a leg starts; [`super::human_media`] runs its media.
//!
//! Addressing: the Request-URI and To are the human's URI with its host replaced by the
//! carrier's domain (its `register` domain, else `[sip] domain`, else the proxy address), as
//! trunks route on the user part; every request of the leg (INVITE, ACK, CANCEL, BYE) goes to
//! the carrier's proxy, which acts as outbound proxy. From carries the caller's user part (the
//! number the human sees) at our address.

use serde::Serialize;

use super::ladder::HumanOutcome;
use super::*;
use crate::core::ai::{BreakerConfig, BreakerState};
use crate::core::outbound::{
    retry_after, CarrierView, LegAction, LegConfig, OutboundCarriers, OutboundLeg, Reply,
};
use crate::core::sdp::AnswerParams;

/// How long an attempt that was given up is remembered, for its late responses (64·T1).
const STRAY_MEMORY_T1: u32 = 64;

/// `[outbound]` and the human of `[fallback]`, in core terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSettings {
    /// No 1xx within this long: the next carrier is tried.
    pub no_provisional: Duration,
    /// Carrier tried first when healthy (index into `carriers`).
    pub preferred_carrier: Option<usize>,
    /// Each carrier's outbound breaker.
    pub breaker: BreakerConfig,
    /// `[fallback] human`: the URI calls are transferred to; `None`: no human rung.
    pub human: Option<String>,
    /// `[fallback] human_timeout_s`: the human leg rings at most this long.
    pub human_timeout: Duration,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        OutboundSettings {
            no_provisional: Duration::from_millis(2000),
            preferred_carrier: None,
            breaker: BreakerConfig {
                failure_threshold: 5,
                cooldown: Duration::from_secs(30),
                trial_timeout: Duration::from_secs(10),
            },
            human: None,
            human_timeout: Duration::from_secs(25),
        }
    }
}

/// Outbound and transfer counters for /status and /metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboundStatus {
    /// Outbound INVITEs sent (every attempt on every carrier).
    pub attempts: u64,
    /// Attempts re-routed to another carrier after a failure by cause.
    pub failovers: u64,
    /// Transfers to the human started (REFER or INVITE).
    pub transfers: u64,
    /// Outcomes: connected, not answered in time, no carrier could reach the human.
    pub connected: u64,
    pub no_answer: u64,
    pub unavailable: u64,
    /// REFERs sent, and those that fell back to a bridged INVITE.
    pub refers: u64,
    pub refer_fallbacks: u64,
    /// Human legs in progress.
    pub active_legs: usize,
}

/// Everything outbound the endpoint keeps.
pub(super) struct HumanState {
    pub settings: OutboundSettings,
    pub carriers: OutboundCarriers,
    /// By the caller's call id.
    pub legs: HashMap<u64, HumanLeg>,
    /// INVITE attempts that may still get responses, by client transaction.
    pub attempts: HashMap<ClientTxId, Attempt>,
    /// The human legs' RTP ports and the call each belongs to.
    pub ports: HashMap<u16, u64>,
    pub ringback: Option<Prompt>,
    pub stats: OutboundStatus,
    /// Outcomes reported to the ladder (tests read them).
    #[cfg(test)]
    pub reported: Vec<(u64, HumanOutcome)>,
}

impl HumanState {
    pub fn new(settings: &OutboundSettings, carriers: usize) -> Self {
        HumanState {
            carriers: OutboundCarriers::new(carriers, settings.breaker, settings.preferred_carrier),
            settings: settings.clone(),
            legs: HashMap::new(),
            attempts: HashMap::new(),
            ports: HashMap::new(),
            ringback: None,
            stats: OutboundStatus::default(),
            #[cfg(test)]
            reported: Vec::new(),
        }
    }
}

/// One INVITE sent through one carrier.
pub(super) struct Attempt {
    pub call: u64,
    pub number: u32,
    pub carrier: usize,
    /// The INVITE was re-sent with digest credentials (once per attempt).
    pub authed: bool,
    pub invite: Request,
    pub peer: Peer,
    /// Given up (no longer the leg's current attempt): a 1xx is cancelled, a 2xx ACKed + BYEd.
    pub stray: bool,
    pub cancelled: bool,
    pub byed: bool,
    /// The ACK of its 2xx, re-sent for each retransmission.
    pub ack: Option<Request>,
    pub forget_at: Option<Instant>,
}

/// A call's human rung in progress.
pub(super) struct HumanLeg {
    pub started: Instant,
    /// REFER sent and not yet settled.
    pub refer: Option<ReferState>,
    /// The bridged INVITE leg.
    pub leg: Option<OutboundLeg>,
    /// Our RTP port for the human leg.
    pub port: Option<u16>,
    pub connected: Option<Connected>,
    /// ReferWait.
    pub timers: TimerTable,
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ReferState {
    /// A NOTIFY with a 1xx sipfrag came: the carrier is calling the human.
    pub progress: bool,
}

/// The answered human leg.
pub(super) struct Connected {
    pub dialog: Dialog,
    pub media: MediaSession,
    pub bye_sent: bool,
}

impl Endpoint {
    /// Tells the ladder how the human rung of call `id` ended (or that it connected).
    pub(super) fn report_human(&mut self, now: Instant, id: u64, outcome: HumanOutcome) {
        tracing::info!(call = id, ?outcome, "human rung");
        let label = match outcome {
            HumanOutcome::Connected => "connected",
            HumanOutcome::NoAnswer => "no-answer",
            HumanOutcome::Unavailable { .. } => "unavailable",
            HumanOutcome::Ended => "ended",
        };
        self.human_record(id, |r| r.outcome = Some(label));
        #[cfg(test)]
        self.human.reported.push((id, outcome.clone()));
        self.on_human_outcome(now, id, outcome);
    }

    /// Updates what call `id`'s record says about its human leg.
    pub(super) fn human_record(&mut self, id: u64, f: impl FnOnce(&mut HumanRecord)) {
        if let Some(call) = self.calls.get_mut(&id) {
            f(call.record.human.get_or_insert_with(HumanRecord::default));
        }
    }

    /// Copies the leg's failed attempts into the call's record.
    fn sync_leg_record(&mut self, id: u64) {
        let Some(leg) = self.human.legs.get(&id).and_then(|h| h.leg.as_ref()) else { return };
        let names = &self.cfg.carriers;
        let failed: Vec<String> = leg
            .failed()
            .iter()
            .map(|f| {
                format!(
                    "{}: {}",
                    names.get(f.carrier).map_or("carrier", |c| c.name.as_str()),
                    f.failure.cause()
                )
            })
            .collect();
        let failovers = leg.failovers() as u32;
        self.human_record(id, |r| {
            r.failed_attempts = failed;
            r.failovers = failovers;
        });
    }

    /// What carrier choice needs to know about each carrier now.
    pub(super) fn carrier_views(&self) -> Vec<CarrierView> {
        self.carriers
            .iter()
            .zip(&self.carriers_out)
            .map(|(c, out)| CarrierView {
                has_proxy: c.settings.proxy.is_some(),
                probe_up: c.prober.as_ref().and_then(|p| p.is_up()),
                in_service: !out,
            })
            .collect()
    }

    /// Allocates the leg's RTP port and sends the first INVITE. False (nothing kept) when no
    /// port or no carrier is available.
    pub(super) fn start_invite_leg(&mut self, now: Instant, id: u64) -> bool {
        let cfg = LegConfig {
            no_provisional: self.human.settings.no_provisional,
            ring_timeout: self.human.settings.human_timeout,
            carrier_names: self.cfg.carriers.iter().map(|c| c.name.clone()).collect(),
        };
        let views = self.carrier_views();
        let mut leg = OutboundLeg::new(cfg);
        let Some(port) = self.ports.allocate(&mut self.rng) else {
            tracing::warn!("no RTP port for the human leg");
            return false;
        };
        let actions = leg.start(now, &mut self.human.carriers, &views);
        if let Some(LegAction::Unavailable { cause }) = actions.first() {
            tracing::warn!(%cause, "human leg: no carrier can place the call");
            self.ports.release(port);
            return false;
        }
        let entry = self.human.legs.entry(id).or_insert_with(|| HumanLeg {
            started: now,
            refer: None,
            leg: None,
            port: None,
            connected: None,
            timers: TimerTable::default(),
        });
        entry.leg = Some(leg);
        entry.port = Some(port);
        self.human.ports.insert(port, id);
        self.out.push_back(Output::Event(Event::MediaOpen { port }));
        self.apply_leg(now, id, actions, None);
        true
    }

    /// Carries out what the leg asks for. `answered`: the 2xx and its transaction, when the
    /// actions come from one.
    pub(super) fn apply_leg(
        &mut self,
        now: Instant,
        id: u64,
        actions: Vec<LegAction>,
        answered: Option<(ClientTxId, &Response)>,
    ) {
        self.sync_leg_record(id);
        for action in actions {
            match action {
                LegAction::Invite { carrier, attempt } => {
                    self.send_attempt(now, id, carrier, attempt)
                }
                LegAction::Abandon { attempt } => self.give_up_attempt(now, id, attempt, false),
                LegAction::Cancel { attempt } => self.give_up_attempt(now, id, attempt, true),
                LegAction::Ringing => tracing::info!(call = id, "human leg ringing"),
                LegAction::Answered { carrier } => {
                    if let Some((tx, resp)) = answered {
                        self.human_answered(now, id, carrier, tx, resp);
                    }
                }
                LegAction::Unavailable { cause } => {
                    self.human.stats.unavailable += 1;
                    self.note_failure(now, "human-unavailable", cause.clone());
                    self.end_human_leg(now, id);
                    self.report_human(now, id, HumanOutcome::Unavailable { cause });
                }
                LegAction::NoAnswer => {
                    self.human.stats.no_answer += 1;
                    self.end_human_leg(now, id);
                    self.report_human(now, id, HumanOutcome::NoAnswer);
                }
            }
        }
    }

    fn send_attempt(&mut self, now: Instant, id: u64, carrier: usize, number: u32) {
        let port = self.human.legs.get(&id).and_then(|h| h.port);
        let (Some(port), Some(proxy), Some(human)) =
            (port, self.cfg.carriers[carrier].proxy, self.human.settings.human.clone())
        else {
            return;
        };
        let target = request_uri(&human, &self.carriers[carrier].domain());
        let local = self.local_addr(proxy.transport);
        let via = build::via(proxy.transport, local, &new_branch(&mut self.rng));
        let call_id = format!("{}@trunkguard", random_token(&mut self.rng));
        let tag = random_token(&mut self.rng);
        let caller = self
            .calls
            .get(&id)
            .and_then(|c| user_part(&c.dialog.remote_uri.uri).map(str::to_string));
        let contact = format!("<{}>", self.contact_uri(proxy.transport));
        let mut invite = build::out_of_dialog(build::OutOfDialog {
            method: Method::Invite,
            request_uri: target.clone(),
            from_uri: format!(
                "sip:{}@{}",
                caller.as_deref().unwrap_or("trunkguard"),
                host_port(local)
            ),
            from_tag: &tag,
            to_uri: target,
            call_id: &call_id,
            cseq: 1,
            via,
            contact: Some(contact),
            user_agent: &self.cfg.user_agent,
        });
        invite.headers.push("Allow", build::ALLOW);
        invite.headers.push("Content-Type", "application/sdp");
        let params = AnswerParams {
            local_ip: self.cfg.media_ip,
            local_port: port,
            session_id: u64::from(self.rng_u32()),
            session_version: 1,
        };
        invite.body = sdp::offer(&params).into_bytes();
        self.human.stats.attempts += 1;
        if number > 1 {
            self.human.stats.failovers += 1;
        }
        tracing::info!(call = id, carrier = %self.cfg.carriers[carrier].name, attempt = number, "human leg: INVITE");
        let tx = self.tx.send_request(now, proxy, invite.clone());
        self.pending.insert(tx, Pending::Outbound { call: id, attempt: number });
        self.human.attempts.insert(
            tx,
            Attempt {
                call: id,
                number,
                carrier,
                authed: false,
                invite,
                peer: proxy,
                stray: false,
                cancelled: false,
                byed: false,
                ack: None,
                forget_at: None,
            },
        );
    }

    /// Attempt `number` of call `id` is no longer wanted: CANCEL it now (`cancel`, it has had
    /// a 1xx) or when a 1xx comes; a late 2xx is ACKed and BYEd.
    fn give_up_attempt(&mut self, now: Instant, id: u64, number: u32, cancel: bool) {
        let forget_at = now + STRAY_MEMORY_T1 * self.cfg.timers.t1;
        let Some((&tx, _)) =
            self.human.attempts.iter().find(|(_, a)| a.call == id && a.number == number)
        else {
            return;
        };
        let Some(a) = self.human.attempts.get_mut(&tx) else { return };
        a.stray = true;
        a.forget_at = Some(forget_at);
        if cancel && !a.cancelled {
            a.cancelled = true;
            let (peer, req) = (a.peer, cancel_for(&a.invite, &self.cfg.user_agent));
            self.tx.send_request(now, peer, req);
        }
    }

    /// A response to an outbound INVITE, REFER or human-leg BYE; true when it was one.
    pub(super) fn human_response(
        &mut self,
        now: Instant,
        tx: ClientTxId,
        pending: Pending,
        resp: &Response,
    ) -> bool {
        match pending {
            Pending::Outbound { call, attempt } => {
                self.on_attempt_response(now, tx, call, attempt, resp)
            }
            Pending::Refer { call } => {
                if resp.is_final() {
                    self.pending.remove(&tx);
                    self.on_refer_response(now, call, resp.status);
                }
            }
            Pending::HumanBye { call } => {
                if resp.is_final() {
                    tracing::debug!(call, status = resp.status, "human leg BYE answered");
                    self.pending.remove(&tx);
                }
            }
            _ => return false,
        }
        true
    }

    fn on_attempt_response(
        &mut self,
        now: Instant,
        tx: ClientTxId,
        call: u64,
        number: u32,
        resp: &Response,
    ) {
        let Some(a) = self.human.attempts.get(&tx) else { return };
        let success = resp.status / 100 == 2;
        if let Some(ack) = a.ack.clone().filter(|_| success) {
            // a retransmitted 2xx: the same ACK again (§13.2.2.4)
            self.tx.send_stateless(a.peer, SipMessage::Request(ack));
            return;
        }
        if a.stray {
            self.stray_response(now, tx, resp);
            return;
        }
        if matches!(resp.status, 401 | 407) && self.answer_challenge(now, tx, resp) {
            return;
        }
        if resp.status >= 300 {
            self.human.attempts.remove(&tx);
            self.pending.remove(&tx);
        }
        let views = self.carrier_views();
        let retry = resp.headers.get("Retry-After").and_then(retry_after);
        let Some(leg) = self.human.legs.get_mut(&call).and_then(|h| h.leg.as_mut()) else { return };
        let reply = Reply { status: resp.status, reason: &resp.reason, retry_after: retry };
        let actions = leg.on_response(now, number, reply, &mut self.human.carriers, &views);
        self.apply_leg(now, call, actions, Some((tx, resp)));
    }

    /// A 401/407 to an attempt's INVITE: re-send it once with digest credentials when its
    /// carrier has `register` credentials (same Call-ID, next CSeq, new branch). True when sent.
    fn answer_challenge(&mut self, now: Instant, tx: ClientTxId, resp: &Response) -> bool {
        let Some(a) = self.human.attempts.get(&tx) else { return false };
        if a.authed {
            return false;
        }
        let Some(creds) = self.cfg.carriers.get(a.carrier).and_then(|c| c.register.as_ref()) else {
            return false;
        };
        let (challenge_header, auth_header) = if resp.status == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let Some(challenge) = resp
            .headers
            .get(challenge_header)
            .and_then(|v| crate::core::sip::digest::Challenge::parse(v).ok())
        else {
            return false;
        };
        let cnonce = random_token(&mut self.rng);
        let Ok(value) = crate::core::sip::digest::authorization(
            &challenge,
            "INVITE",
            &a.invite.uri,
            &creds.user,
            &creds.password,
            &cnonce,
            1,
        ) else {
            return false;
        };
        let Some(mut a) = self.human.attempts.remove(&tx) else { return false };
        self.pending.remove(&tx);
        let seq = a.invite.cseq().map(|c| c.seq).unwrap_or(1).saturating_add(1);
        let via = build::via(
            a.peer.transport,
            self.local_addr(a.peer.transport),
            &new_branch(&mut self.rng),
        );
        a.invite.headers.set("Via", via);
        a.invite.headers.set("CSeq", format!("{seq} INVITE"));
        a.invite.headers.remove(auth_header);
        a.invite.headers.push(auth_header, value);
        a.authed = true;
        tracing::info!(
            call = a.call,
            status = resp.status,
            "human leg: INVITE with digest credentials"
        );
        let new_tx = self.tx.send_request(now, a.peer, a.invite.clone());
        self.pending.insert(new_tx, Pending::Outbound { call: a.call, attempt: a.number });
        self.human.attempts.insert(new_tx, a);
        true
    }

    /// A response to an attempt given up: CANCEL its first 1xx, ACK and BYE a 2xx.
    fn stray_response(&mut self, now: Instant, tx: ClientTxId, resp: &Response) {
        let Some(a) = self.human.attempts.get_mut(&tx) else { return };
        match resp.status {
            100..=199 if !a.cancelled => {
                a.cancelled = true;
                let (peer, req) = (a.peer, cancel_for(&a.invite, &self.cfg.user_agent));
                self.tx.send_request(now, peer, req);
            }
            200..=299 if !a.byed => {
                a.byed = true;
                let (peer, invite, call) = (a.peer, a.invite.clone(), a.call);
                let Ok(mut dialog) = Dialog::new_uac(&invite, resp, peer) else { return };
                let ack = self.ack_for(&dialog, peer);
                self.tx.send_stateless(peer, SipMessage::Request(ack.clone()));
                if let Some(a) = self.human.attempts.get_mut(&tx) {
                    a.ack = Some(ack);
                }
                tracing::info!(call, "late answer on an abandoned attempt: ACK and BYE");
                let bye = self.in_dialog_request(&mut dialog, Method::Bye);
                let bye_tx = self.tx.send_request(now, peer, bye);
                self.pending.insert(bye_tx, Pending::HumanBye { call });
            }
            300..=699 => {
                self.human.attempts.remove(&tx);
                self.pending.remove(&tx);
            }
            _ => {}
        }
    }

    /// The human answered: ACK, dialog, the leg's media; the caller stops hearing ringback.
    fn human_answered(
        &mut self,
        now: Instant,
        id: u64,
        carrier: usize,
        tx: ClientTxId,
        resp: &Response,
    ) {
        let Some(a) = self.human.attempts.get(&tx) else { return };
        let (peer, invite) = (a.peer, a.invite.clone());
        let dialog = match Dialog::new_uac(&invite, resp, peer) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "human leg: unusable 2xx");
                return self.human_failed_after_answer(
                    now,
                    id,
                    tx,
                    None,
                    "unusable 2xx".to_string(),
                );
            }
        };
        let ack = self.ack_for(&dialog, peer);
        self.tx.send_stateless(peer, SipMessage::Request(ack.clone()));
        if let Some(a) = self.human.attempts.get_mut(&tx) {
            a.ack = Some(ack);
        }
        let media = match sdp::accept_answer(&resp.body) {
            Ok(neg) => {
                self.media_session(now, &neg, &dialog.call_id, carrier).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let mut media = match media {
            Ok(m) => m,
            Err(e) => {
                return self.human_failed_after_answer(
                    now,
                    id,
                    tx,
                    Some(dialog),
                    format!("answer SDP: {e}"),
                )
            }
        };
        media.start(now);
        let carrier_name = self.cfg.carriers[carrier].name.clone();
        tracing::info!(call = id, carrier = %carrier_name, "human answered: bridging");
        if let Some(call) = self.calls.get_mut(&id) {
            call.media.stop_prompt();
            call.media.flush_ai_audio();
        }
        self.human_record(id, |r| r.carrier = Some(carrier_name));
        let Some(h) = self.human.legs.get_mut(&id) else { return };
        h.connected = Some(Connected { dialog, media, bye_sent: false });
        self.human.stats.connected += 1;
        self.report_human(now, id, HumanOutcome::Connected);
    }

    /// The 2xx came but the leg cannot be used: BYE it and report the human unavailable.
    fn human_failed_after_answer(
        &mut self,
        now: Instant,
        id: u64,
        tx: ClientTxId,
        dialog: Option<Dialog>,
        cause: String,
    ) {
        if let (Some(mut dialog), Some(a)) = (dialog, self.human.attempts.get(&tx)) {
            let peer = a.peer;
            let bye = self.in_dialog_request(&mut dialog, Method::Bye);
            let bye_tx = self.tx.send_request(now, peer, bye);
            self.pending.insert(bye_tx, Pending::HumanBye { call: id });
        }
        self.human.stats.unavailable += 1;
        self.end_human_leg(now, id);
        self.report_human(now, id, HumanOutcome::Unavailable { cause });
    }

    /// An in-dialog request of ours on the human leg's dialog, with a fresh Via branch.
    fn in_dialog_request(&mut self, dialog: &mut Dialog, method: Method) -> Request {
        let transport = dialog.peer.transport;
        let via = build::via(transport, self.local_addr(transport), &new_branch(&mut self.rng));
        let contact = self.contact_uri(transport);
        dialog.new_request(method, via, &contact, &self.cfg.user_agent)
    }

    /// The ACK of a 2xx (§13.2.2.4), with a fresh Via branch.
    fn ack_for(&mut self, dialog: &Dialog, peer: Peer) -> Request {
        let via =
            build::via(peer.transport, self.local_addr(peer.transport), &new_branch(&mut self.rng));
        dialog.ack(via, &self.cfg.user_agent)
    }

    /// Ends call `id`'s human leg without reporting: a connected leg gets BYE, its port is
    /// closed, unfinished attempts are given up.
    pub(super) fn end_human_leg(&mut self, now: Instant, id: u64) {
        let Some(mut h) = self.human.legs.remove(&id) else { return };
        let actions = h.leg.as_mut().map(OutboundLeg::stop).unwrap_or_default();
        for action in actions {
            match action {
                LegAction::Abandon { attempt } => self.give_up_attempt(now, id, attempt, false),
                LegAction::Cancel { attempt } => self.give_up_attempt(now, id, attempt, true),
                _ => {}
            }
        }
        if let Some(mut c) = h.connected.take() {
            if !c.bye_sent {
                let bye = self.in_dialog_request(&mut c.dialog, Method::Bye);
                let tx = self.tx.send_request(now, c.dialog.peer, bye);
                self.pending.insert(tx, Pending::HumanBye { call: id });
            }
            c.media.close(now, "transfer ended");
            if let Some(port) = h.port {
                self.push_human_media(port, &mut c.media);
            }
        }
        // the answered attempt's ACK is no longer needed
        let forget_at = now + STRAY_MEMORY_T1 * self.cfg.timers.t1;
        for a in self.human.attempts.values_mut().filter(|a| a.call == id) {
            a.stray = true;
            a.forget_at.get_or_insert(forget_at);
        }
        if let Some(port) = h.port {
            self.human.ports.remove(&port);
            self.ports.release(port);
            self.out.push_back(Output::Event(Event::MediaClose { port }));
        }
    }

    /// An outbound client transaction timed out; true when it was one of ours.
    pub(super) fn human_client_timeout(
        &mut self,
        now: Instant,
        tx: ClientTxId,
        pending: Pending,
    ) -> bool {
        match pending {
            Pending::Outbound { call, attempt } => {
                let stray = self.human.attempts.remove(&tx).is_none_or(|a| a.stray);
                if stray {
                    return true;
                }
                let views = self.carrier_views();
                let Some(leg) = self.human.legs.get_mut(&call).and_then(|h| h.leg.as_mut()) else {
                    return true;
                };
                let actions = leg.on_timeout(now, attempt, &mut self.human.carriers, &views);
                self.apply_leg(now, call, actions, None);
            }
            Pending::Refer { call } => self.on_refer_response(now, call, 408),
            Pending::HumanBye { .. } => {}
            _ => return false,
        }
        true
    }

    /// SIP to `peer` cannot be delivered: the outbound attempts towards it fail now.
    pub(super) fn on_unreachable(&mut self, now: Instant, peer: Peer) {
        let hit: Vec<(ClientTxId, u64, u32)> = self
            .human
            .attempts
            .iter()
            .filter(|(_, a)| a.peer == peer && !a.stray)
            .map(|(tx, a)| (*tx, a.call, a.number))
            .collect();
        for (tx, call, number) in hit {
            self.human.attempts.remove(&tx);
            self.pending.remove(&tx);
            self.tx.handle_transport_error(now, tx);
            let views = self.carrier_views();
            let Some(leg) = self.human.legs.get_mut(&call).and_then(|h| h.leg.as_mut()) else {
                continue;
            };
            let actions = leg.on_transport_error(now, number, &mut self.human.carriers, &views);
            self.apply_leg(now, call, actions, None);
        }
    }

    /// The legs' timers (no provisional, ring timeout, ReferWait), their media clocks, and
    /// the ringback that covers a ringing leg.
    pub(super) fn human_timeouts(&mut self, now: Instant) {
        let ids: Vec<u64> = self.human.legs.keys().copied().collect();
        for id in ids {
            let views = self.carrier_views();
            let Some(h) = self.human.legs.get_mut(&id) else { continue };
            if h.leg.as_ref().and_then(OutboundLeg::poll_timeout).is_some_and(|t| t <= now) {
                if let Some(leg) = h.leg.as_mut() {
                    let actions = leg.handle_timeout(now, &mut self.human.carriers, &views);
                    self.apply_leg(now, id, actions, None);
                }
            }
            let Some(h) = self.human.legs.get_mut(&id) else { continue };
            if h.timers.take_expired(now).contains(&Timer::ReferWait) {
                self.refer_timeout(now, id);
            }
            let Some(h) = self.human.legs.get_mut(&id) else { continue };
            if let Some(c) = h.connected.as_mut() {
                if c.media.poll_timeout().is_some_and(|t| t <= now) {
                    c.media.handle_timeout(now);
                }
                self.drain_human(now, id);
            } else {
                self.keep_ringback(id);
            }
        }
        self.human.attempts.retain(|tx, a| {
            let keep = a.forget_at.is_none_or(|t| t > now);
            if !keep {
                self.pending.remove(tx);
            }
            keep
        });
    }

    pub(super) fn human_poll_timeout(&self) -> Option<Instant> {
        self.human
            .legs
            .values()
            .flat_map(|h| {
                [
                    h.leg.as_ref().and_then(OutboundLeg::poll_timeout),
                    h.timers.next_timeout(),
                    h.connected.as_ref().and_then(|c| c.media.poll_timeout()),
                ]
            })
            .flatten()
            .min()
    }

    /// Adds carrier `s`'s outbound breaker and counters to its status.
    pub(super) fn outbound_carrier_status(&self, now: Instant, s: &mut CarrierStatus) {
        let Some(i) = self.cfg.carriers.iter().position(|c| c.name == s.name) else { return };
        let pool = &self.human.carriers;
        s.outbound_breaker = match pool.breaker_state(now, i) {
            Some(BreakerState::Open) => "open",
            Some(BreakerState::HalfOpen) => "half-open",
            _ => "closed",
        };
        s.outbound_hold_ms = pool.hold_remaining(now, i).map(|d| d.as_millis() as u64);
        let stats = pool.stats(i);
        s.outbound_attempts = stats.attempts;
        s.outbound_failures = stats.failures;
        s.outbound_breaker_trips = pool.trips(i);
    }

    pub(super) fn outbound_status(&self) -> OutboundStatus {
        OutboundStatus { active_legs: self.human.legs.len(), ..self.human.stats.clone() }
    }
}

/// The human's URI addressed to a carrier: its user part at `domain` (parameters dropped);
/// a URI without a user part is used as written.
pub(super) fn request_uri(human: &str, domain: &str) -> String {
    let scheme = if human.starts_with("sips:") { "sips" } else { "sip" };
    match user_part(human) {
        Some(user) if !domain.is_empty() => format!("{scheme}:{user}@{domain}"),
        _ => human.to_string(),
    }
}

/// The user part of a `sip:`/`sips:`/`tel:` URI.
pub(super) fn user_part(uri: &str) -> Option<&str> {
    let rest = uri.strip_prefix("sips:").or_else(|| uri.strip_prefix("sip:"))?;
    let (user, _) = rest.split_once('@')?;
    let user = user.split(';').next().unwrap_or(user);
    let user = user.split(':').next().unwrap_or(user);
    (!user.is_empty()).then_some(user)
}

/// The CANCEL of an INVITE we sent (§9.1): its Request-URI, top Via, Route, From, To, Call-ID
/// and CSeq number.
fn cancel_for(invite: &Request, user_agent: &str) -> Request {
    let mut cancel = Request::new(Method::Cancel, invite.uri.clone());
    if let Some(via) = invite.headers.get("Via") {
        cancel.headers.push("Via", via.to_string());
    }
    cancel.headers.push("Max-Forwards", "70");
    for route in invite.headers.get_all("Route") {
        cancel.headers.push("Route", route.to_string());
    }
    for name in ["From", "To", "Call-ID"] {
        if let Some(v) = invite.headers.get(name) {
            cancel.headers.push(name, v.to_string());
        }
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    cancel.headers.push("CSeq", format!("{seq} CANCEL"));
    cancel.headers.push("User-Agent", user_agent.to_string());
    cancel
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_uri_is_addressed_to_the_carrier() {
        assert_eq!(
            request_uri("sip:+15551234@pbx.example.com;user=phone", "trunk-b.example:5060"),
            "sip:+15551234@trunk-b.example:5060"
        );
        assert_eq!(request_uri("sips:desk@pbx", "t"), "sips:desk@t");
        assert_eq!(request_uri("sip:pbx.example.com", "t"), "sip:pbx.example.com");
        assert_eq!(user_part("sip:alice:pw@h"), Some("alice"));
        assert_eq!(user_part("tel:+1555"), None);
    }
}
