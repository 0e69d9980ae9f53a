//! trunkguard: an on-prem SIP/RTP appliance between phone carriers and cloud AI voice agents.
//!
//! - [`core`]: sans-IO protocol and policy state machines, driven with an explicit `now`.
//! - [`io`]: the thin tokio shell that owns sockets, tasks and the one clock read.
//! - [`config`]: the TOML configuration, validated at start.
//! - [`update`]: `trunkguard-update`, A/B updates that roll back by themselves (its policy,
//!   sans-IO, in `update::policy`).
//!
//! The tools live outside the appliance binary: `trunkguard-bench` (src/bin/trunkguard-bench/)
//! and `trunkguard-agent-sim` (tools/agent-sim/, a crate of its own).

pub mod config;
pub mod core;
pub mod io;
pub mod update;
