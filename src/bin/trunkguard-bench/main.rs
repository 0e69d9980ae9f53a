//! `trunkguard-bench`: benchmarks of the appliance's code, kept out of the appliance binary.
//! `trunkguard-bench media` measures the per-call media pipeline (capacity vs the bare codec,
//! heap per call, added latency) on one core, the calling thread. Figures print as
//! `name: value` lines. Not core: this binary reads the clock (wall and thread CPU time).
//! Exit codes: 0 success, 1 failure, 2 invalid usage.
//!
//! - [`alloc`]: the counting global allocator (live heap bytes), installed here only.
//! - [`cpu`]: CPU time of the calling thread.
//! - [`media`]: `media`: the per-call media pipeline's capacity, memory and latency.

mod alloc;
mod cpu;
mod media;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use alloc::CountingAlloc;
use media::{BenchCodec, MediaBenchConfig};

/// The system allocator, able to count live bytes for `media` (off otherwise).
#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Exit code for a failure while running.
const EXIT_RUNTIME: u8 = 1;

#[derive(Debug, Parser)]
#[command(name = "trunkguard-bench", version, about = "Benchmarks of trunkguard (one core)")]
struct Cli {
    #[command(subcommand)]
    what: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The per-call media pipeline: capacity vs the bare codec, heap per call, added latency.
    Media {
        /// Caller codec (opus: AI side PCM 24 kHz; pcmu: AI side mu-law 8 kHz).
        #[arg(long, value_enum, default_value_t = CodecArg::Opus)]
        codec: CodecArg,
        /// Rough total running time in seconds.
        #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
        seconds: f64,
        /// Calls in the capacity runs.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        calls: u32,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CodecArg {
    Opus,
    Pcmu,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!("{s}: expected a number of seconds in (0, 3600]")),
    }
}

fn main() -> ExitCode {
    match Cli::parse().what {
        BenchCommand::Media { codec, seconds, calls } => bench_media(codec, seconds, calls),
    }
}

fn bench_media(codec: CodecArg, seconds: f64, calls: u32) -> ExitCode {
    let codec = match codec {
        CodecArg::Opus => BenchCodec::Opus,
        CodecArg::Pcmu => BenchCodec::Pcmu,
    };
    let config = MediaBenchConfig { codec, seconds, calls: calls as usize };
    match media::run(config) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: bench media: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
