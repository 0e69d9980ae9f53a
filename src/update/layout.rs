//! Where things are on the box, relative to a root (`/` on the box, a temporary directory in
//! tests), and the file operations that must be atomic:
//!
//! ```text
//! <root>/opt/trunkguard/slots/a/      bin/trunkguard, share/..., manifest.json
//! <root>/opt/trunkguard/slots/b/
//! <root>/opt/trunkguard/current  ->   slots/a      (relative symlink, replaced by rename)
//! <root>/var/lib/trunkguard-update/   updates.log, pending.json, lock
//! <root>/etc/trunkguard/update.pub    public key (optional: signatures required once present)
//! ```

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::{self, Manifest};
use super::UpdateError;
use crate::io::mgmt::files;
use crate::update::policy::Slot;

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

/// Written just before `current` is switched to an unconfirmed slot; removed once the update
/// is confirmed or rolled back. Found at boot, it means the box restarted in the middle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub from: String,
    pub to: String,
    pub version: String,
    pub unix_ms: u64,
}

/// Holds the update lock of the state directory until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout { root: root.to_path_buf() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn base(&self) -> PathBuf {
        self.root.join("opt/trunkguard")
    }

    pub fn slots(&self) -> PathBuf {
        self.base().join("slots")
    }

    pub fn slot(&self, slot: Slot) -> PathBuf {
        self.slots().join(slot.name())
    }

    /// Where a slot is unpacked before it replaces the slot directory.
    pub fn staging(&self, slot: Slot) -> PathBuf {
        self.slots().join(format!(".{}.new", slot.name()))
    }

    pub fn current(&self) -> PathBuf {
        self.base().join("current")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join("var/lib/trunkguard-update")
    }

    pub fn log(&self) -> PathBuf {
        self.state_dir().join("updates.log")
    }

    pub fn pending_path(&self) -> PathBuf {
        self.state_dir().join("pending.json")
    }

    pub fn default_public_key(&self) -> PathBuf {
        self.root.join("etc/trunkguard/update.pub")
    }

    pub fn default_config(&self) -> PathBuf {
        self.root.join("etc/trunkguard/trunkguard.toml")
    }

    /// The slot `current` points at; `None` before `init`.
    pub fn active(&self) -> Result<Option<Slot>, UpdateError> {
        let link = self.current();
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(UpdateError::Io { path: link, source }),
        };
        let name = target.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        Slot::parse(name).map(Some).ok_or_else(|| UpdateError::Io {
            path: link,
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("points at {}, not a slot", target.display()),
            ),
        })
    }

    /// Points `current` at `slot`: a new symlink under a temporary name renamed over the old
    /// one (readers see the old target or the new one), then the directory is synced.
    pub fn switch_to(&self, slot: Slot) -> Result<(), UpdateError> {
        let base = self.base();
        let tmp = base.join(".current.tmp");
        let inner = || -> io::Result<()> {
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            std::os::unix::fs::symlink(Path::new("slots").join(slot.name()), &tmp)?;
            fs::rename(&tmp, self.current())?;
            File::open(&base)?.sync_all()
        };
        inner().map_err(UpdateError::io(self.current()))
    }

    /// The version installed in `slot` (its `manifest.json`), if the slot is complete.
    pub fn slot_manifest(&self, slot: Slot) -> Option<Manifest> {
        let bytes = fs::read(self.slot(slot).join(manifest::MANIFEST)).ok()?;
        Manifest::parse(&bytes).ok()
    }

    /// An empty staging directory for `slot` (a leftover from a crash is removed).
    pub fn fresh_staging(&self, slot: Slot) -> Result<PathBuf, UpdateError> {
        let staging = self.staging(slot);
        remove_dir_if_exists(&staging).map_err(UpdateError::io(&staging))?;
        fs::create_dir_all(&staging).map_err(UpdateError::io(&staging))?;
        Ok(staging)
    }

    /// Replaces the slot directory with its staging directory (the slot is inactive).
    pub fn commit_staging(&self, slot: Slot) -> Result<(), UpdateError> {
        let dir = self.slot(slot);
        remove_dir_if_exists(&dir).map_err(UpdateError::io(&dir))?;
        fs::rename(self.staging(slot), &dir).map_err(UpdateError::io(&dir))?;
        File::open(self.slots()).and_then(|d| d.sync_all()).map_err(UpdateError::io(self.slots()))
    }

    pub fn discard_staging(&self, slot: Slot) {
        let _ = remove_dir_if_exists(&self.staging(slot));
    }

    pub fn pending(&self) -> Result<Option<Pending>, UpdateError> {
        let path = self.pending_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| UpdateError::Io {
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(UpdateError::Io { path, source }),
        }
    }

    pub fn set_pending(&self, pending: &Pending) -> Result<(), UpdateError> {
        let bytes = serde_json::to_vec(pending).map_err(|e| UpdateError::Usage(e.to_string()))?;
        files::write_atomic(&self.state_dir(), "pending.json", &bytes, files::PUBLIC)
            .map(|_| ())
            .map_err(UpdateError::io(self.pending_path()))
    }

    pub fn clear_pending(&self) -> Result<(), UpdateError> {
        match fs::remove_file(self.pending_path()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(UpdateError::Io { path: self.pending_path(), source: e })
            }
            _ => Ok(()),
        }
    }

    /// The exclusive lock of the state directory (refused at once when held).
    pub fn lock(&self) -> Result<Lock, UpdateError> {
        let path = self.state_dir().join("lock");
        files::ensure_dir(&self.state_dir()).map_err(UpdateError::io(self.state_dir()))?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(UpdateError::io(&path))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor this function owns; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(UpdateError::Busy(path));
        }
        Ok(Lock { _file: file })
    }
}

fn remove_dir_if_exists(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_replaces_the_link_and_a_second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        assert_eq!(l.active().unwrap(), None);
        fs::create_dir_all(l.slot(Slot::A)).unwrap();
        fs::create_dir_all(l.slot(Slot::B)).unwrap();
        l.switch_to(Slot::A).unwrap();
        assert_eq!(l.active().unwrap(), Some(Slot::A));
        l.switch_to(Slot::B).unwrap();
        assert_eq!(l.active().unwrap(), Some(Slot::B));
        assert_eq!(fs::read_link(l.current()).unwrap(), Path::new("slots/b"));
        assert!(!l.base().join(".current.tmp").exists());
        let lock = l.lock().unwrap();
        assert!(matches!(l.lock(), Err(UpdateError::Busy(_))));
        drop(lock);
        assert!(l.lock().is_ok());
        let p = Pending { from: "a".into(), to: "b".into(), version: "1".into(), unix_ms: 5 };
        assert_eq!(l.pending().unwrap(), None);
        l.set_pending(&p).unwrap();
        assert_eq!(l.pending().unwrap(), Some(p));
        l.clear_pending().unwrap();
        l.clear_pending().unwrap();
        assert_eq!(l.pending().unwrap(), None);
    }
}
