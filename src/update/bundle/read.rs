//! Reading a bundle on the box, hostile input in mind: the whole file's sha256 against its
//! sidecar, then one pass over the archive that accepts only regular files, `manifest.json`
//! first (bounded, parsed, its architecture checked), the signature next (required when a
//! public key is configured), and then only the payload files the manifest lists, each once,
//! with the listed size and sha256. Any other entry (a `..` path, an absolute path, a link, a
//! device, a file the manifest does not name) refuses the whole bundle. The same pass runs
//! first without writing anything ([`verify`]) and then to unpack into an empty staging
//! directory ([`unpack`]), so a bad bundle never leaves a file behind.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::HashingWriter;
use crate::update::manifest::{self, Manifest};
use crate::update::sign::{with_suffix, PublicKey};
use crate::update::UpdateError;

/// What the checks found.
#[derive(Debug, Clone)]
pub struct Checked {
    pub manifest: Manifest,
    /// Whether the signature was verified against a configured key.
    pub signature_verified: bool,
}

/// Checks the whole file's sha256: `expected` (hex) if given, else the first word of the
/// sidecar `FILE.sha256`. Returns the sha256.
pub fn check_checksum(bundle: &Path, expected: Option<&str>) -> Result<String, UpdateError> {
    let expected = match expected {
        Some(e) => e.trim().to_ascii_lowercase(),
        None => {
            let sidecar = with_suffix(bundle, ".sha256");
            let text = match std::fs::read_to_string(&sidecar) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(UpdateError::NoChecksum { path: bundle.to_path_buf(), sidecar })
                }
                Err(source) => return Err(UpdateError::Io { path: sidecar, source }),
            };
            text.split_whitespace().next().unwrap_or_default().to_ascii_lowercase()
        }
    };
    let actual = super::sha256_file(bundle).map_err(UpdateError::io(bundle))?;
    if expected != actual {
        return Err(UpdateError::Checksum { path: bundle.to_path_buf(), expected, actual });
    }
    Ok(actual)
}

/// Every check, writing nothing.
pub fn verify(bundle: &Path, key: Option<&PublicKey>, arch: &str) -> Result<Checked, UpdateError> {
    walk(bundle, key, arch, None)
}

/// Every check again while writing the payload and `manifest.json` into `dest` (which must be
/// an empty directory); files are synced.
pub fn unpack(
    bundle: &Path,
    key: Option<&PublicKey>,
    arch: &str,
    dest: &Path,
) -> Result<Checked, UpdateError> {
    walk(bundle, key, arch, Some(dest))
}

/// The state of one pass.
struct Walk<'a> {
    bundle: &'a Path,
    key: Option<&'a PublicKey>,
    arch: &'a str,
    dest: Option<&'a Path>,
    manifest: Option<(Manifest, Vec<u8>)>,
    signature: Option<Vec<u8>>,
    signature_checked: bool,
    signature_verified: bool,
    seen: HashSet<String>,
}

fn walk(
    bundle: &Path,
    key: Option<&PublicKey>,
    arch: &str,
    dest: Option<&Path>,
) -> Result<Checked, UpdateError> {
    let mut w = Walk {
        bundle,
        key,
        arch,
        dest,
        manifest: None,
        signature: None,
        signature_checked: false,
        signature_verified: false,
        seen: HashSet::new(),
    };
    let mut archive = tar::Archive::new(open(bundle)?);
    let entries = archive.entries().map_err(|e| w.bad(format!("not a tar archive: {e}")))?;
    for (index, entry) in entries.enumerate() {
        if index > manifest::MAX_FILES + 2 {
            return Err(w.bad(format!("more than {} entries", manifest::MAX_FILES + 2)));
        }
        let entry = entry.map_err(|e| w.bad(format!("damaged archive: {e}")))?;
        w.entry(index, entry)?;
    }
    w.finish()
}

