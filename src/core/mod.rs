//! The sans-IO core: protocol and policy as plain state machines. Every entry point takes the
//! current time as `now: Instant`; outputs are messages to send, events, and the next deadline.
//! Nothing here opens a socket, spawns a task, sleeps or reads the clock.

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
pub mod update;
