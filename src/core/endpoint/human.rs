//! The human rung of the ladder: hands call `id` to `[fallback] human`, by SIP REFER on the
//! caller's dialog where the carrier allows it, else by a bridged outbound INVITE through the
//! healthiest carrier (with failover by SIP cause). Reports the outcome to the ladder through
//! [`Endpoint::on_human_outcome`].
//!
//! CONTRACT STUB (integration seam): the outbound leg is being built on its own branch.

use std::time::Instant;

use super::Endpoint;

#[allow(dead_code)] // contract stub until the branches land

impl Endpoint {
    /// Starts the transfer of call `id` to the human. Returns `false` when no human can be tried
    /// (none configured, no carrier can place the call); the ladder then goes down a rung.
    pub(super) fn start_human(&mut self, _now: Instant, _id: u64) -> bool {
        false
    }

    /// The caller's side of call `id` is ending: tear down any human leg it has (CANCEL/BYE).
    pub(super) fn stop_human(&mut self, _now: Instant, _id: u64) {}
}