impl Walk<'_> {
    fn bad(&self, reason: String) -> UpdateError {
        UpdateError::Bundle { path: self.bundle.to_path_buf(), reason }
    }

    fn entry<R: Read>(
        &mut self,
        index: usize,
        mut entry: tar::Entry<'_, R>,
    ) -> Result<(), UpdateError> {
        let path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| self.bad("an entry name is not UTF-8".to_owned()))?;
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(self.bad(format!("entry {path:?} is a {kind:?}, not a regular file")));
        }
        if index == 0 {
            return self.read_manifest(&path, &mut entry);
        }
        if index == 1 && path == manifest::SIGNATURE {
            let sig = read_bounded(&mut entry, manifest::MAX_SIGNATURE_BYTES)
                .map_err(|e| self.bad(format!("{}: {e}", manifest::SIGNATURE)))?;
            self.signature = Some(sig);
            return Ok(());
        }
        self.check_signature()?;
        self.payload(&path, &mut entry)
    }

    fn read_manifest(&mut self, path: &str, entry: &mut impl Read) -> Result<(), UpdateError> {
        if path != manifest::MANIFEST {
            return Err(
                self.bad(format!("the first entry is {path:?}, not {}", manifest::MANIFEST))
            );
        }
        let bytes = read_bounded(entry, manifest::MAX_MANIFEST_BYTES)
            .map_err(|e| self.bad(format!("{path}: {e}")))?;
        let m = Manifest::parse(&bytes).map_err(|e| self.bad(e))?;
        if m.arch != self.arch {
            return Err(self.bad(format!("built for {}, this box is {}", m.arch, self.arch)));
        }
        self.manifest = Some((m, bytes));
        Ok(())
    }

    /// Once, before the first payload file (or at the end).
    fn check_signature(&mut self) -> Result<(), UpdateError> {
        if self.signature_checked {
            return Ok(());
        }
        self.signature_checked = true;
        let Some(key) = self.key else { return Ok(()) };
        let Some((_, bytes)) = &self.manifest else { return Ok(()) };
        let path = self.bundle.to_path_buf();
        let Some(sig) = &self.signature else {
            let reason =
                format!("a public key is configured and the bundle has no {}", manifest::SIGNATURE);
            return Err(UpdateError::Signature { path, reason });
        };
        key.verify(bytes, sig).map_err(|reason| UpdateError::Signature { path, reason })?;
        self.signature_verified = true;
        Ok(())
    }

    fn payload(
        &mut self,
        path: &str,
        entry: &mut tar::Entry<'_, impl Read>,
    ) -> Result<(), UpdateError> {
        manifest::check_path(path).map_err(|e| self.bad(format!("unsafe entry: {e}")))?;
        let Some((m, _)) = &self.manifest else { return Err(self.bad("no manifest".to_owned())) };
        let Some(listed) = m.file(path).cloned() else {
            return Err(self.bad(format!("entry {path:?} is not listed in the manifest")));
        };
        if !self.seen.insert(path.to_owned()) {
            return Err(self.bad(format!("entry {path:?} appears twice")));
        }
        if entry.size() != listed.size {
            return Err(self.bad(format!(
                "{path}: {} bytes, the manifest says {}",
                entry.size(),
                listed.size
            )));
        }
        let (sha256, written) = match self.dest {
            Some(dest) => write_file(&dest.join(path), listed.mode, entry, listed.size)
                .map_err(|e| UpdateError::Io { path: dest.join(path), source: e })?,
            None => copy_hashed(entry, io::sink(), listed.size)
                .map_err(|e| self.bad(format!("{path}: {e}")))?,
        };
        if written != listed.size || sha256 != listed.sha256 {
            return Err(self.bad(format!(
                "{path}: sha256 {sha256} ({written} bytes) does not match the manifest"
            )));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Checked, UpdateError> {
        if self.manifest.is_none() {
            return Err(self.bad(format!("empty archive (no {})", manifest::MANIFEST)));
        }
        self.check_signature()?;
        let Some((m, bytes)) = self.manifest.take() else {
            return Err(self.bad("no manifest".to_owned()));
        };
        if let Some(missing) = m.files.iter().find(|f| !self.seen.contains(&f.path)) {
            return Err(self
                .bad(format!("{} is listed in the manifest but not in the bundle", missing.path)));
        }
        if let Some(dest) = self.dest {
            let path = dest.join(manifest::MANIFEST);
            write_file(&path, manifest::MODE_FILE, &mut bytes.as_slice(), bytes.len() as u64)
                .map_err(|source| UpdateError::Io { path, source })?;
            sync_dirs(dest, &m).map_err(UpdateError::io(dest))?;
        }
        Ok(Checked { manifest: m, signature_verified: self.signature_verified })
    }
}

/// The bundle, gunzipped when it starts with the gzip magic.
fn open(bundle: &Path) -> Result<Box<dyn Read>, UpdateError> {
    let mut file = BufReader::new(File::open(bundle).map_err(UpdateError::io(bundle))?);
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(UpdateError::io(bundle))?;
    let head = io::Cursor::new(magic[..n].to_vec());
    let whole = head.chain(file);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(GzDecoder::new(whole)))
    } else {
        Ok(Box::new(whole))
    }
}

