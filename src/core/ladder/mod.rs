//! The degradation ladder below the AI agents, for one call, as a pure policy (no SIP, no RTP):
//! the high-demand prompt, the DTMF menu ("press 1 to be called back, press 2 for a person"),
//! the human rung, and the way out (a callback request or goodbye, then BYE).
//!
//! [`Ladder`] takes inputs (a prompt finished, a key, a timeout, the human rung's outcome, the
//! caller hung up) with an explicit `now` and answers with [`LadderAction`]s the endpoint
//! carries out (play a prompt, start or stop the human leg, request a callback, hang up, note
//! the rung reached). Its only timers are [`Timer::MenuTimeout`] (the caller's turn after the
//! menu) and [`Timer::HumanRing`] (a guard in case the human leg never reports back).
//!
//! Silence rule: every step between rungs starts the next prompt in the same call, so the
//! caller never waits in silence between rungs; the wait for a key after the menu is the
//! caller's turn (docs/fallback.md). While the human rings, the outbound side plays ringback
//! after the hold prompt.

pub mod prompts;

use std::time::{Duration, Instant};

use crate::core::callback::CallbackReason;
use crate::core::timer::{Timer, TimerTable};

pub use prompts::{LadderPrompts, PromptId};

/// Beyond `[fallback] human_timeout_s`, how long the ladder waits for the human leg to report
/// before it gives up on it itself (the outbound side times the ringing; this is a guard).
pub const HUMAN_GUARD: Duration = Duration::from_secs(10);

/// What the caller gets when the menu gets no usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// A callback request ([`CallbackReason::MenuNoAnswer`]), the apology, BYE.
    Callback,
    /// Goodbye, BYE.
    Goodbye,
}

/// The ladder's settings (from `[fallback]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LadderConfig {
    /// Offer the DTMF menu after the high-demand prompt.
    pub menu: bool,
    /// The caller's turn after each menu prompt.
    pub menu_timeout: Duration,
    /// Menu plays before `no_answer` applies (at least 1).
    pub menu_attempts: u32,
    pub no_answer: NoAnswer,
    /// A human is configured: key 2 is offered.
    pub human: bool,
    /// How long the human leg may ring (the outbound side reports `NoAnswer` after it).
    pub human_timeout: Duration,
}

impl Default for LadderConfig {
    fn default() -> Self {
        LadderConfig {
            menu: true,
            menu_timeout: Duration::from_secs(8),
            menu_attempts: 2,
            no_answer: NoAnswer::Callback,
            human: false,
            human_timeout: Duration::from_secs(25),
        }
    }
}

/// How the human rung ended for a call (reported by the outbound side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HumanOutcome {
    /// The human answered; caller and human are connected (bridged, or referred away).
    Connected,
    /// The human leg rang for `[fallback] human_timeout_s` without an answer.
    NoAnswer,
    /// No carrier could place the call (every one refused, failed or is out of service);
    /// `cause` says what was seen last (e.g. "486 Busy Here", "carrier-b: 503").
    Unavailable { cause: String },
    /// A connected human hung up (the caller's leg is to be ended).
    Ended,
}

/// A rung of the ladder a call reached; the call record keeps the trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rung {
    /// The high-demand prompt (the canned fallback).
    Prompt,
    /// The DTMF menu.
    Menu,
    /// The transfer to a person (hold prompt, the human leg ringing).
    Human,
    /// The person answered.
    Connected,
    /// A callback request was made; apology or confirmation, then BYE.
    Callback,
    /// Goodbye without a callback request, then BYE.
    Goodbye,
}

impl Rung {
    /// The stable name used in call records.
    pub fn as_str(self) -> &'static str {
        match self {
            Rung::Prompt => "prompt",
            Rung::Menu => "menu",
            Rung::Human => "human",
            Rung::Connected => "human-connected",
            Rung::Callback => "callback",
            Rung::Goodbye => "goodbye",
        }
    }
}

/// What the endpoint is to do for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LadderAction {
    /// Play this prompt now, replacing whatever plays.
    Play(PromptId),
    /// Stop the prompt (the human answered: their audio takes over).
    StopPrompt,
    /// Start the human leg; if it cannot start, report [`HumanOutcome::Unavailable`].
    StartHuman,
    /// Tear the human leg down (the caller left, or the ladder gave up on it).
    StopHuman,
    /// Record and deliver a callback request; `detail` adds what failed on the human rung.
    Callback { reason: CallbackReason, detail: Option<String> },
    /// The last prompt has played: hang up.
    HangUp,
    /// The call reached this rung (for the call record).
    Reached(Rung),
}

