//! The `trunkguard` command line: `run` the appliance or `check-config` a file.
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use trunkguard::config::{Config, ConfigError};

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
}

fn main() -> ExitCode {
    init_tracing();
    match Cli::parse().command {
        Command::CheckConfig { path } => check_config(&path),
        Command::Run { config } => run(config),
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

/// Prints every problem on stderr, one per line, and returns exit code 2.
fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    eprintln!("error: invalid configuration");
    ExitCode::from(EXIT_CONFIG)
}
