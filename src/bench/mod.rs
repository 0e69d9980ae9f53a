//! Benchmarks that ship in the binary (`trunkguard bench ...`). Not core: this module reads
//! the clock (wall and thread CPU time) and sleeps.
//!
//! - [`alloc`]: a counting global allocator (live heap bytes), installed by `main.rs`.
//! - [`cpu`]: CPU time of the calling thread.
//! - [`media`]: `bench media`: the per-call media pipeline's capacity, memory and latency.

pub mod alloc;
pub mod cpu;
pub mod media;
