//! Ed25519 keys for update bundles (ring). Both key files are one line of lower-case hex: the
//! secret key file holds the 32-byte seed (mode 0600), the public key file the 32-byte public
//! key. The signature (64 bytes, hex) covers the exact bytes of `manifest.json`, which lists
//! the sha256 of every payload file.

use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use super::UpdateError;
use crate::io::mgmt::files;

/// A secret key that signs manifests.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// A public key that verifies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
}

impl SigningKey {
    pub fn from_seed(seed: &[u8]) -> Result<SigningKey, String> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .map(|pair| SigningKey { pair })
            .map_err(|_| "not an ed25519 seed (expected 32 bytes)".to_owned())
    }

    pub fn load(path: &Path) -> Result<SigningKey, UpdateError> {
        let seed = read_hex(path, 32)?;
        SigningKey::from_seed(&seed)
            .map_err(|e| UpdateError::Key(format!("{}: {e}", path.display())))
    }

    pub fn public(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey { bytes }
    }

    /// The signature of `message`, in hex.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        hex::encode(self.pair.sign(message).as_ref())
    }
}

impl PublicKey {
    pub fn load(path: &Path) -> Result<PublicKey, UpdateError> {
        let raw = read_hex(path, 32)?;
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&raw);
        Ok(PublicKey { bytes })
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// Checks a hex signature (surrounding white space ignored) of `message`.
    pub fn verify(&self, message: &[u8], signature_hex: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(signature_hex).map_err(|_| "not hex".to_owned())?;
        let sig = hex::decode(text.trim()).map_err(|_| "not hex".to_owned())?;
        if sig.len() != 64 {
            return Err(format!("{} bytes (an ed25519 signature has 64)", sig.len()));
        }
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(message, &sig)
            .map_err(|_| "does not match the configured public key".to_owned())
    }
}

/// Writes a new key pair: `out` (secret seed, mode 0600) and `out.pub`; returns both paths.
pub fn generate(out: &Path) -> Result<(PathBuf, PathBuf), UpdateError> {
    let mut seed = [0u8; 32];
    SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| UpdateError::Key("the system random generator failed".to_owned()))?;
    let key = SigningKey::from_seed(&seed).map_err(UpdateError::Key)?;
    let public_path = with_suffix(out, ".pub");
    let (dir, name) = split(out)?;
    let (_, pub_name) = split(&public_path)?;
    if out.exists() {
        return Err(UpdateError::Usage(format!("{} exists: not overwriting a key", out.display())));
    }
    files::write_atomic(dir, name, format!("{}\n", hex::encode(seed)).as_bytes(), files::PRIVATE)
        .map_err(UpdateError::io(out))?;
    files::write_atomic(
        dir,
        pub_name,
        format!("{}\n", key.public().to_hex()).as_bytes(),
        files::PUBLIC,
    )
    .map_err(UpdateError::io(&public_path))?;
    Ok((out.to_path_buf(), public_path))
}

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn split(path: &Path) -> Result<(&Path, &str), UpdateError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| UpdateError::Usage(format!("{}: not a file name", path.display())))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok((dir, name))
}

fn read_hex(path: &Path, len: usize) -> Result<Vec<u8>, UpdateError> {
    let text = std::fs::read_to_string(path).map_err(UpdateError::io(path))?;
    let bytes = hex::decode(text.trim())
        .map_err(|_| UpdateError::Key(format!("{}: not a hex key", path.display())))?;
    if bytes.len() != len {
        return Err(UpdateError::Key(format!(
            "{}: {} bytes (expected {len})",
            path.display(),
            bytes.len()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = generate(&dir.path().join("update.key")).unwrap();
        assert_eq!(public, dir.path().join("update.key.pub"));
        let key = SigningKey::load(&secret).unwrap();
        let pk = PublicKey::load(&public).unwrap();
        let sig = key.sign_hex(b"manifest");
        assert!(pk.verify(b"manifest", sig.as_bytes()).is_ok());
        assert!(pk.verify(b"manifesT", sig.as_bytes()).is_err());
        assert!(pk.verify(b"manifest", b"zz").is_err());
        assert!(pk.verify(b"manifest", b"abcd").unwrap_err().contains("2 bytes"));
        // a different key does not verify
        let other = SigningKey::from_seed(&[7u8; 32]).unwrap().public();
        assert!(other.verify(b"manifest", sig.as_bytes()).is_err());
        assert!(matches!(generate(&secret), Err(UpdateError::Usage(_))), "never overwrites a key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&public, "not hex\n").unwrap();
        assert!(matches!(PublicKey::load(&public), Err(UpdateError::Key(_))));
    }
}
