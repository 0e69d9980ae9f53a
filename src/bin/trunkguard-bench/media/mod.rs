//! `trunkguard-bench media`: how many calls one core carries through the full per-call media
//! pipeline, how close that is to the bare codec cost, the heap per call, and the latency the
//! engine adds at 80 % load. Everything runs on the calling thread.
//!
//! - [`signal`]: the caller's speech (the built-in prompt) in the codec under test, as RTP.
//! - [`calls`]: benchmark calls (full [`trunkguard::core::media::session::MediaSession`]s) and
//!   their 20 ms step with the caller's audio echoed back as the AI's.
//! - [`ceiling`]: the bare codec cost (decode + encode per 20 ms).
//! - [`pipeline`]: capacity on a simulated clock (call-seconds per CPU second).
//! - [`memory`]: heap bytes per live call.
//! - [`latency`]: added latency at 80 % of the measured capacity, on the real clock.
//!
//! [`run`] does all of it and returns a [`MediaBenchReport`], whose `Display` is the command's
//! output: `name: number` lines, comments prefixed with `#`.

pub mod calls;
pub mod ceiling;
pub mod latency;
pub mod memory;
pub mod pipeline;
pub mod signal;

use std::fmt;
use std::time::Duration;

use thiserror::Error;

use trunkguard::core::media::codec::opus::{DEFAULT_BITRATE, DEFAULT_COMPLEXITY};
use trunkguard::core::media::codec::pipeline::AiFormat;
use trunkguard::core::media::codec::{CodecError, Rate};
use trunkguard::core::media::g711::Law;
use trunkguard::core::media::prompt::PromptError;
use trunkguard::core::media::session::MediaError;
use trunkguard::core::sdp::Codec;

/// Payload type of Opus in the benchmark calls.
const OPUS_PT: u8 = 111;
/// Calls created for the memory reading.
const MEMORY_CALLS: usize = 50;
/// Most calls the latency run creates (a G.711 core can carry more than is worth creating).
pub const MAX_LATENCY_CALLS: usize = 20_000;

/// Why the benchmark could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("prompt: {0}")]
    Prompt(#[from] PromptError),
    #[error("invalid benchmark setting: {0}")]
    Setting(String),
}

/// The caller codec under test; each comes with the AI format the product pairs it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchCodec {
    /// Opus (48 kHz RTP clock) with an OpenAI-style AI side: 16-bit PCM at 24 kHz.
    Opus,
    /// G.711 μ-law with a Twilio-style AI side: μ-law at 8 kHz.
    Pcmu,
}

impl BenchCodec {
    /// The negotiated caller codec.
    pub fn codec(self) -> Codec {
        match self {
            BenchCodec::Opus => Codec::opus(OPUS_PT),
            BenchCodec::Pcmu => Codec::PCMU,
        }
    }

    /// The AI side's format.
    pub fn ai_format(self) -> AiFormat {
        match self {
            BenchCodec::Opus => AiFormat::Pcm(Rate::Hz24000),
            BenchCodec::Pcmu => AiFormat::G711(Law::Ulaw),
        }
    }

