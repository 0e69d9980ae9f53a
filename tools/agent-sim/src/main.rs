//! `trunkguard-agent-sim`: a fake cloud AI voice agent (WebSocket server) for tests, demos and
//! drills. Prints `agent-sim listening on ADDR` once ready; serves until SIGTERM or Ctrl-C.
//! Exit codes: 0 success, 1 runtime failure, 2 invalid usage or TLS files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use trunkguard_agent_sim::{AudioMode, Fault, SimConfig, SimMode, SimProtocol, SimServer};

const EXIT_USAGE: u8 = 2;
const EXIT_RUNTIME: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "trunkguard-agent-sim",
    version,
    about = "Simulate a cloud AI voice agent (Twilio Media Streams or OpenAI Realtime)"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen one is printed).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Wire protocol: twilio-media-streams or openai-realtime.
    #[arg(long, value_name = "PROTOCOL")]
    protocol: SimProtocol,
    /// echo (caller audio back after --echo-delay-ms) or prompt (spoken greeting).
    #[arg(long, default_value = "echo", value_name = "MODE")]
    mode: SimMode,
    /// Fault to inject (repeatable): refuse, http503, close-after:N, stall-after:N,
    /// slow-first-audio:MS.
    #[arg(long, value_name = "FAULT")]
    fault: Vec<Fault>,
    /// How agent audio is sent: paced, jitter:MS, burst:MS, odd-size:BYTES, mute.
    #[arg(long, default_value = "paced", value_name = "MODE")]
    audio: AudioMode,
    /// Seed of the jitter offsets (the same seed gives the same timing).
    #[arg(long, default_value_t = 0, value_name = "N")]
    seed: u64,
    /// Delay before echoing caller audio, in milliseconds.
    #[arg(long, default_value_t = 200, value_name = "MS")]
    echo_delay_ms: u64,
    /// Serve wss:// with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    init_tracing();
    let args = Args::parse();
    let mut cfg = SimConfig::new(args.listen, args.protocol);
    cfg.mode = args.mode;
    cfg.faults = args.fault;
    cfg.audio = args.audio;
    cfg.seed = args.seed;
    cfg.echo_delay = Duration::from_millis(args.echo_delay_ms);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        match trunkguard_agent_sim::tls::server_config(cert, key) {
            Ok(tls) => cfg.tls = Some(tls),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
    match runtime.block_on(serve(cfg, args.tls_cert.is_some())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: agent-sim: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Logs to stderr; `RUST_LOG` filters, default `info`.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Binds, prints `agent-sim listening on ADDR` once ready, serves until SIGTERM or Ctrl-C.
async fn serve(cfg: SimConfig, tls: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let server = SimServer::bind(cfg).await?;
    let addr = server.local_addr()?;
    let scheme = if tls { "wss" } else { "ws" };
    tracing::info!(%addr, %scheme, "agent-sim ready");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "agent-sim listening on {addr}")?;
    stdout.flush()?;
    server.run(termination()).await
}

/// Completes on SIGTERM or Ctrl-C.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
