//! The commands of `trunkguard-update`, each under the state directory's lock:
//!
//! - `init`: the first version into slot `a`, `current` pointing at it (image build).
//! - `install`: checksum, manifest, signature, every entry checked (nothing written yet); the
//!   inactive slot unpacked through a staging directory and synced; the pending marker; then
//!   the policy of [`crate::update::policy`]: switch, restart, probe `/readyz`, confirm or roll
//!   back. Every outcome, refusals included, is a line of the update log.
//! - `confirm`: at boot, a pending marker means the box restarted in the middle of an update:
//!   watch the slot `current` names and keep it or roll back.
//! - `rollback`: switch to the other slot by hand and restart.
//! - `status`: slots, versions, the active one, what is pending, the last log line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::bundle::read::{self, Checked};
use super::layout::{Layout, Pending};
use super::log::{self, Record};
use super::probe::{self, ReadyUrl};
use super::sign::PublicKey;
use super::UpdateError;
use crate::io::clock;
use crate::update::policy::{Action, Outcome, Output, Slot, UpdateWatch, WatchSettings};

/// The restart command on the box.
pub const DEFAULT_RESTART: &str = "systemctl restart trunkguard.service";
/// The readiness URL when neither a flag nor the configuration gives one.
pub const DEFAULT_READY_URL: &str = "http://127.0.0.1:8080/readyz";

/// What `install`, `confirm` and `rollback` need besides the bundle.
#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    pub restart_command: String,
    pub ready_url: ReadyUrl,
    pub watch: WatchSettings,
    /// One probe's connect and read timeout.
    pub probe_timeout: Duration,
    /// `--pubkey`, else `<root>/etc/trunkguard/update.pub` when it exists.
    pub public_key: Option<PathBuf>,
    /// The bundle's sha256 (else read from `FILE.sha256`).
    pub sha256: Option<String>,
    /// The architecture bundles must be built for.
    pub arch: String,
}

impl Options {
    pub fn new(root: &Path) -> Options {
        Options {
            root: root.to_path_buf(),
            restart_command: DEFAULT_RESTART.to_owned(),
            ready_url: default_ready_url(),
            watch: WatchSettings::default(),
            probe_timeout: Duration::from_secs(2),
            public_key: None,
            sha256: None,
            arch: std::env::consts::ARCH.to_owned(),
        }
    }

    fn layout(&self) -> Layout {
        Layout::new(&self.root)
    }

    fn key(&self) -> Result<Option<PublicKey>, UpdateError> {
        let layout = self.layout();
        let default = layout.default_public_key();
        match &self.public_key {
            Some(path) => PublicKey::load(path).map(Some),
            None if default.exists() => PublicKey::load(&default).map(Some),
            None => Ok(None),
        }
    }
}

/// [`DEFAULT_READY_URL`].
pub fn default_ready_url() -> ReadyUrl {
    ReadyUrl {
        host: "127.0.0.1:8080".into(),
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
        path: "/readyz".into(),
        tls: false,
    }
}

/// The readiness URL from `[status]` of the configuration, if it loads (https with `tls`; an
/// unspecified address is probed on loopback).
pub fn ready_url_from_config(config: &Path) -> Option<ReadyUrl> {
    let c = crate::config::Config::load(config).ok()?;
    let scheme = if c.status.tls.is_some() { "https" } else { "http" };
    let mut addr = c.status.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    ReadyUrl::parse(&format!("{scheme}://{addr}/readyz")).ok()
}

/// What a successful command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Installed {
        slot: Slot,
        version: String,
    },
    Confirmed {
        slot: Slot,
        version: String,
        ready_after: Duration,
    },
    NothingPending,
    /// The marker was stale (the switch never happened or was already undone).
    Cleared {
        active: Slot,
    },
    Switched {
        slot: Slot,
        version: String,
        restart: Result<(), String>,
    },
}

/// Checks a bundle without touching anything (`trunkguard-update verify`).
pub fn verify(opts: &Options, bundle: &Path) -> Result<Checked, UpdateError> {
    read::check_checksum(bundle, opts.sha256.as_deref())?;
    read::verify(bundle, opts.key()?.as_ref(), &opts.arch)
}

/// Sets up the slots with a first version in `a` (refused when `current` exists, unless `force`).
pub fn init(opts: &Options, bundle: &Path, force: bool) -> Result<Done, UpdateError> {
    let layout = opts.layout();
    let _lock = layout.lock()?;
    if !force && std::fs::symlink_metadata(layout.current()).is_ok() {
        return Err(UpdateError::AlreadyInitialized(layout.current()));
    }
    let checked = verify(opts, bundle)?;
    let slot = Slot::A;
    write_slot(opts, &layout, bundle, slot)?;
    layout.switch_to(slot)?;
    layout.clear_pending()?;
    let mut r = record("init", "installed", &checked.manifest.version);
    r.to = Some(slot.to_string());
    r.bundle = Some(bundle.display().to_string());
    append_log(&layout, &r);
    Ok(Done::Installed { slot, version: checked.manifest.version })
}

