//! The degradation ladder as the endpoint drives it for one call: after the canned prompt, the
//! DTMF menu, the human rung and the callback request, each covered by a prompt so the caller
//! never hears more than 1 s of silence.
//!
//! CONTRACT STUB (integration seam): the ladder policy is being built on its own branch.

use std::time::Instant;

use super::Endpoint;

/// How the human rung ended for a call.
#[allow(dead_code)] // contract stub until the branches land
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

#[allow(dead_code)] // contract stub until the branches land
impl Endpoint {
    /// The human rung reports back for call `id`.
    pub(super) fn on_human_outcome(&mut self, _now: Instant, _id: u64, _outcome: HumanOutcome) {}
}