/// Where the ladder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The high-demand prompt plays.
    Intro,
    /// The menu prompt plays (its `attempt`-th play, from 1).
    Menu { attempt: u32 },
    /// The menu was played: the caller's turn, until the menu timeout.
    WaitKey { attempt: u32 },
    /// "Not a valid choice" plays after the `attempt`-th menu (0: during the intro).
    Invalid { attempt: u32 },
    /// The hold prompt, then ringback from the outbound side: the human leg rings.
    Human,
    /// The human answered.
    Connected,
    /// The final prompt (confirmation, apology or goodbye) plays, then BYE.
    Closing,
    /// Hang-up asked for, or the caller is gone: nothing more happens.
    Done,
}

/// The ladder of one call.
#[derive(Debug, Clone)]
pub struct Ladder {
    cfg: LadderConfig,
    stage: Stage,
    timers: TimerTable,
    trail: Vec<Rung>,
    callback: Option<CallbackReason>,
}

impl Ladder {
    /// The call falls to the ladder at `now`: the high-demand prompt starts.
    pub fn start(_now: Instant, cfg: LadderConfig) -> (Ladder, Vec<LadderAction>) {
        let mut ladder = Ladder {
            cfg,
            stage: Stage::Intro,
            timers: TimerTable::default(),
            trail: Vec::new(),
            callback: None,
        };
        let mut out = Vec::new();
        ladder.reach(Rung::Prompt, &mut out);
        out.push(LadderAction::Play(PromptId::HighDemand));
        (ladder, out)
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The rungs reached, in order.
    pub fn trail(&self) -> &[Rung] {
        &self.trail
    }

    /// The callback request made, if any.
    pub fn callback(&self) -> Option<CallbackReason> {
        self.callback
    }

    /// True while the ladder has the caller (not after the human answered, not once done).
    pub fn is_active(&self) -> bool {
        !matches!(self.stage, Stage::Connected | Stage::Done)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// The prompt the ladder asked for has been played completely.
    pub fn prompt_finished(&mut self, now: Instant) -> Vec<LadderAction> {
        let mut out = Vec::new();
        match self.stage {
            Stage::Intro if self.cfg.menu => self.menu(1, &mut out),
            Stage::Intro => self.no_answer(&mut out),
            Stage::Menu { attempt } => {
                self.stage = Stage::WaitKey { attempt };
                self.timers.set(Timer::MenuTimeout, now + self.cfg.menu_timeout);
            }
            Stage::Invalid { attempt } => self.next_menu(attempt, &mut out),
            Stage::Closing => {
                self.stage = Stage::Done;
                out.push(LadderAction::HangUp);
            }
            // the hold prompt ended: the outbound side's ringback covers the rest
            Stage::Human | Stage::WaitKey { .. } | Stage::Connected | Stage::Done => {}
        }
        out
    }

    /// The caller pressed `digit` (RFC 4733). Keys count from the high-demand prompt on
    /// (barge-in) when the menu is enabled.
    pub fn digit(&mut self, now: Instant, digit: char) -> Vec<LadderAction> {
        let mut out = Vec::new();
        let attempt = match self.stage {
            Stage::Intro if self.cfg.menu => 0,
            Stage::Menu { attempt } | Stage::WaitKey { attempt } | Stage::Invalid { attempt } => {
                attempt
            }
            _ => return out,
        };
        self.timers.stop(Timer::MenuTimeout);
        match digit {
            '1' => self.close_with_callback(
                CallbackReason::CallerAsked,
                None,
                PromptId::CallbackConfirm,
                &mut out,
            ),
            '2' if self.cfg.human => {
                self.stage = Stage::Human;
                self.reach(Rung::Human, &mut out);
                out.push(LadderAction::Play(PromptId::TransferHold));
                out.push(LadderAction::StartHuman);
                self.timers.set(Timer::HumanRing, now + self.cfg.human_timeout + HUMAN_GUARD);
            }
            _ => {
                self.stage = Stage::Invalid { attempt };
                out.push(LadderAction::Play(PromptId::MenuInvalid));
            }
        }
        out
    }

    /// The human rung reports back.
    pub fn human(&mut self, _now: Instant, outcome: HumanOutcome) -> Vec<LadderAction> {
        let mut out = Vec::new();
        match (self.stage, outcome) {
            (Stage::Human, HumanOutcome::Connected) => {
                self.timers.stop(Timer::HumanRing);
                self.stage = Stage::Connected;
                out.push(LadderAction::StopPrompt);
                self.reach(Rung::Connected, &mut out);
            }
            (Stage::Human, HumanOutcome::NoAnswer) => {
                self.timers.stop(Timer::HumanRing);
                let detail =
                    format!("human: no answer within {} s", self.cfg.human_timeout.as_secs());
                self.close_with_callback(
                    CallbackReason::HumanNoAnswer,
                    Some(detail),
                    PromptId::SorryCallback,
                    &mut out,
                );
            }
            (Stage::Human, HumanOutcome::Unavailable { cause }) => {
                self.timers.stop(Timer::HumanRing);
                let detail = format!("human: {cause}");
                self.close_with_callback(
                    CallbackReason::HumanUnavailable,
                    Some(detail),
                    PromptId::SorryCallback,
                    &mut out,
                );
            }
            (Stage::Human | Stage::Connected, HumanOutcome::Ended) => {
                self.timers.stop(Timer::HumanRing);
                self.stage = Stage::Done;
                out.push(LadderAction::HangUp);
            }
            _ => {} // late or out of place: the ladder has moved on
        }
        out
    }

    /// Runs the ladder's timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<LadderAction> {
        let mut out = Vec::new();
        for timer in self.timers.take_expired(now) {
            match (timer, self.stage) {
                (Timer::MenuTimeout, Stage::WaitKey { attempt }) => {
                    self.next_menu(attempt, &mut out)
                }
                (Timer::HumanRing, Stage::Human) => {
                    out.push(LadderAction::StopHuman);
                    let detail = "human: the leg never reported back".to_string();
                    self.close_with_callback(
                        CallbackReason::HumanNoAnswer,
                        Some(detail),
                        PromptId::SorryCallback,
                        &mut out,
                    );
                }
                _ => {}
            }
        }
        out
    }

    /// The call is ending (the caller hung up, or we hang up for another reason): the human
    /// leg, if any, is torn down; nothing else happens. The trail says where it ended.
    pub fn caller_gone(&mut self, _now: Instant) -> Vec<LadderAction> {
        let human = matches!(self.stage, Stage::Human | Stage::Connected);
        self.stage = Stage::Done;
        self.timers.stop_all();
        if human {
            vec![LadderAction::StopHuman]
        } else {
            Vec::new()
        }
    }

    fn menu(&mut self, attempt: u32, out: &mut Vec<LadderAction>) {
        self.stage = Stage::Menu { attempt };
        self.reach(Rung::Menu, out);
        let prompt = if self.cfg.human { PromptId::Menu } else { PromptId::MenuNoHuman };
        out.push(LadderAction::Play(prompt));
    }

    /// After the `attempt`-th menu went unanswered (or got a wrong key): again, or `no_answer`.
    fn next_menu(&mut self, attempt: u32, out: &mut Vec<LadderAction>) {
        if attempt < self.cfg.menu_attempts.max(1) {
            self.menu(attempt + 1, out);
        } else {
            self.no_answer(out);
        }
    }

    fn no_answer(&mut self, out: &mut Vec<LadderAction>) {
        match self.cfg.no_answer {
            NoAnswer::Callback => self.close_with_callback(
                CallbackReason::MenuNoAnswer,
                None,
                PromptId::SorryCallback,
                out,
            ),
            NoAnswer::Goodbye => {
                self.stage = Stage::Closing;
                self.reach(Rung::Goodbye, out);
                out.push(LadderAction::Play(PromptId::Goodbye));
            }
        }
    }

    fn close_with_callback(
        &mut self,
        reason: CallbackReason,
        detail: Option<String>,
        prompt: PromptId,
        out: &mut Vec<LadderAction>,
    ) {
        self.stage = Stage::Closing;
        self.timers.stop_all();
        self.callback = Some(reason);
        out.push(LadderAction::Callback { reason, detail });
        self.reach(Rung::Callback, out);
        out.push(LadderAction::Play(prompt));
    }

    /// Notes `rung` once (a replayed menu is the same rung).
    fn reach(&mut self, rung: Rung, out: &mut Vec<LadderAction>) {
        if self.trail.last() != Some(&rung) {
            self.trail.push(rung);
            out.push(LadderAction::Reached(rung));
        }
    }
}

#[cfg(test)]
mod tests;