/// Installs `bundle` into the inactive slot, switches, and keeps it only if it becomes ready.
pub fn install(opts: &Options, bundle: &Path) -> Result<Done, UpdateError> {
    let layout = opts.layout();
    let _lock = layout.lock()?;
    if layout.pending()?.is_some() {
        return Err(UpdateError::Pending(layout.pending_path()));
    }
    let from = layout.active()?.ok_or_else(|| UpdateError::NotInitialized(layout.slots()))?;
    let to = from.other();
    let checked = match verify(opts, bundle) {
        Ok(c) => c,
        Err(e) => {
            let mut r = record("install", "refused", "");
            r.version = None;
            r.reason = Some(e.to_string());
            r.bundle = Some(bundle.display().to_string());
            append_log(&layout, &r);
            return Err(e);
        }
    };
    let version = checked.manifest.version.clone();
    write_slot(opts, &layout, bundle, to)?;
    layout.set_pending(&Pending {
        from: from.to_string(),
        to: to.to_string(),
        version: version.clone(),
        unix_ms: clock::unix_ms(),
    })?;
    eprintln!("trunkguard-update: {version} written to slot {to}; switching from {from} and waiting for {}", opts.ready_url);
    let watch = UpdateWatch::install(clock::now(), from, to, opts.watch);
    finish(opts, &layout, watch, "install", from, to, version, Some(bundle))
}

/// At boot (after trunkguard started): settles an update the box restarted in the middle of.
pub fn confirm(opts: &Options) -> Result<Done, UpdateError> {
    let layout = opts.layout();
    let _lock = layout.lock()?;
    let Some(pending) = layout.pending()? else { return Ok(Done::NothingPending) };
    let active = layout.active()?.ok_or_else(|| UpdateError::NotInitialized(layout.slots()))?;
    let (Some(from), Some(to)) = (Slot::parse(&pending.from), Slot::parse(&pending.to)) else {
        layout.clear_pending()?;
        return Ok(Done::Cleared { active });
    };
    if active != to || from == to {
        // the switch never happened, or the switch back already did
        let mut r = record("confirm", "rolled_back", &pending.version);
        r.from = Some(pending.to.clone());
        r.to = Some(active.to_string());
        r.reason = Some(format!(
            "interrupted before the update was confirmed; slot {active} was active at boot"
        ));
        append_log(&layout, &r);
        layout.clear_pending()?;
        return Ok(Done::Cleared { active });
    }
    eprintln!(
        "trunkguard-update: {} in slot {to} was not confirmed before a restart; waiting for {}",
        pending.version, opts.ready_url
    );
    let watch = UpdateWatch::resume(clock::now(), from, opts.watch);
    finish(opts, &layout, watch, "confirm", from, to, pending.version, None)
}

/// Switches to the other slot by hand and restarts (no readiness watch).
pub fn rollback(opts: &Options) -> Result<Done, UpdateError> {
    let layout = opts.layout();
    let _lock = layout.lock()?;
    let active = layout.active()?.ok_or_else(|| UpdateError::NotInitialized(layout.slots()))?;
    let other = active.other();
    let manifest =
        layout.slot_manifest(other).ok_or_else(|| UpdateError::EmptySlot(other.to_string()))?;
    layout.switch_to(other)?;
    layout.clear_pending()?;
    let restart = probe::restart(&opts.restart_command, opts.watch.ready_timeout);
    let mut r = record("rollback", "switched", &manifest.version);
    r.from = Some(active.to_string());
    r.to = Some(other.to_string());
    r.reason = Some(match &restart {
        Ok(()) => "by hand".to_owned(),
        Err(e) => format!("by hand; restart failed: {e}"),
    });
    append_log(&layout, &r);
    Ok(Done::Switched { slot: other, version: manifest.version, restart })
}

/// Checks and unpacks `bundle` into `slot` through its staging directory.
fn write_slot(
    opts: &Options,
    layout: &Layout,
    bundle: &Path,
    slot: Slot,
) -> Result<(), UpdateError> {
    let staging = layout.fresh_staging(slot)?;
    let unpacked = read::unpack(bundle, opts.key()?.as_ref(), &opts.arch, &staging);
    if let Err(e) = unpacked {
        layout.discard_staging(slot);
        return Err(e);
    }
    layout.commit_staging(slot)
}

