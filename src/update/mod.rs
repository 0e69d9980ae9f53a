//! `trunkguard-update`: A/B updates of the software on the box (`docs/updates.md`).
//!
//! - [`manifest`]: what a bundle declares (version, arch, sha256 of each payload file) and the
//!   rules its paths and modes obey.
//! - [`sign`]: ed25519 keys and signatures of the manifest (ring).
//! - [`bundle`]: making a bundle (`bundle`), and reading one: whole-file checksum, manifest,
//!   signature, every entry checked before anything is written.
//! - [`layout`]: the two slots under `<root>/opt/trunkguard/slots/{a,b}`, the `current` symlink
//!   switched atomically, the pending marker and the lock of the state directory.
//! - [`log`]: the JSON-lines update log.
//! - [`probe`]: the `/readyz` probe (plain HTTP on loopback) and the restart command.
//! - [`policy`]: the A/B update policy, sans-IO (`now` passed in): switch, restart, probe,
//!   confirm or roll back.
//! - [`run`]: `install`, `confirm`, `rollback`, `init` and `status`, driving [`policy`].

pub mod bundle;
pub mod layout;
pub mod log;
pub mod manifest;
pub mod policy;
pub mod probe;
pub mod run;
pub mod sign;
pub mod spawn;

use std::path::PathBuf;

use thiserror::Error;

/// Why an update command failed.
#[derive(Debug, Error)]
pub enum UpdateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("refused: {path}: no checksum: {sidecar} is missing (or pass --sha256)")]
    NoChecksum { path: PathBuf, sidecar: PathBuf },
    #[error(
        "refused: {path}: checksum mismatch: expected sha256 {expected}, the file has {actual}"
    )]
    Checksum { path: PathBuf, expected: String, actual: String },
    #[error("refused: {path}: {reason}")]
    Bundle { path: PathBuf, reason: String },
    #[error("refused: {path}: signature: {reason}")]
    Signature { path: PathBuf, reason: String },
    #[error("{0}")]
    Key(String),
    #[error("another trunkguard-update is running ({0} is locked)")]
    Busy(PathBuf),
    #[error("an update is waiting for confirmation (marker {0}): run `trunkguard-update confirm` or `trunkguard-update rollback` first")]
    Pending(PathBuf),
    #[error("no slots under {0}: the box was not set up with `trunkguard-update init`")]
    NotInitialized(PathBuf),
    #[error("{0} already exists: the slots are set up (use --force to set them up again)")]
    AlreadyInitialized(PathBuf),
    #[error("slot {0} holds no complete version: nothing to roll back to")]
    EmptySlot(String),
    #[error("{0}")]
    Usage(String),
    #[error("rolled back: {reason}{}", if *previous_ready { "; the previous version is ready again" } else { "; the previous version is NOT ready either" })]
    RolledBack { reason: String, previous_ready: bool },
}

impl UpdateError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> UpdateError {
        let path = path.into();
        move |source| UpdateError::Io { path, source }
    }

    /// A bundle or request refused before anything on the box changed.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            UpdateError::NoChecksum { .. }
                | UpdateError::Checksum { .. }
                | UpdateError::Bundle { .. }
                | UpdateError::Signature { .. }
                | UpdateError::Usage(_)
        )
    }
}
