//! The sans-IO core: protocol and policy as plain state machines. Every entry point takes the
//! current time as `now: Instant`; outputs are messages to send, events, and the next deadline.
//! Nothing here opens a socket, spawns a task, sleeps or reads the clock: clippy.toml lists
//! what that means, and the attribute below turns any use of it here into a build failure
//! under `cargo clippy` (CI runs it). Tests may take their fake clock's origin from
//! `Instant::now()`.
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod ai;
pub mod callback;
pub mod carrier;
pub mod conn_table;
pub mod endpoint;
pub mod ladder;
pub mod limits;
pub mod media;
pub mod metrics;
pub mod outbound;
pub mod sdp;
pub mod sip;
pub mod timer;
