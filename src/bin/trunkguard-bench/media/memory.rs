//! Heap bytes per live call: `n` calls are created and run for two simulated seconds (so
//! their buffers have grown to their working size), then the live-bytes counter of the
//! counting allocator ([`crate::alloc`]) is read again. The difference, divided by
//! `n`, is the Rust heap of one call (the session, its buffers and its entry in the call
//! list). libopus allocates its encoder and decoder with C `malloc`, which the counter does not
//! see: their sizes come from `opus_encoder_get_size` / `opus_decoder_get_size` and are
//! added. Where glibc's `mallinfo2` is available, the total malloc'd bytes are diffed too, as
//! a cross-check that includes everything.

use std::time::Instant;

use crate::alloc;
use trunkguard::core::media::session::FRAME;

use super::calls::Calls;
use super::signal::CallerSignal;
use super::{BenchCodec, BenchError};

/// Simulated steps run before the second reading (2 s).
const SETTLE_STEPS: u32 = 100;

/// What the memory run measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Calls created.
    pub calls: usize,
    /// Rust heap per call (counting allocator); `None` when it is not the global allocator.
    pub rust_bytes: Option<u64>,
    /// libopus state per call (C heap).
    pub codec_state_bytes: u64,
    /// All malloc'd bytes per call (glibc `mallinfo2`), when available.
    pub malloc_bytes: Option<u64>,
}

impl Memory {
    /// Heap bytes per live call: Rust heap plus libopus state.
    pub fn bytes_per_call(&self) -> Option<u64> {
        self.rust_bytes.map(|b| b + self.codec_state_bytes)
    }
}

/// Creates `n` calls, runs them, and reads how much more heap is live.
pub fn measure(codec: BenchCodec, signal: &CallerSignal, n: usize) -> Result<Memory, BenchError> {
    let n = n.max(1);
    let counting = alloc::enable();
    let rust_before = alloc::live_bytes();
    let malloc_before = malloc_in_use();
    let t0 = Instant::now();
    let mut calls = Calls::new(codec, signal, n, t0)?;
    for k in 0..SETTLE_STEPS {
        calls.step_all(t0 + FRAME * k);
    }
    let rust_after = alloc::live_bytes();
    let malloc_after = malloc_in_use();
    drop(calls);
    alloc::disable();
    let per_call =
        |before: isize, after: isize| (after.saturating_sub(before).max(0) as u64) / n as u64;
    Ok(Memory {
        calls: n,
        rust_bytes: counting.then(|| per_call(rust_before, rust_after)),
        codec_state_bytes: codec_state_bytes(codec),
        malloc_bytes: match (malloc_before, malloc_after) {
            (Some(b), Some(a)) => Some(per_call(b, a)),
            _ => None,
        },
    })
}

/// libopus encoder + decoder state of one mono call (0 for G.711).
fn codec_state_bytes(codec: BenchCodec) -> u64 {
    match codec {
        BenchCodec::Pcmu => 0,
        BenchCodec::Opus => {
            // SAFETY: pure size queries on a valid channel count; no state is touched.
            let (enc, dec) = unsafe {
                (audiopus::ffi::opus_encoder_get_size(1), audiopus::ffi::opus_decoder_get_size(1))
            };
            u64::try_from(enc.max(0)).unwrap_or(0) + u64::try_from(dec.max(0)).unwrap_or(0)
        }
    }
}

/// Bytes malloc'd and not freed, all arenas (glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_in_use() -> Option<isize> {
    // SAFETY: mallinfo2 only reads allocator statistics.
    let info = unsafe { libc::mallinfo2() };
    isize::try_from(info.uordblks.saturating_add(info.hblkhd)).ok()
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_in_use() -> Option<isize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_calls_carry_libopus_state_and_g711_calls_do_not() {
        assert_eq!(codec_state_bytes(BenchCodec::Pcmu), 0);
        let opus = codec_state_bytes(BenchCodec::Opus);
        assert!((10_000..200_000).contains(&opus), "{opus}");
    }

    #[test]
    fn malloc_statistics_see_a_large_allocation() {
        // process-wide figures: other tests allocate and free concurrently, so use a block far
        // larger than anything they hold and compare with a wide margin
        let Some(before) = malloc_in_use() else { return };
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = malloc_in_use().unwrap_or(0);
        assert!(after.saturating_sub(before) >= 32 << 20, "{before} -> {after}");
        drop(block);
    }
}
