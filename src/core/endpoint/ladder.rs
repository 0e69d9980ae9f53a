//! The degradation ladder as the endpoint drives it for one call: after the canned prompt, the
//! DTMF menu, the human rung and the callback request, each covered by a prompt so the caller
//! never hears more than 1 s of silence. The policy is [`crate::core::ladder::Ladder`]; this
//! module feeds it the call's prompt ends, digits, timers and the human rung's outcome, and
//! carries out what it asks (play, start/stop the human leg, callback request, hang up, record).

use std::time::Instant;

use super::record::phase_of;
use super::{Endpoint, Event, Output, Timer};
use crate::core::callback::{CallbackReason, CallbackRequest};
use crate::core::ladder::{Ladder, LadderAction};
use crate::core::sip::headers::SipUri;

pub use crate::core::ladder::HumanOutcome;

/// The call record's fallback reason for calls on a box without agents.
const NO_AGENT_CONFIGURED: &str = "no AI agent configured";

impl Endpoint {
    /// Call `id` falls to the ladder at `now`: the high-demand prompt starts (media must run).
    pub(super) fn start_ladder(&mut self, now: Instant, id: u64) {
        let cfg = self.cfg.ladder;
        let no_ai = self.ai.is_none();
        let Some(call) = self.calls.get_mut(&id) else { return };
        if call.ladder.is_some() {
            return;
        }
        if no_ai && call.record.fallback_reason.is_none() {
            call.record.fallback_reason = Some(NO_AGENT_CONFIGURED.to_string());
        }
        call.media.flush_ai_audio();
        let (ladder, actions) = Ladder::start(now, cfg);
        call.ladder = Some(ladder);
        self.apply_ladder(now, id, actions);
    }

    /// Feeds the ladder of call `id` (if it runs) and carries out what it answers.
    pub(super) fn feed_ladder(
        &mut self,
        now: Instant,
        id: u64,
        input: impl FnOnce(&mut Ladder) -> Vec<LadderAction>,
    ) {
        let Some(ladder) = self.calls.get_mut(&id).and_then(|c| c.ladder.as_mut()) else { return };
        let actions = input(ladder);
        self.apply_ladder(now, id, actions);
    }

    /// The human rung reports back for call `id`.
    pub(super) fn on_human_outcome(&mut self, now: Instant, id: u64, outcome: HumanOutcome) {
        self.feed_ladder(now, id, |l| l.human(now, outcome));
    }

    /// The ladder's timers of call `id` due at `now`.
    pub(super) fn ladder_timeouts(&mut self, now: Instant, id: u64) {
        let due = self.calls.get(&id).and_then(|c| c.ladder_timeout()).is_some_and(|t| t <= now);
        if due {
            self.feed_ladder(now, id, |l| l.handle_timeout(now));
        }
    }

    /// Call `id` is ending: the ladder stops (and tears the human leg down, if any).
    pub(super) fn ladder_call_gone(&mut self, now: Instant, id: u64) {
        self.feed_ladder(now, id, |l| l.caller_gone(now));
    }

    fn apply_ladder(&mut self, now: Instant, id: u64, actions: Vec<LadderAction>) {
        for action in actions {
            match action {
                LadderAction::Play(prompt) => {
                    let prompt = self.cfg.prompts.get(prompt).clone();
                    if let Some(call) = self.calls.get_mut(&id) {
                        call.media.play_prompt(prompt);
                    }
                }
                LadderAction::StopPrompt => {
                    if let Some(call) = self.calls.get_mut(&id) {
                        call.media.stop_prompt();
                    }
                }
                LadderAction::StartHuman => {
                    if !self.start_human(now, id) {
                        let cause = "no carrier could place the call to the human".to_string();
                        self.on_human_outcome(now, id, HumanOutcome::Unavailable { cause });
                    }
                }
                LadderAction::StopHuman => self.stop_human(now, id),
                LadderAction::Callback { reason, detail } => {
                    self.request_callback(id, reason, detail)
                }
                LadderAction::HangUp => {
                    let at = now + self.cfg.hangup_after_prompt;
                    if let Some(call) = self.calls.get_mut(&id) {
                        call.timers.set(Timer::Hangup, at);
                    }
                }
                LadderAction::Reached(rung) => {
                    let Some(call) = self.calls.get_mut(&id) else { continue };
                    tracing::info!(call_id = %call.dialog.call_id, rung = rung.as_str(), "ladder");
                    call.record.ladder.push(rung);
                    self.record(id, phase_of(rung), None);
                }
            }
        }
    }

    /// Emits the callback request of call `id` and notes it for the call record.
    fn request_callback(&mut self, id: u64, reason: CallbackReason, detail: Option<String>) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.record.callback = Some(reason);
        let base =
            call.record.fallback_reason.clone().unwrap_or_else(|| NO_AGENT_CONFIGURED.to_string());
        let failure = match detail {
            Some(d) => format!("{base}; {d}"),
            None => base,
        };
        let called = user_part(&call.dialog.local_uri.uri).or_else(|| user_part(&call.invite.uri));
        let request = CallbackRequest {
            call_id: call.dialog.call_id.clone(),
            caller: user_part(&call.dialog.remote_uri.uri)
                .unwrap_or_else(|| call.dialog.remote_uri.uri.clone()),
            called: called.unwrap_or_else(|| call.dialog.local_uri.uri.clone()),
            carrier: self
                .cfg
                .carriers
                .get(call.carrier)
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            reason,
            failure,
        };
        tracing::info!(call_id = %request.call_id, caller = %request.caller, reason = reason.as_str(), "callback requested");
        self.out.push_back(Output::Event(Event::CallbackRequested(request)));
    }
}

/// The user part of a SIP URI (the number, usually), if it has one.
fn user_part(uri: &str) -> Option<String> {
    SipUri::parse(uri).ok().and_then(|u| u.user).filter(|u| !u.is_empty())
}
