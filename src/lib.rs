//! trunkguard: an on-prem SIP/RTP appliance between phone carriers and cloud AI voice agents.
//!
//! - [`bench`]: `trunkguard bench`: media pipeline capacity, memory and latency (reads the clock).
//! - [`core`]: sans-IO protocol and policy state machines, driven with an explicit `now`.
//! - [`io`]: the thin tokio shell that owns sockets, tasks and the one clock read.
//! - [`config`]: the TOML configuration, validated at start.
//! - [`sim`]: the agent simulator (a fake cloud voice agent for tests and drills).
//! - [`update`]: `trunkguard-update`, A/B updates that roll back by themselves.

pub mod bench;
pub mod config;
pub mod core;
pub mod io;
pub mod sim;
pub mod update;
