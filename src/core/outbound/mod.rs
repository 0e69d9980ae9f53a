//! Outbound calls, sans-IO: the pieces that decide where an outbound INVITE goes and what a
//! failure means, independent of SIP message building (the endpoint does that).
//!
//! - [`policy`]: a failed attempt (final response, transport error, no provisional in time) is
//!   either re-routed to the next carrier or final; `Retry-After` on a 503 holds a carrier.
//! - [`carriers`]: which carrier is tried next (preferred healthy first), with a per-carrier
//!   outbound circuit breaker and Retry-After holds.
//! - [`leg`]: one outbound call leg's state machine across carriers: trying, ringing,
//!   answered, cancelled, failed; its no-provisional and ring timers.
//! - [`ringback`]: the ringback tone the caller hears while the leg rings.

pub mod carriers;
pub mod leg;
pub mod policy;
pub mod ringback;

pub use carriers::{CarrierView, OutboundCarrierStats, OutboundCarriers};
pub use leg::{LegAction, LegConfig, LegState, OutboundLeg, Reply};
pub use policy::{decide, retry_after, AttemptFailure, Decision};
