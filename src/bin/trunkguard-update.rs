//! `trunkguard-update`: A/B updates of the trunkguard software on the box (`docs/updates.md`).
//! `install FILE` verifies a bundle, writes the inactive slot, switches, restarts and keeps the
//! new version only if `/readyz` answers ready in time; `confirm` settles an update interrupted
//! by a reboot; `rollback` switches back by hand; `status` shows the slots; `bundle` and
//! `keygen` make bundles and signing keys; `init` sets up the slots (image build).
//! Exit codes: 0 success, 1 failure, 2 refused (bad bundle, checksum, signature, usage),
//! 3 rolled back.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use trunkguard::update::bundle::make::{self, BundleSpec};
use trunkguard::update::policy::WatchSettings;
use trunkguard::update::probe::ReadyUrl;
use trunkguard::update::run::{self, Done, Options};
use trunkguard::update::{sign, UpdateError};

const EXIT_FAILED: u8 = 1;
const EXIT_REFUSED: u8 = 2;
const EXIT_ROLLED_BACK: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "trunkguard-update",
    version,
    about = "A/B updates of trunkguard that roll back by themselves"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install an update bundle: verify, write the inactive slot, switch, restart, wait for ready
    /// (switch back and restart if it does not become ready).
    Install {
        /// The bundle (.tgu); its checksum is read from FILE.sha256 unless --sha256 is given.
        file: PathBuf,
        #[command(flatten)]
        box_args: BoxArgs,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// At boot, after trunkguard started: confirm or roll back an update a restart interrupted.
    Confirm {
        #[command(flatten)]
        box_args: BoxArgs,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Switch to the other slot by hand and restart.
    Rollback {
        #[command(flatten)]
        box_args: BoxArgs,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Slots, versions, the active slot, a pending update and the last logged result.
    Status {
        /// Root directory of the installation.
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a bundle (checksum, manifest, signature, every entry) without installing it.
    Verify {
        file: PathBuf,
        #[command(flatten)]
        box_args: BoxArgs,
    },
    /// Set up the slots with a first version in slot a (for the image build).
    Init {
        file: PathBuf,
        #[command(flatten)]
        box_args: BoxArgs,
        /// Set the slots up again even if `current` exists (image builds only, not a running box).
        #[arg(long)]
        force: bool,
    },
    /// Make an update bundle (and FILE.sha256).
    Bundle {
        /// Where to write the bundle.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The trunkguard binary.
        #[arg(long, value_name = "PATH")]
        binary: PathBuf,
        /// The repository's firmware/ directory (prompts, example config, units ride along).
        #[arg(long, value_name = "DIR")]
        firmware: Option<PathBuf>,
        /// Version string (default: the last word of `BINARY --version`).
        #[arg(long, value_name = "V")]
        version: Option<String>,
        /// Target architecture (default: this machine's, e.g. x86_64, aarch64).
        #[arg(long, value_name = "ARCH")]
        arch: Option<String>,
        /// Sign the manifest with this secret key (from `keygen`).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
    },
    /// Make an ed25519 signing key: KEY (secret, 0600) and KEY.pub (goes to /etc/trunkguard/update.pub).
    Keygen {
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct BoxArgs {
    /// Root directory of the installation (slots under ROOT/opt/trunkguard).
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
    /// Public key for signatures (default ROOT/etc/trunkguard/update.pub when it exists; once a key
    /// is configured, unsigned bundles are refused).
    #[arg(long, value_name = "PATH")]
    pubkey: Option<PathBuf>,
    /// The bundle's sha256 instead of FILE.sha256.
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// Architecture the bundle must be built for (default: this machine's).
    #[arg(long, value_name = "ARCH")]
    arch: Option<String>,
}

#[derive(Debug, clap::Args)]
struct WatchArgs {
    /// Command that restarts the service (run with sh -c).
    #[arg(long, default_value = run::DEFAULT_RESTART, value_name = "CMD")]
    restart_cmd: String,
    /// Readiness URL (default: from [status] listen of ROOT/etc/trunkguard/trunkguard.toml, else
    /// http://127.0.0.1:8080/readyz).
    #[arg(long, value_name = "URL")]
    ready_url: Option<String>,
    /// Seconds from the switch until the new version must be ready.
    #[arg(long, default_value_t = 120.0, value_name = "SECS", value_parser = seconds)]
    timeout: f64,
    /// Milliseconds between readiness probes.
    #[arg(long, default_value_t = 1000, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=60_000))]
    probe_interval_ms: u64,
    /// Consecutive ready answers needed.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    ready_streak: u32,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("{s}: expected a number of seconds in (0, 86400]")),
    }
}

fn main() -> ExitCode {
    match run_command(Cli::parse().command) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trunkguard-update: error: {e}");
            ExitCode::from(match e {
                UpdateError::RolledBack { .. } => EXIT_ROLLED_BACK,
                e if e.is_refusal() => EXIT_REFUSED,
                _ => EXIT_FAILED,
            })
        }
    }
}

fn run_command(command: Command) -> Result<String, UpdateError> {
    match command {
        Command::Install { file, box_args, watch } => {
            describe(run::install(&options(&box_args, Some(&watch))?, &file)?)
        }
        Command::Confirm { box_args, watch } => {
            describe(run::confirm(&options(&box_args, Some(&watch))?)?)
        }
        Command::Rollback { box_args, watch } => {
            describe(run::rollback(&options(&box_args, Some(&watch))?)?)
        }
        Command::Init { file, box_args, force } => {
            describe(run::init(&options(&box_args, None)?, &file, force)?)
        }
        Command::Verify { file, box_args } => {
            let checked = run::verify(&options(&box_args, None)?, &file)?;
            let sig = if checked.signature_verified {
                "signature verified"
            } else {
                "signature not checked (no key configured)"
            };
            Ok(format!(
                "ok: {}: {} for {}, {} files, {sig}",
                file.display(),
                checked.manifest.version,
                checked.manifest.arch,
                checked.manifest.files.len()
            ))
        }
        Command::Status { root, json } => {
            let status = run::status(&root)?;
            Ok(if json {
                serde_json::to_string(&status).unwrap_or_default()
            } else {
                status.to_string().trim_end().to_owned()
            })
        }
        Command::Bundle { out, binary, firmware, version, arch, sign } => {
            let version = match version {
                Some(v) => v,
                None => version_of(&binary)?,
            };
            let arch = arch.unwrap_or_else(|| std::env::consts::ARCH.to_owned());
            let made = make::make(&BundleSpec { binary, firmware, version, arch, sign }, &out)?;
            Ok(format!(
                "bundle {} ({} for {}, {} files), sha256 {} in {}",
                made.path.display(),
                made.manifest.version,
                made.manifest.arch,
                made.manifest.files.len(),
                made.sha256,
                made.sidecar.display()
            ))
        }
        Command::Keygen { out } => {
            let (secret, public) = sign::generate(&out)?;
            Ok(format!(
                "secret key {} (keep it off the box), public key {}",
                secret.display(),
                public.display()
            ))
        }
    }
}

fn options(b: &BoxArgs, watch: Option<&WatchArgs>) -> Result<Options, UpdateError> {
    let mut o = Options::new(&b.root);
    o.public_key = b.pubkey.clone();
    o.sha256 = b.sha256.clone();
    if let Some(arch) = &b.arch {
        o.arch = arch.clone();
    }
    if let Some(w) = watch {
        o.restart_command = w.restart_cmd.clone();
        o.watch = WatchSettings {
            ready_timeout: Duration::from_secs_f64(w.timeout),
            probe_interval: Duration::from_millis(w.probe_interval_ms),
            ready_streak: w.ready_streak,
        };
        o.ready_url = match &w.ready_url {
            Some(url) => ReadyUrl::parse(url).map_err(UpdateError::Usage)?,
            None => run::ready_url_from_config(
                &trunkguard::update::layout::Layout::new(&b.root).default_config(),
            )
            .unwrap_or_else(run::default_ready_url),
        };
    }
    Ok(o)
}

fn describe(done: Done) -> Result<String, UpdateError> {
    Ok(match done {
        Done::Installed { slot, version } => format!("installed {version} in slot {slot} (active)"),
        Done::Confirmed { slot, version, ready_after } => {
            format!(
                "updated: {version} in slot {slot} is ready (after {:.1} s) and confirmed",
                ready_after.as_secs_f64()
            )
        }
        Done::NothingPending => "nothing pending".to_owned(),
        Done::Cleared { active } => {
            format!("an interrupted update was cleared; slot {active} stays active")
        }
        Done::Switched { slot, version, restart: Ok(()) } => {
            format!("rolled back by hand to {version} in slot {slot}")
        }
        Done::Switched { slot, version, restart: Err(e) } => {
            format!("rolled back by hand to {version} in slot {slot}, but the restart failed: {e}")
        }
    })
}

/// The last word of `BINARY --version` (at most 5 s).
fn version_of(binary: &Path) -> Result<String, UpdateError> {
    let usage = || {
        UpdateError::Usage(format!(
            "cannot tell the version of {}: pass --version",
            binary.display()
        ))
    };
    let path = binary.to_str().ok_or_else(usage)?;
    let out = trunkguard::update::spawn::run(&[path, "--version"], true, Duration::from_secs(5))
        .map_err(|_| usage())?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().last() {
        Some(v) if out.code == Some(0) => Ok(v.to_owned()),
        _ => Err(usage()),
    }
}
