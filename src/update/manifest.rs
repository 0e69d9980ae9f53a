//! The bundle's manifest (`manifest.json`, the first entry of the bundle): format, version,
//! target architecture, and every payload file with its size, mode and sha256. Its paths are
//! plain relative paths under `bin/` or `share/` (no `..`, no absolute path, a small character
//! set), so a manifest can never name a file outside its slot.

use serde::{Deserialize, Serialize};

/// The manifest's name inside the bundle (always the first entry).
pub const MANIFEST: &str = "manifest.json";
/// The detached ed25519 signature of the manifest's bytes (hex), the second entry if present.
pub const SIGNATURE: &str = "manifest.sig";
/// The one file every bundle carries.
pub const BINARY: &str = "bin/trunkguard";
/// The manifest format this updater reads.
pub const FORMAT: u32 = 1;

/// Bounds on what a bundle may hold.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
pub const MAX_SIGNATURE_BYTES: u64 = 1024;
pub const MAX_FILES: usize = 256;
pub const MAX_TOTAL_BYTES: u64 = 1 << 30;
const MAX_PATH_BYTES: usize = 200;
const MAX_VERSION_BYTES: usize = 64;

/// Modes a payload file may have (no set-id bits, nothing writable by others).
pub const MODE_EXEC: u32 = 0o755;
pub const MODE_FILE: u32 = 0o644;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub version: String,
    /// `std::env::consts::ARCH` of the binary: `x86_64` or `aarch64`.
    pub arch: String,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub mode: u32,
    /// Lower-case hex.
    pub sha256: String,
}

impl Manifest {
    /// Parses and checks a manifest (every rule of this module).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("{MANIFEST}: {e}"))?;
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "{MANIFEST}: format {} (this updater reads format {FORMAT})",
                self.format
            ));
        }
        check_version(&self.version)?;
        check_word(&self.arch).map_err(|e| format!("{MANIFEST}: arch: {e}"))?;
        if self.files.len() > MAX_FILES {
            return Err(format!("{MANIFEST}: {} files (at most {MAX_FILES})", self.files.len()));
        }
        let mut total: u64 = 0;
        for (i, f) in self.files.iter().enumerate() {
            check_path(&f.path).map_err(|e| format!("{MANIFEST}: files[{i}]: {e}"))?;
            if self.files[..i].iter().any(|g| g.path == f.path) {
                return Err(format!("{MANIFEST}: {} is listed twice", f.path));
            }
            if f.mode != MODE_EXEC && f.mode != MODE_FILE {
                return Err(format!("{MANIFEST}: {}: mode {:o} (only 755 or 644)", f.path, f.mode));
            }
            if f.sha256.len() != 64
                || !f.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!(
                    "{MANIFEST}: {}: sha256 is not 64 lower-case hex digits",
                    f.path
                ));
            }
            total = total.saturating_add(f.size);
        }
        if total > MAX_TOTAL_BYTES {
            return Err(format!(
                "{MANIFEST}: {total} bytes of payload (at most {MAX_TOTAL_BYTES})"
            ));
        }
        match self.file(BINARY) {
            Some(f) if f.mode == MODE_EXEC => Ok(()),
            Some(_) => Err(format!("{MANIFEST}: {BINARY} must have mode 755")),
            None => Err(format!("{MANIFEST}: no {BINARY}")),
        }
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}

fn check_version(v: &str) -> Result<(), String> {
    check_word(v).map_err(|e| format!("{MANIFEST}: version: {e}"))?;
    if v.len() > MAX_VERSION_BYTES {
        return Err(format!("{MANIFEST}: version longer than {MAX_VERSION_BYTES} bytes"));
    }
    Ok(())
}

/// Letters, digits and `.`, `_`, `-`, `+`; not empty, not starting with a dot.
fn check_word(w: &str) -> Result<(), String> {
    if w.is_empty() {
        return Err("empty".to_owned());
    }
    if w.starts_with('.') {
        return Err(format!("{w:?} starts with a dot"));
    }
    if let Some(c) =
        w.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')))
    {
        return Err(format!("{w:?}: character {c:?} not allowed"));
    }
    Ok(())
}

/// A payload path: `bin/...` or `share/...`, `/`-separated words (see `check_word`), no `..`.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("path longer than {MAX_PATH_BYTES} bytes"));
    }
    let mut parts = path.split('/');
    match parts.next() {
        Some("bin") | Some("share") => {}
        _ => return Err(format!("{path:?}: not under bin/ or share/")),
    }
    let mut depth = 0;
    for part in parts {
        check_word(part).map_err(|e| format!("{path:?}: {e}"))?;
        depth += 1;
    }
    if depth == 0 {
        return Err(format!("{path:?}: a directory, not a file"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            version: "1.2.3".into(),
            arch: "x86_64".into(),
            files: vec![FileEntry {
                path: BINARY.into(),
                size: 3,
                mode: MODE_EXEC,
                sha256: "ab".repeat(32),
            }],
        }
    }

    #[test]
    fn paths_stay_inside_the_slot() {
        for ok in
            ["bin/trunkguard", "share/prompts/one-moment.wav", "share/trunkguard.toml.example"]
        {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../evil",
            "bin/../../etc/passwd",
            "/bin/trunkguard",
            "bin//x",
            "bin/./x",
            "etc/passwd",
            "bin",
            "bin/",
            "share/.hidden",
            "share/a b",
            "share/x\\..\\y",
            "",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn manifests_are_checked() {
        let good = manifest();
        let bytes = serde_json::to_vec(&good).unwrap();
        assert_eq!(Manifest::parse(&bytes).unwrap(), good);
        let mut m = manifest();
        m.files[0].mode = 0o4755;
        assert!(m.validate().unwrap_err().contains("mode"));
        let mut m = manifest();
        m.files[0].path = "bin/other".into();
        assert!(m.validate().unwrap_err().contains("no bin/trunkguard"));
        let mut m = manifest();
        m.files.push(m.files[0].clone());
        assert!(m.validate().unwrap_err().contains("twice"));
        let mut m = manifest();
        m.version = "1.0; rm -rf /".into();
        assert!(m.validate().is_err());
        let mut m = manifest();
        m.format = 2;
        assert!(m.validate().unwrap_err().contains("format 2"));
        let mut m = manifest();
        m.files[0].sha256 = "AB".repeat(32);
        assert!(m.validate().is_err());
        assert!(Manifest::parse(b"{\"format\":1}").is_err());
        assert!(Manifest::parse(b"\xff\xfe").is_err());
        let extra = br#"{"format":1,"version":"1","arch":"x86_64","files":[],"extra":1}"#;
        assert!(Manifest::parse(extra).unwrap_err().contains("unknown field"));
    }
}
