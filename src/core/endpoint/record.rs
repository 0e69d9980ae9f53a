//! Call records: what the appliance keeps about each answered call (who called whom through
//! which carrier, which agent took it, failovers, fallback, how it ended and how it sounded).
//!
//! The endpoint emits one [`Event::CallRecord`] per step of an answered call: when it is
//! answered (queued before the 200 OK, so the I/O shell sees the record first), at each rung
//! of the degradation ladder (agent live, mid-call failover, fallback to the canned prompt),
//! and when it ends. Each record carries the whole picture so far; the I/O shell upserts it
//! and stamps wall-clock times (the core has no wall clock). Unanswered calls get no record.

use std::time::Instant;

use super::{Endpoint, Event, Output};
use crate::core::callback::CallbackReason;
use crate::core::ladder::Rung;

/// The record's step for reaching a ladder rung.
pub fn phase_of(rung: Rung) -> RecordPhase {
    match rung {
        Rung::Prompt => RecordPhase::Fallback,
        Rung::Menu => RecordPhase::Menu,
        Rung::Human => RecordPhase::Human,
        Rung::Connected => RecordPhase::HumanConnected,
        Rung::Callback => RecordPhase::Callback,
        Rung::Goodbye => RecordPhase::Goodbye,
    }
}

/// Which step of the call this record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordPhase {
    /// The call is being answered (the record precedes the 200 OK).
    Answered,
    /// An agent went live again after a mid-call failover.
    AgentLive,
    /// The live agent was lost mid-call; the filler plays while another is sought.
    Failover,
    /// No agent: the canned prompt took an answered call.
    Fallback,
    /// The ladder's DTMF menu.
    Menu,
    /// The ladder hands the caller to a person (the human leg rings).
    Human,
    /// The person answered.
    HumanConnected,
    /// A callback request was made (see [`CallRecord::callback`]).
    Callback,
    /// The ladder said goodbye without a callback request.
    Goodbye,
    /// The call is over.
    Ended,
}

impl RecordPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordPhase::Answered => "answered",
            RecordPhase::AgentLive => "agent-live",
            RecordPhase::Failover => "failover",
            RecordPhase::Fallback => "fallback",
            RecordPhase::Menu => "menu",
            RecordPhase::Human => "human",
            RecordPhase::HumanConnected => "human-connected",
            RecordPhase::Callback => "callback",
            RecordPhase::Goodbye => "goodbye",
            RecordPhase::Ended => "ended",
        }
    }
}

/// Voice quality of the call over its whole length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallQuality {
    /// E-model MOS estimate, 1 to 4.5, of the worse direction; `None` for a call without
    /// media.
    pub mos: Option<f64>,
    /// Loss heard by the listener, percent.
    pub loss_percent: f64,
    /// RFC 3550 interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Audio concealed (PLC or silence), ms.
    pub concealed_ms: u64,
}

/// How the call ended.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEnd {
    /// From the answer to the end.
    pub duration_ms: u64,
    pub reason: &'static str,
    pub quality: CallQuality,
}

/// One call's record as of `phase`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// The SIP Call-ID.
    pub call_id: String,
    pub carrier: String,
    /// The caller's URI (From) and the called URI (To).
    pub caller: String,
    pub called: String,
    pub phase: RecordPhase,
    /// Name of the agent endpoint last live on the call.
    pub ai_endpoint: Option<String>,
    /// Mid-call failovers so far.
    pub failovers: u32,
    /// Why the canned prompt took the call, if it did.
    pub fallback_reason: Option<String>,
    /// The ladder's rungs the call reached, in order (empty: an agent had it throughout). The
    /// last one says where a caller who hung up left.
    pub ladder: Vec<Rung>,
    /// The callback request made for the call, if any.
    pub callback: Option<CallbackReason>,
    /// Set on [`RecordPhase::Ended`].
    pub end: Option<CallEnd>,
    /// The transfer to the human, if the ladder tried one.
    pub human: Option<HumanRecord>,
}

/// What the human rung did for a call: how it transferred, through which carrier, what failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HumanRecord {
    /// A REFER was sent to the caller's carrier (before any bridged INVITE).
    pub refer: bool,
    /// The carrier the human was reached through (bridged INVITE).
    pub carrier: Option<String>,
    /// Each outbound attempt that failed, in order: "carrier-a: 503 Service Unavailable".
    pub failed_attempts: Vec<String>,
    /// Failed attempts that moved the call to another carrier.
    pub failovers: u32,
    /// `connected`, `no-answer`, `unavailable` or `ended` (the human hung up), once known.
    pub outcome: Option<&'static str>,
}

// The floats are finite statistics (never NaN), so equality is reflexive.
impl Eq for CallRecord {}

/// What a call accumulates for its record.
#[derive(Debug, Clone, Default)]
pub struct RecordState {
    /// When the call was answered; no records before.
    pub answered_at: Option<Instant>,
    pub ai_endpoint: Option<String>,
    pub failovers: u32,
    pub fallback_reason: Option<String>,
    pub human: Option<HumanRecord>,
    pub ladder: Vec<Rung>,
    pub callback: Option<CallbackReason>,
}

impl Endpoint {
    /// Queues the record of call `id` as of `phase` (nothing for a call never answered).
    pub(super) fn record(&mut self, id: u64, phase: RecordPhase, end: Option<CallEnd>) {
        let Some(call) = self.calls.get(&id) else { return };
        if call.record.answered_at.is_none() {
            return;
        }
        let record = CallRecord {
            call_id: call.dialog.call_id.clone(),
            carrier: self
                .cfg
                .carriers
                .get(call.carrier)
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            caller: call.dialog.remote_uri.uri.clone(),
            called: call.dialog.local_uri.uri.clone(),
            phase,
            ai_endpoint: call.record.ai_endpoint.clone(),
            failovers: call.record.failovers,
            fallback_reason: call.record.fallback_reason.clone(),
            ladder: call.record.ladder.clone(),
            callback: call.record.callback,
            end,
            human: call.record.human.clone(),
        };
        self.out.push_back(Output::Event(Event::CallRecord(record)));
    }

    /// The end of call `id` at `now`: duration since the answer and the media's quality.
    pub(super) fn call_end(&self, now: Instant, id: u64, reason: &'static str) -> Option<CallEnd> {
        let call = self.calls.get(&id)?;
        let answered = call.record.answered_at?;
        let stats = call.media.stats();
        Some(CallEnd {
            duration_ms: now.saturating_duration_since(answered).as_millis() as u64,
            reason,
            quality: CallQuality {
                mos: stats.mos.map(finite),
                loss_percent: finite(stats.loss_percent),
                jitter_ms: finite(stats.jitter_ms),
                concealed_ms: stats.concealed_ms,
            },
        })
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}
