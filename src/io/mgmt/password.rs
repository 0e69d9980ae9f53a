//! The admin password: an argon2id hash (PHC string) in `<state dir>/admin-password.argon2`,
//! mode 0600, written by `trunkguard set-password`. There is no default password.

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use thiserror::Error;

use super::files;

/// File name of the hash inside the state directory.
pub const PASSWORD_FILE: &str = "admin-password.argon2";
/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password accepted, in bytes (argon2 takes any length; this bounds the work).
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, Error)]
pub enum PasswordError {
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("the password must have at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("no password given (expected one line on standard input)")]
    Missing,
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("{path}: not an argon2 password hash ({reason}); set it again with `trunkguard set-password`")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A verified-format password hash (PHC string, e.g. `$argon2id$v=19$m=19456,t=2,p=1$...`).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminPassword {
    phc: String,
}

impl std::fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminPassword(..)")
    }
}

impl AdminPassword {
    /// Hashes `password` (argon2id, default parameters, random salt) after the length checks.
    pub fn hash(password: &str) -> Result<AdminPassword, PasswordError> {
        Self::hash_with(password, &Argon2::default())
    }

    fn hash_with(password: &str, argon: &Argon2<'_>) -> Result<AdminPassword, PasswordError> {
        check_strength(password)?;
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let phc = argon
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| PasswordError::Hash(e.to_string()))?
            .to_string();
        Ok(AdminPassword { phc })
    }

    /// A cheap hash (minimal memory and passes) so unit tests stay fast.
    #[cfg(test)]
    pub(crate) fn hash_for_tests(password: &str) -> AdminPassword {
        let params = argon2::Params::new(argon2::Params::MIN_M_COST, 1, 1, None).unwrap();
        let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        Self::hash_with(password, &argon).unwrap()
    }

    /// Parses a stored PHC string.
    pub fn parse(phc: &str) -> Result<AdminPassword, String> {
        let phc = phc.trim();
        let parsed = PasswordHash::new(phc).map_err(|e| e.to_string())?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err(format!("algorithm {} is not argon2", parsed.algorithm));
        }
        Ok(AdminPassword { phc: phc.to_owned() })
    }

    /// Whether `candidate` is the password. Slow by design (argon2); the comparison of the
    /// derived hashes is constant-time.
    pub fn verify(&self, candidate: &str) -> bool {
        if candidate.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        match PasswordHash::new(&self.phc) {
            Ok(parsed) => Argon2::default().verify_password(candidate.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        }
    }

    pub fn phc(&self) -> &str {
        &self.phc
    }
}

/// The rules a new password must follow (length), without hashing it.
pub fn check_rules(password: &str) -> Result<(), PasswordError> {
    check_strength(password)
}

fn check_strength(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// Where the hash lives in `state_dir`.
pub fn password_path(state_dir: &Path) -> PathBuf {
    state_dir.join(PASSWORD_FILE)
}

/// The stored password, or `None` when none was ever set.
pub fn load(state_dir: &Path) -> Result<Option<AdminPassword>, PasswordError> {
    let path = password_path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PasswordError::Io { path, source }),
    };
    warn_if_readable_by_others(&path);
    AdminPassword::parse(&text).map(Some).map_err(|reason| PasswordError::Corrupt { path, reason })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the admin password hash is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

/// Writes the hash to `state_dir` (atomically, mode 0600); returns the file's path.
pub fn store(state_dir: &Path, password: &AdminPassword) -> Result<PathBuf, PasswordError> {
    let mut text = password.phc.clone();
    text.push('\n');
    files::write_atomic(state_dir, PASSWORD_FILE, text.as_bytes(), files::PRIVATE)
        .map_err(|source| PasswordError::Io { path: password_path(state_dir), source })
}

/// The password as typed: the first line of `input`, without its line ending.
pub fn read_line(mut input: impl BufRead) -> Result<String, PasswordError> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|source| PasswordError::Io { path: PathBuf::from("<stdin>"), source })?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(PasswordError::Missing);
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_the_password() {
        let h = AdminPassword::hash_for_tests("correct horse battery");
        assert!(h.phc().starts_with("$argon2id$"));
        assert!(h.verify("correct horse battery"));
        assert!(!h.verify("correct horse batterY"));
        assert!(!h.verify(""));
        assert_eq!(format!("{h:?}"), "AdminPassword(..)");
    }

    #[test]
    fn short_and_long_passwords_are_refused() {
        assert!(matches!(AdminPassword::hash("elevenchars"), Err(PasswordError::TooShort)));
        // twelve characters, fewer would-be bytes check: multibyte chars count as one
        assert!(matches!(AdminPassword::hash("ééééééééééé"), Err(PasswordError::TooShort)));
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(
            AdminPassword::hash_with(&long, &Argon2::default()),
            Err(PasswordError::TooLong)
        ));
    }

    #[test]
    fn store_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let h = AdminPassword::hash_for_tests("twelve chars!");
        let path = store(dir.path(), &h).unwrap();
        assert_eq!(path, dir.path().join(PASSWORD_FILE));
        let loaded = load(dir.path()).unwrap().unwrap();
        assert!(loaded.verify("twelve chars!"));
        std::fs::write(&path, "not a hash").unwrap();
        assert!(matches!(load(dir.path()), Err(PasswordError::Corrupt { .. })));
    }

    #[test]
    fn reads_one_line() {
        assert_eq!(read_line("secret pass 1\r\nmore".as_bytes()).unwrap(), "secret pass 1");
        assert_eq!(read_line("  spaces kept  ".as_bytes()).unwrap(), "  spaces kept  ");
        assert!(matches!(read_line("".as_bytes()), Err(PasswordError::Missing)));
        assert!(matches!(read_line("\n".as_bytes()), Err(PasswordError::Missing)));
    }
}
