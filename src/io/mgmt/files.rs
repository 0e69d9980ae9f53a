//! Files of the state directory written atomically (temporary file, fsync, rename), with
//! owner-only permissions for secrets.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Permissions of a secret (password hash, private key).
pub const PRIVATE: u32 = 0o600;
/// Permissions of a public file (certificate).
pub const PUBLIC: u32 = 0o644;

/// Creates `dir` (and its parents) if missing, owner-only when it is new.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Replaces `dir/name` with `bytes` atomically: readers see the old file or the new one, and
/// the new one never exists with wider permissions than `mode`.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> io::Result<PathBuf> {
    ensure_dir(dir)?;
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    // A leftover from a crash may have other permissions: never reuse it.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let result = write_new(&tmp, bytes, mode).and_then(|()| fs::rename(&tmp, &target));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // The rename is durable once the directory is synced; failing that is not an error.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(target)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("state");
        let p = write_atomic(&sub, "secret", b"one", PRIVATE).unwrap();
        let p2 = write_atomic(&sub, "secret", b"two", PRIVATE).unwrap();
        assert_eq!(p, p2);
        assert_eq!(fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(fs::metadata(&sub).unwrap().permissions().mode() & 0o777, 0o700);
        }
        // no temporary file left behind
        assert_eq!(fs::read_dir(&sub).unwrap().count(), 1);
    }
}
