//! `trunkguard-update bundle`: the binary and the firmware files it carries (prompts, the
//! example configuration, systemd units) into one signed-or-not `.tgu` file plus its
//! `.sha256` sidecar.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use super::sha256_of;
use crate::update::manifest::{self, FileEntry, Manifest, MODE_EXEC, MODE_FILE};
use crate::update::sign::{with_suffix, SigningKey};
use crate::update::UpdateError;

/// What goes into a bundle.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    pub binary: PathBuf,
    /// The repository's `firmware/` directory, if its files ride along.
    pub firmware: Option<PathBuf>,
    pub version: String,
    pub arch: String,
    pub sign: Option<PathBuf>,
}

/// A bundle written.
#[derive(Debug, Clone)]
pub struct Made {
    pub path: PathBuf,
    pub sidecar: PathBuf,
    pub sha256: String,
    pub manifest: Manifest,
}

/// One payload file: where it comes from and where it goes in the slot.
struct Payload {
    source: PathBuf,
    path: String,
    mode: u32,
}

/// Writes the bundle to `out` (through a temporary file) and `out.sha256`.
pub fn make(spec: &BundleSpec, out: &Path) -> Result<Made, UpdateError> {
    let key = spec.sign.as_deref().map(SigningKey::load).transpose()?;
    let payload = payload(spec)?;
    let mut files = Vec::with_capacity(payload.len());
    for p in &payload {
        let f = File::open(&p.source).map_err(UpdateError::io(&p.source))?;
        let (sha256, size) = sha256_of(BufReader::new(f)).map_err(UpdateError::io(&p.source))?;
        files.push(FileEntry { path: p.path.clone(), size, mode: p.mode, sha256 });
    }
    let manifest = Manifest {
        format: manifest::FORMAT,
        version: spec.version.clone(),
        arch: spec.arch.clone(),
        files,
    };
    manifest.validate().map_err(UpdateError::Usage)?;
    let manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| UpdateError::Usage(e.to_string()))?;
    let signature = key.map(|k| k.sign_hex(&manifest_bytes));

    let tmp = with_suffix(out, ".tmp");
    let written = write_archive(&tmp, &manifest_bytes, signature.as_deref(), &payload);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).map_err(UpdateError::io(out))?;
    let sha256 = super::sha256_file(out).map_err(UpdateError::io(out))?;
    let sidecar = with_suffix(out, ".sha256");
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    std::fs::write(&sidecar, format!("{sha256}  {name}\n")).map_err(UpdateError::io(&sidecar))?;
    Ok(Made { path: out.to_path_buf(), sidecar, sha256, manifest })
}

fn write_archive(
    tmp: &Path,
    manifest: &[u8],
    signature: Option<&str>,
    payload: &[Payload],
) -> Result<(), UpdateError> {
    let io = UpdateError::io(tmp);
    let inner = || -> std::io::Result<()> {
        let file = File::create(tmp)?;
        let gz = GzEncoder::new(BufWriter::new(file), Compression::default());
        let mut tar = tar::Builder::new(gz);
        append(&mut tar, manifest::MANIFEST, MODE_FILE, manifest.len() as u64, manifest)?;
        if let Some(sig) = signature {
            let line = format!("{sig}\n");
            append(&mut tar, manifest::SIGNATURE, MODE_FILE, line.len() as u64, line.as_bytes())?;
        }
        for p in payload {
            let f = File::open(&p.source)?;
            let size = f.metadata()?.len();
            append(&mut tar, &p.path, p.mode, size, BufReader::new(f))?;
        }
        let gz = tar.into_inner()?;
        let file = gz.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    };
    inner().map_err(io)
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    size: u64,
    data: impl std::io::Read,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    tar.append_data(&mut header, path, data)
}

/// The binary, then the firmware files the slot carries.
fn payload(spec: &BundleSpec) -> Result<Vec<Payload>, UpdateError> {
    let mut out = vec![Payload {
        source: spec.binary.clone(),
        path: manifest::BINARY.to_owned(),
        mode: MODE_EXEC,
    }];
    let Some(fw) = &spec.firmware else { return Ok(out) };
    for (dir, ext, into) in
        [("prompts", "wav", "share/prompts"), ("systemd", "service", "share/systemd")]
    {
        for source in files_with_ext(&fw.join(dir), ext)? {
            let name =
                source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            out.push(Payload { source, path: format!("{into}/{name}"), mode: MODE_FILE });
        }
    }
    let example = fw.join("etc/trunkguard/trunkguard.toml");
    if example.is_file() {
        out.push(Payload {
            source: example,
            path: "share/trunkguard.toml.example".to_owned(),
            mode: MODE_FILE,
        });
    }
    Ok(out)
}

/// Regular files in `dir` ending in `.ext`, sorted (none when `dir` does not exist).
fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, UpdateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(UpdateError::Io { path: dir.to_path_buf(), source: e }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(UpdateError::io(dir))?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == ext) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
