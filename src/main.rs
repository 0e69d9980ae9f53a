//! The `trunkguard` command line: `run` the appliance, `check-config` a file, `set-password`
//! for the status server, `first-boot` on the console, list the latest `calls` and `callbacks`.
//! (The benchmarks and the agent simulator are their own binaries: `trunkguard-bench`,
//! `trunkguard-agent-sim`.)
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use trunkguard::config::{Config, ConfigError};
use trunkguard::io::mgmt::{self, password, AdminPassword};

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
        /// State directory (admin password, generated certificate); default $STATE_DIRECTORY,
        /// else ./trunkguard-state.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Set the admin password of the status server (one line on stdin, at least 12 characters).
    SetPassword {
        /// State directory; default $STATE_DIRECTORY, else ./trunkguard-state.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Read the password from the first line of this file instead of stdin.
        #[arg(long, value_name = "PATH")]
        password_file: Option<PathBuf>,
    },
    /// First boot on the console: set the admin password (asked twice), generate the management
    /// certificate, print the status page's address. Idempotent.
    FirstBoot {
        /// Path to trunkguard.toml (default /etc/trunkguard/trunkguard.toml when it exists, else
        /// the embedded defaults).
        #[arg(long, short = 'c', value_name = "PATH")]
        config: Option<PathBuf>,
        /// State directory; default [state] dir of the configuration, else $STATE_DIRECTORY, else
        /// ./trunkguard-state.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Read the password from the first line of this file instead of asking.
        #[arg(long, value_name = "PATH")]
        password_file: Option<PathBuf>,
    },
    /// Show the latest call records (read-only; the appliance may be running).
    Calls {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// How many of the most recent calls.
        #[arg(long, default_value_t = 20, value_name = "N")]
        last: usize,
        /// State directory; default $STATE_DIRECTORY, else ./trunkguard-state.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Show the latest callback requests and their delivery (read-only; the appliance may be running).
    Callbacks {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// How many of the most recent requests.
        #[arg(long, default_value_t = 20, value_name = "N")]
        last: usize,
        /// State directory; default $STATE_DIRECTORY, else ./trunkguard-state.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
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
        Command::Run { config, state_dir } => run(config, state_dir),
        Command::SetPassword { state_dir, password_file } => set_password(state_dir, password_file),
        Command::FirstBoot { config, state_dir, password_file } => {
            first_boot(config, state_dir, password_file)
        }
        Command::Calls { json, last, state_dir } => show_calls(json, last, state_dir),
        Command::Callbacks { json, last, state_dir } => show_callbacks(json, last, state_dir),
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

fn run(path: Option<PathBuf>, state_dir: Option<PathBuf>) -> ExitCode {
    let mut config = match &path {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(e) => return config_failure(&e),
        },
        None => Config::embedded_default(),
    };
    let origin = path.as_ref().map_or("embedded default".to_owned(), |p| p.display().to_string());
    tracing::info!(config = %origin, summary = %config.summary(), "starting trunkguard");
    // one state directory for the database, the admin password and the TLS certificate:
    // --state-dir, else [state] dir (which defaults to $STATE_DIRECTORY, else ./trunkguard-state)
    let state_dir = mgmt::state_dir(state_dir.as_deref().or(Some(config.state.dir.as_path())));
    config.state.dir = state_dir.clone();
    let management = match mgmt::Management::prepare(&config.status, &state_dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(if e.is_config() { EXIT_CONFIG } else { EXIT_RUNTIME });
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(trunkguard::io::run_with(config, management)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Prints the latest call records of the state database.
fn show_calls(json: bool, last: usize, state_dir: Option<PathBuf>) -> ExitCode {
    let dir = mgmt::state_dir(state_dir.as_deref());
    match trunkguard::io::calls::read_recent(&dir, last) {
        Ok(rows) => {
            use trunkguard::io::calls::show;
            print!("{}", if json { show::json_lines(&rows) } else { show::table(&rows) });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Prints the latest callback requests of the state database.
fn show_callbacks(json: bool, last: usize, state_dir: Option<PathBuf>) -> ExitCode {
    let dir = mgmt::state_dir(state_dir.as_deref());
    match trunkguard::io::callbacks::store::read_recent(&dir, last) {
        Ok(rows) => {
            use trunkguard::io::callbacks::show;
            print!("{}", if json { show::json_lines(&rows) } else { show::table(&rows) });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Hashes the password (stdin or `--password-file`) into the state directory.
fn set_password(state_dir: Option<PathBuf>, password_file: Option<PathBuf>) -> ExitCode {
    let state_dir = mgmt::state_dir(state_dir.as_deref());
    let typed = match &password_file {
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => password::read_line(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => password::read_line(std::io::stdin().lock()),
    };
    let hashed = typed.and_then(|p| AdminPassword::hash(&p));
    let hashed = match hashed {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match password::store(&state_dir, &hashed) {
        Ok(path) => {
            println!("admin password set: {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The configuration on the box when it exists, else the embedded defaults.
const BOX_CONFIG: &str = "/etc/trunkguard/trunkguard.toml";

fn first_boot(
    config: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    password_file: Option<PathBuf>,
) -> ExitCode {
    use mgmt::first_boot::{self, PasswordSource};
    let config = match config.or_else(|| Some(PathBuf::from(BOX_CONFIG)).filter(|p| p.exists())) {
        Some(path) => match Config::load(&path) {
            Ok(c) => c,
            Err(e) => return config_failure(&e),
        },
        None => Config::embedded_default(),
    };
    let state_dir = mgmt::state_dir(state_dir.as_deref().or(Some(config.state.dir.as_path())));
    let stdin = std::io::stdin();
    let terminal = std::io::IsTerminal::is_terminal(&stdin);
    let mut input = stdin.lock();
    let mut output = std::io::stdout();
    let source = match &password_file {
        Some(path) => PasswordSource::File(path),
        None => PasswordSource::Ask { input: &mut input, output: &mut output, terminal },
    };
    match first_boot::run(&state_dir, &config.status, source) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            let usage = matches!(
                e,
                first_boot::FirstBootError::Password(_) | first_boot::FirstBootError::NoMatch
            );
            ExitCode::from(if usage { EXIT_CONFIG } else { EXIT_RUNTIME })
        }
    }
}

/// The tokio runtime (at most two worker threads: the box is small), or the exit code.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(
        |e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_RUNTIME)
        },
    )
}

/// Prints every problem on stderr, one per line, and returns exit code 2.
fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    eprintln!("error: invalid configuration");
    ExitCode::from(EXIT_CONFIG)
}
