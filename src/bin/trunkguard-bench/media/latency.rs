//! The engine's added latency under load, on the real clock: `n` calls on this thread (as the
//! endpoint drives all of its calls from one task), each stepped once per 20 ms. Real calls'
//! packets arrive at independent phases, so call `i`'s frames are due at
//! `start + k·20 ms + i·20 ms/n`: the load is spread over the period as it is on a real box. A
//! frame's latency is the time from its due instant to the end of its call's step, when the
//! decoded caller frame has gone to the AI side and the echoed frame has been encoded and
//! packetized; it includes any wait behind other calls' work. The jitter buffer's target delay
//! is not included: the frame released at a step is due at that step.
//!
//! Steps are scheduled on a fixed grid; a step that starts late (the thread was busy) counts
//! that delay in its latency. Frames more than a period late are counted as overruns.

use std::time::{Duration, Instant};

use crate::cpu::CpuStopwatch;
use trunkguard::core::media::session::FRAME;

use super::calls::Calls;
use super::signal::CallerSignal;
use super::{BenchCodec, BenchError};

/// Ticks run before latencies are recorded (jitter buffers filling).
const WARM_UP_TICKS: u32 = 10;

/// What the latency run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Calls stepped per tick.
    pub calls: usize,
    /// Ticks recorded.
    pub ticks: u32,
    /// Frames whose latency was recorded.
    pub frames: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Worst.
    pub max: Duration,
    /// Frames that came out more than one 20 ms period after they were due.
    pub overruns: u32,
    /// CPU time this thread got over the recorded ticks, as a fraction of their wall time
    /// (on a shared machine, below the load offered when other processes take the core).
    pub cpu_share: f64,
    /// The engine's own work (the calls' steps) as a fraction of the wall time: the load
    /// really offered (waiting for a call's slot is not counted).
    pub work_share: f64,
}

/// Runs `n` calls in real time for `duration` (at least 50 recorded ticks).
pub fn measure(
    codec: BenchCodec,
    signal: &CallerSignal,
    n: usize,
    duration: Duration,
) -> Result<Latency, BenchError> {
    let ticks = ((duration.as_millis() / FRAME.as_millis()) as u32).max(50);
    let mut calls = Calls::new(codec, signal, n.max(1), Instant::now())?;
    let mut samples: Vec<u32> = Vec::with_capacity(calls.len() * ticks as usize);
    let mut overruns = 0;
    let start = Instant::now() + FRAME;
    let mut watch = None;
    let n_calls = calls.len();
    let mut work = Duration::ZERO;
    let spacing = FRAME / n_calls as u32;
    for k in 0..WARM_UP_TICKS + ticks {
        let period = start + FRAME * k;
        let record = k >= WARM_UP_TICKS;
        if k == WARM_UP_TICKS {
            watch = Some((CpuStopwatch::start(), Instant::now()));
        }
        for i in 0..n_calls {
            let due = period + spacing * i as u32;
            sleep_until(due);
            let began = Instant::now();
            let out = calls.step(i, began);
            if record {
                work += began.elapsed();
            }
            if record && out.caller_frames > 0 {
                let late = Instant::now().saturating_duration_since(due);
                overruns += u32::from(late > FRAME);
                samples.push(micros(late));
            }
        }
    }
    let wall = watch.map_or(Duration::ZERO, |(_, w)| w.elapsed());
    let work_share = work.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    let cpu_share = watch.map_or(0.0, |(cpu, wall)| {
        cpu.elapsed().as_secs_f64() / wall.elapsed().as_secs_f64().max(1e-9)
    });
    samples.sort_unstable();
    let pct = |p: f64| Duration::from_micros(u64::from(percentile(&samples, p)));
    Ok(Latency {
        calls: calls.len(),
        ticks,
        frames: samples.len() as u64,
        p50: pct(0.50),
        p99: pct(0.99),
        max: pct(1.0),
        overruns,
        cpu_share,
        work_share,
    })
}

/// Waits until `t`: sleeps while it is far, then spins the last stretch, because a sleep of a
/// few tens of microseconds overshoots by the kernel's timer slack (~50-100 µs) and with calls
/// a few hundred µs apart that overshoot alone would make the bench fall behind.
fn sleep_until(t: Instant) {
    const SPIN: Duration = Duration::from_millis(2);
    let now = Instant::now();
    if t > now + SPIN {
        std::thread::sleep(t - now - SPIN);
    }
    while Instant::now() < t {
        std::hint::spin_loop();
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The `p` quantile (0..=1) of sorted `v` (nearest rank); 0 when empty.
fn percentile(v: &[u32], p: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let rank = (p.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