    fn describe(self) -> String {
        match self {
            BenchCodec::Opus => format!(
                "opus (PT {OPUS_PT}, complexity {DEFAULT_COMPLEXITY}, {} kbit/s, FEC) <-> AI PCM 24 kHz (OpenAI)",
                DEFAULT_BITRATE / 1000
            ),
            BenchCodec::Pcmu => "pcmu (PT 0) <-> AI mu-law 8 kHz (Twilio)".to_owned(),
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaBenchConfig {
    pub codec: BenchCodec,
    /// Rough total time: 20 % codec ceiling, 10 % + 30 % pipeline (CPU time), 30 % latency
    /// (real time, at least one second), plus setup.
    pub seconds: f64,
    /// Calls in the ceiling run and the pipeline's first pass.
    pub calls: usize,
}

impl Default for MediaBenchConfig {
    fn default() -> Self {
        MediaBenchConfig { codec: BenchCodec::Opus, seconds: 10.0, calls: 100 }
    }
}

impl MediaBenchConfig {
    fn share(&self, fraction: f64) -> Duration {
        Duration::from_secs_f64(self.seconds * fraction)
    }
}

/// Everything [`run`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaBenchReport {
    pub config: MediaBenchConfig,
    pub ceiling: ceiling::Ceiling,
    /// The first pipeline pass, at the configured call count.
    pub calibration: pipeline::Pipeline,
    /// The measured pipeline pass, at the capacity the first pass estimated (or the
    /// configured call count when that is more).
    pub pipeline: pipeline::Pipeline,
    pub memory: memory::Memory,
    pub latency: latency::Latency,
}

impl MediaBenchReport {
    /// Pipeline capacity relative to the codec ceiling.
    pub fn pipeline_vs_ceiling(&self) -> f64 {
        let x = self.ceiling.calls_per_core();
        if x > 0.0 {
            self.pipeline.calls_per_core() / x
        } else {
            0.0
        }
    }
}

/// Runs the whole media benchmark on this thread.
pub fn run(config: MediaBenchConfig) -> Result<MediaBenchReport, BenchError> {
    if !(config.seconds.is_finite() && config.seconds > 0.0) {
        return Err(BenchError::Setting(format!(
            "seconds must be positive, not {}",
            config.seconds
        )));
    }
    if config.calls == 0 {
        return Err(BenchError::Setting("calls must be at least 1".into()));
    }
    let codec = config.codec;
    let signal = signal::CallerSignal::new(codec)?;
    let ceiling = ceiling::measure(codec, &signal, config.calls, config.share(0.2))?;
    // A first pass at the configured call count estimates the capacity; the measured pass
    // then runs that many calls (when more), so caches and memory see a full core's working set.
    let calibration = pipeline::measure(codec, &signal, config.calls, config.share(0.1))?;
    let full_core = (calibration.calls_per_core() as usize)
        .clamp(config.calls, MAX_LATENCY_CALLS.max(config.calls));
    let pipeline = pipeline::measure(codec, &signal, full_core, config.share(0.3))?;
    let memory = memory::measure(codec, &signal, MEMORY_CALLS)?;
    let at_80 = calls_at_80_percent(pipeline.calls_per_core());
    let latency_time = config.share(0.3).max(Duration::from_secs(1));
    let latency = latency::measure(codec, &signal, at_80, latency_time)?;
    Ok(MediaBenchReport { config, ceiling, calibration, pipeline, memory, latency })
}

/// 80 % of the capacity, at least one call, at most [`MAX_LATENCY_CALLS`].
fn calls_at_80_percent(calls_per_core: f64) -> usize {
    ((calls_per_core * 0.8).floor() as usize).clamp(1, MAX_LATENCY_CALLS)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl fmt::Display for MediaBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, p, m, l) = (&self.ceiling, &self.pipeline, &self.memory, &self.latency);
        writeln!(f, "# trunkguard-bench media: {}", self.config.codec.describe())?;
        writeln!(
            f,
            "# one core (the calling thread); caller audio: the built-in prompt's speech, looped"
        )?;
        writeln!(f, "codec_ceiling_calls_per_core: {:.1}", c.calls_per_core())?;
        writeln!(f, "pipeline_calls_per_core: {:.1}", p.calls_per_core())?;
        writeln!(f, "pipeline_vs_ceiling: {:.2}", self.pipeline_vs_ceiling())?;
        writeln!(f, "bytes_per_call: {}", m.bytes_per_call().or(m.malloc_bytes).unwrap_or(0))?;
        writeln!(f, "engine_latency_p50_ms: {:.3}", ms(l.p50))?;
        writeln!(f, "engine_latency_p99_ms: {:.3}", ms(l.p99))?;
        writeln!(f, "calls_at_80_percent: {}", l.calls)?;
        writeln!(
            f,
            "# ceiling: {} decode+encode pairs over {} codec pairs in {:.3} s CPU ({:.1} us per pair)",
            c.frame_pairs,
            self.config.calls,
            c.cpu.as_secs_f64(),
            c.per_frame().as_secs_f64() * 1e6
        )?;
        writeln!(
            f,
            "# pipeline: {} calls x {} simulated 20 ms steps ({} caller frames, {} concealed) in {:.3} s CPU ({:.1} us per call-frame)",
            p.calls,
            p.steps,
            p.caller_frames,
            p.concealed_frames,
            p.cpu.as_secs_f64(),
            p.cpu.as_secs_f64() * 1e6 / (p.steps as f64 * p.calls as f64).max(1.0)
        )?;
        let cal = &self.calibration;
        writeln!(
            f,
            "# pipeline first pass: {} calls x {} steps in {:.3} s CPU: {:.1} calls per core",
            cal.calls,
            cal.steps,
            cal.cpu.as_secs_f64(),
            cal.calls_per_core()
        )?;
        let show = |v: Option<u64>| v.map_or("n/a".to_owned(), |b| b.to_string());
        writeln!(
            f,
            "# memory: {} calls after 2 s; per call: Rust heap {} + libopus state {} bytes; all malloc (mallinfo2) {}",
            m.calls,
            show(m.rust_bytes),
            m.codec_state_bytes,
            show(m.malloc_bytes)
        )?;
        writeln!(
            f,
            "# latency: {} calls x {} real 20 ms ticks, {} frames, max {:.3} ms, {} frames over 20 ms late, engine work {:.0} % of the wall time (thread on CPU {:.0} %, spinning to each call's slot included)",
            l.calls,
            l.ticks,
            l.frames,
            ms(l.max),
            l.overruns,
            l.work_share * 100.0,
            l.cpu_share * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eighty_percent_is_clamped_to_a_usable_count() {
        assert_eq!(calls_at_80_percent(100.0), 80);
        assert_eq!(calls_at_80_percent(0.3), 1);
        assert_eq!(calls_at_80_percent(1e9), MAX_LATENCY_CALLS);
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let bad = MediaBenchConfig { seconds: 0.0, ..MediaBenchConfig::default() };
        assert!(matches!(run(bad), Err(BenchError::Setting(_))));
        let bad = MediaBenchConfig { calls: 0, seconds: 1.0, ..MediaBenchConfig::default() };
        assert!(matches!(run(bad), Err(BenchError::Setting(_))));
    }
}
