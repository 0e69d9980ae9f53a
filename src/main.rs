//! The `trunkguard` command line: `run` the appliance, `check-config` a file, or `bench` the
//! media pipeline. Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use trunkguard::bench::alloc::CountingAlloc;
use trunkguard::bench::media::{BenchCodec, MediaBenchConfig};
use trunkguard::config::{Config, ConfigError};

/// The system allocator, able to count live bytes for `bench media` (off otherwise: one
/// relaxed load of an untouched flag per allocation).
#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Exit code for an invalid or unreadable configuration.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure while running.
const EXIT_RUNTIME: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "trunkguard",
    version,
    about = "SIP/RTP appliance between phone carriers and cloud AI voice agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run trunkguard (with the embedded loopback configuration when --config is not given).
    Run {
        /// Path to trunkguard.toml.
        #[arg(long, short = 'c', value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and exit (0 valid, 2 invalid).
    CheckConfig {
        /// Path to trunkguard.toml.
        path: PathBuf,
    },
    /// Benchmarks (one core, the calling thread).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
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
    init_tracing();
    match Cli::parse().command {
        Command::CheckConfig { path } => check_config(&path),
        Command::Run { config } => run(config),
        Command::Bench { what: BenchCommand::Media { codec, seconds, calls } } => bench_media(codec, seconds, calls),
    }
}

/// Logs to stderr; `RUST_LOG` filters, default `info`.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second initialisation can only fail harmlessly; keep going with whatever is installed.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!("ok: {}: {}", path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(e) => config_failure(&e),
    }
}

fn run(path: Option<PathBuf>) -> ExitCode {
    let config = match &path {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(e) => return config_failure(&e),
        },
        None => Config::embedded_default(),
    };
    let origin = path
        .as_ref()
        .map_or("embedded default".to_owned(), |p| p.display().to_string());
    tracing::info!(config = %origin, summary = %config.summary(), "starting trunkguard");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(trunkguard::io::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn bench_media(codec: CodecArg, seconds: f64, calls: u32) -> ExitCode {
    let codec = match codec {
        CodecArg::Opus => BenchCodec::Opus,
        CodecArg::Pcmu => BenchCodec::Pcmu,
    };
    let config = MediaBenchConfig { codec, seconds, calls: calls as usize };
    match trunkguard::bench::media::run(config) {
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

/// Prints every problem on stderr, one per line, and returns exit code 2.
fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    eprintln!("error: invalid configuration");
    ExitCode::from(EXIT_CONFIG)
}