fn read_bounded(r: &mut impl Read, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    r.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

/// Copies at most `size + 1` bytes (one more reveals a lie); returns sha256 and count.
fn copy_hashed<W: Write>(r: &mut impl Read, w: W, size: u64) -> io::Result<(String, u64)> {
    let mut hw = HashingWriter::new(w);
    io::copy(&mut r.take(size + 1), &mut hw)?;
    hw.flush()?;
    let (_, sha, n) = hw.finish_hex();
    Ok((sha, n))
}

/// A new file (never an existing one) with `mode`, synced.
fn write_file(path: &Path, mode: u32, r: &mut impl Read, size: u64) -> io::Result<(String, u64)> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let file = options.open(path)?;
    let mut out = io::BufWriter::new(file);
    let result = copy_hashed(r, &mut out, size)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(result)
}

/// Syncs `dest` and every directory the payload created in it.
fn sync_dirs(dest: &Path, m: &Manifest) -> io::Result<()> {
    let mut dirs: Vec<PathBuf> =
        m.files.iter().filter_map(|f| dest.join(&f.path).parent().map(Path::to_path_buf)).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs.iter().rev() {
        File::open(dir)?.sync_all()?;
    }
    File::open(dest)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::bundle::make::{make, BundleSpec};
    use crate::update::sign::{self, SigningKey};

    const ARCH: &str = std::env::consts::ARCH;

    fn bundle(dir: &Path, sign: Option<PathBuf>) -> PathBuf {
        let bin = dir.join("trunkguard");
        std::fs::write(&bin, b"#!/bin/sh\necho hello\n").unwrap();
        let fw = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware");
        let spec = BundleSpec {
            binary: bin,
            firmware: Some(fw),
            version: "9.9.9".into(),
            arch: ARCH.into(),
            sign,
        };
        let out = dir.join("update.tgu");
        make(&spec, &out).unwrap();
        out
    }

    #[test]
    fn a_made_bundle_verifies_and_unpacks() {
        let dir = tempfile::tempdir().unwrap();
        let b = bundle(dir.path(), None);
        let sha = check_checksum(&b, None).unwrap();
        assert_eq!(check_checksum(&b, Some(&sha.to_uppercase())).unwrap(), sha);
        let checked = verify(&b, None, ARCH).unwrap();
        assert_eq!(checked.manifest.version, "9.9.9");
        assert!(!checked.signature_verified);
        assert!(checked.manifest.file("share/prompts/one-moment.wav").is_some());
        assert!(checked.manifest.file("share/trunkguard.toml.example").is_some());
        let dest = dir.path().join("slot");
        std::fs::create_dir(&dest).unwrap();
        unpack(&b, None, ARCH, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("bin/trunkguard")).unwrap(), b"#!/bin/sh\necho hello\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(dest.join("bin/trunkguard")).unwrap().permissions().mode()
                    & 0o777,
                0o755
            );
        }
        assert!(Manifest::parse(&std::fs::read(dest.join("manifest.json")).unwrap()).is_ok());
        assert!(
            matches!(verify(&b, None, "sparc"), Err(UpdateError::Bundle { reason, .. }) if reason.contains("built for"))
        );
    }

    #[test]
    fn checksum_mismatch_and_missing_sidecar_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let b = bundle(dir.path(), None);
        assert!(matches!(
            check_checksum(&b, Some(&"0".repeat(64))),
            Err(UpdateError::Checksum { .. })
        ));
        std::fs::remove_file(with_suffix(&b, ".sha256")).unwrap();
        assert!(matches!(check_checksum(&b, None), Err(UpdateError::NoChecksum { .. })));
    }

    #[test]
    fn signatures_are_required_once_a_key_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = sign::generate(&dir.path().join("k")).unwrap();
        let pk = PublicKey::load(&public).unwrap();
        let signed_dir = dir.path().join("signed");
        std::fs::create_dir(&signed_dir).unwrap();
        let signed = bundle(&signed_dir, Some(secret));
        assert!(verify(&signed, Some(&pk), ARCH).unwrap().signature_verified);
        assert!(!verify(&signed, None, ARCH).unwrap().signature_verified);
        // unsigned with a key configured
        let unsigned = bundle(dir.path(), None);
        let err = verify(&unsigned, Some(&pk), ARCH).unwrap_err();
        assert!(
            matches!(&err, UpdateError::Signature { reason, .. } if reason.contains("no manifest.sig")),
            "{err}"
        );
        // signed by another key
        let other = SigningKey::from_seed(&[3u8; 32]).unwrap().public();
        assert!(matches!(verify(&signed, Some(&other), ARCH), Err(UpdateError::Signature { .. })));
    }

    /// A raw tar entry with any name (the tar crate's builder refuses `..`).
    fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, data: &[u8]) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn hostile(dir: &Path, entries: &[(&str, tar::EntryType, &[u8])]) -> PathBuf {
        let bin = b"#!/bin/sh\n";
        let m = Manifest {
            format: 1,
            version: "6.6.6".into(),
            arch: ARCH.into(),
            files: vec![manifest::FileEntry {
                path: "bin/trunkguard".into(),
                size: bin.len() as u64,
                mode: 0o755,
                sha256: super::super::sha256_of(&bin[..]).unwrap().0,
            }],
        };
        let mut tar = Vec::new();
        raw_entry(
            &mut tar,
            "manifest.json",
            tar::EntryType::Regular,
            &serde_json::to_vec(&m).unwrap(),
        );
        for (name, kind, data) in entries {
            raw_entry(&mut tar, name, *kind, data);
        }
        tar.extend_from_slice(&[0u8; 1024]);
        let path = dir.join("hostile.tar");
        std::fs::write(&path, tar).unwrap();
        path
    }

    #[test]
    fn hostile_entries_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let reg = tar::EntryType::Regular;
        let bin: &[u8] = b"#!/bin/sh\n";
        let good = hostile(dir.path(), &[("bin/trunkguard", reg, bin)]);
        assert!(verify(&good, None, ARCH).is_ok(), "plain tar accepted too");
        type Entries<'a> = &'a [(&'a str, tar::EntryType, &'a [u8])];
        let cases: [(Entries, &str); 7] = [
            (&[("../evil", reg, b"x"), ("bin/trunkguard", reg, bin)], "unsafe entry"),
            (&[("bin/../../evil", reg, b"x")], "unsafe entry"),
            (&[("/etc/evil", reg, b"x")], "unsafe entry"),
            (&[("bin/trunkguard", tar::EntryType::Symlink, b"")], "Symlink"),
            (&[("share/extra", reg, b"x"), ("bin/trunkguard", reg, bin)], "not listed"),
            (&[("bin/trunkguard", reg, b"#!/bin/sh\nrm -rf /\n")], "bytes, the manifest says"),
            (&[], "not in the bundle"),
        ];
        for (entries, expect) in cases {
            let b = hostile(dir.path(), entries);
            let dest = dir.path().join("dest");
            std::fs::create_dir_all(&dest).unwrap();
            let err = verify(&b, None, ARCH).unwrap_err();
            assert!(err.to_string().contains(expect), "{entries:?}: {err}");
            assert!(err.is_refusal());
            assert!(unpack(&b, None, ARCH, &dest).is_err());
            std::fs::remove_dir_all(&dest).unwrap();
        }
        assert!(
            !dir.path().join("evil").exists()
                && !dir.path().parent().unwrap().join("evil").exists()
        );
        // garbage, empty, and a manifest that is not first
        std::fs::write(dir.path().join("junk"), b"\x1f\x8bnot gzip at all").unwrap();
        assert!(verify(&dir.path().join("junk"), None, ARCH).is_err());
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        assert!(verify(&dir.path().join("empty"), None, ARCH)
            .unwrap_err()
            .to_string()
            .contains("empty archive"));
        let mut tar = Vec::new();
        raw_entry(&mut tar, "bin/trunkguard", reg, bin);
        std::fs::write(dir.path().join("nomanifest"), tar).unwrap();
        assert!(verify(&dir.path().join("nomanifest"), None, ARCH)
            .unwrap_err()
            .to_string()
            .contains("first entry"));
    }
}