/// Drives the watch to its outcome, performing its actions; logs and clears the marker.
#[allow(clippy::too_many_arguments)]
fn finish(
    opts: &Options,
    layout: &Layout,
    mut watch: UpdateWatch,
    action: &str,
    from: Slot,
    to: Slot,
    version: String,
    bundle: Option<&Path>,
) -> Result<Done, UpdateError> {
    let outcome = drive(opts, layout, &mut watch)?;
    layout.clear_pending()?;
    let mut r = record(action, "", &version);
    r.from = Some(from.to_string());
    r.to = Some(to.to_string());
    r.bundle = bundle.map(|b| b.display().to_string());
    match outcome {
        Outcome::Confirmed { ready_after } => {
            r.result = "confirmed".into();
            r.ready_ms = Some(ready_after.as_millis() as u64);
            append_log(layout, &r);
            Ok(Done::Confirmed { slot: to, version, ready_after })
        }
        Outcome::RolledBack { reason, previous_ready } => {
            r.result = "rolled_back".into();
            r.reason = Some(if previous_ready {
                reason.clone()
            } else {
                format!("{reason}; the previous version did not become ready either")
            });
            append_log(layout, &r);
            Err(UpdateError::RolledBack { reason, previous_ready })
        }
    }
}

/// The I/O side of the policy: each action performed, each wait slept.
fn drive(opts: &Options, layout: &Layout, watch: &mut UpdateWatch) -> Result<Outcome, UpdateError> {
    loop {
        match watch.poll_output() {
            Output::Action(Action::Switch(slot)) => {
                layout.switch_to(slot)?;
                eprintln!("trunkguard-update: current -> slot {slot}");
            }
            Output::Action(Action::Restart) => {
                let limit = remaining(watch).max(Duration::from_secs(1));
                let result = probe::restart(&opts.restart_command, limit);
                if let Err(e) = &result {
                    eprintln!("trunkguard-update: {e}");
                }
                watch.restarted(clock::now(), result);
            }
            Output::Action(Action::Probe) => {
                let result = probe::probe(&opts.ready_url, opts.probe_timeout);
                watch.probed(clock::now(), result);
            }
            Output::Timeout(t) => {
                let now = clock::now();
                if t > now {
                    std::thread::sleep(t - now);
                }
                watch.handle_timeout(clock::now());
            }
            Output::Waiting => watch.handle_timeout(clock::now()),
            Output::Done(outcome) => return Ok(outcome),
        }
    }
}

fn remaining(watch: &UpdateWatch) -> Duration {
    watch.deadline().map(|d| d.saturating_duration_since(clock::now())).unwrap_or_default()
}

fn record(action: &str, result: &str, version: &str) -> Record {
    let mut r = Record::new(action, result, clock::unix_ms());
    if !version.is_empty() {
        r.version = Some(version.to_owned());
    }
    r
}

/// A log line that cannot be written is reported, never fatal (the update itself is done).
fn append_log(layout: &Layout, r: &Record) {
    if let Err(e) = log::append(&layout.log(), r) {
        eprintln!("trunkguard-update: warning: cannot write {}: {e}", layout.log().display());
    }
}

/// `trunkguard-update status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub active: Option<String>,
    pub slots: Vec<SlotStatus>,
    pub pending: Option<Pending>,
    pub last: Option<Record>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    pub slot: String,
    pub version: Option<String>,
    pub arch: Option<String>,
    pub active: bool,
}

pub fn status(root: &Path) -> Result<Status, UpdateError> {
    let layout = Layout::new(root);
    let active = layout.active()?;
    let slots = [Slot::A, Slot::B]
        .into_iter()
        .map(|s| {
            let m = layout.slot_manifest(s);
            SlotStatus {
                slot: s.to_string(),
                version: m.as_ref().map(|m| m.version.clone()),
                arch: m.map(|m| m.arch),
                active: active == Some(s),
            }
        })
        .collect();
    Ok(Status {
        active: active.map(|s| s.to_string()),
        slots,
        pending: layout.pending()?,
        last: log::last(&layout.log()),
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.slots {
            let version = s.version.as_deref().unwrap_or("(empty)");
            writeln!(f, "slot {}: {version}{}", s.slot, if s.active { "  (active)" } else { "" })?;
        }
        if self.active.is_none() {
            writeln!(f, "no active slot: run `trunkguard-update init`")?;
        }
        match &self.pending {
            Some(p) => writeln!(
                f,
                "pending: {} in slot {} (from {}), not confirmed yet",
                p.version, p.to, p.from
            )?,
            None => writeln!(f, "pending: none")?,
        }
        match &self.last {
            Some(r) => {
                write!(f, "last: {} {} {}", r.time, r.action, r.result)?;
                if let Some(v) = &r.version {
                    write!(f, " {v}")?;
                }
                if let (Some(a), Some(b)) = (&r.from, &r.to) {
                    write!(f, " ({a} -> {b})")?;
                }
                if let Some(reason) = &r.reason {
                    write!(f, ": {reason}")?;
                }
                writeln!(f)
            }
            None => writeln!(f, "last: no update recorded"),
        }
    }
}
