//! The pipeline's capacity on a simulated clock: every call steps once per simulated 20 ms
//! (see [`Calls::step`]), as fast as the core allows; capacity is simulated call-seconds per
//! CPU second.

use std::time::{Duration, Instant};

use crate::cpu::CpuStopwatch;
use trunkguard::core::media::session::FRAME;

use super::calls::Calls;
use super::signal::CallerSignal;
use super::{BenchCodec, BenchError};

/// Simulated steps before the stopwatch starts (jitter buffer filled, codecs warm).
const WARM_UP_STEPS: u32 = 25;

/// What the pipeline run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pipeline {
    /// Calls stepped together.
    pub calls: usize,
    /// Simulated 20 ms steps measured (each covers every call).
    pub steps: u64,
    /// Caller frames decoded and echoed while measuring.
    pub caller_frames: u64,
    /// CPU time spent.
    pub cpu: Duration,
    /// Frames concealed over the whole run (no loss is fed: expected 0).
    pub concealed_frames: u64,
}

impl Pipeline {
    /// Simulated call-seconds processed per CPU second.
    pub fn calls_per_core(&self) -> f64 {
        let call_seconds = self.steps as f64 * self.calls as f64 * FRAME.as_secs_f64();
        let cpu = self.cpu.as_secs_f64();
        if cpu > 0.0 {
            call_seconds / cpu
        } else {
            0.0
        }
    }
}

/// Steps `calls` calls on a simulated clock until `budget` of CPU time is spent.
pub fn measure(
    codec: BenchCodec,
    signal: &CallerSignal,
    calls: usize,
    budget: Duration,
) -> Result<Pipeline, BenchError> {
    let t0 = Instant::now();
    let mut set = Calls::new(codec, signal, calls.max(1), t0)?;
    let mut now = t0;
    for _ in 0..WARM_UP_STEPS {
        set.step_all(now);
        now += FRAME;
    }
    let watch = CpuStopwatch::start();
    let mut steps = 0;
    let mut caller_frames = 0;
    loop {
        caller_frames += set.step_all(now);
        now += FRAME;
        steps += 1;
        let cpu = watch.elapsed();
        if cpu >= budget {
            return Ok(Pipeline {
                calls: set.len(),
                steps,
                caller_frames,
                cpu,
                concealed_frames: set.concealed_frames(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_moves_one_frame_per_call() {
        let signal = CallerSignal::new(BenchCodec::Pcmu).unwrap();
        let p = measure(BenchCodec::Pcmu, &signal, 4, Duration::from_millis(5)).unwrap();
        assert!(p.steps >= 1);
        // one frame per call per step; a frame due on the step's edge may come a step late
        assert!(p.caller_frames.abs_diff(p.steps * 4) <= 8, "{p:?}");
        assert_eq!(p.concealed_frames, 0);
        assert!(p.calls_per_core() > 0.0);
    }
}
