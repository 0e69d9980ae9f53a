//! The self-signed certificate of `[status] tls = "self-signed"`: generated with rcgen at the
//! first start into the state directory (`cert.pem`, `key.pem` mode 0600), reused afterwards.
//! Delete both files to get a new one (for example after changing `status.listen`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::files;

pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

#[derive(Debug, Error)]
pub enum CertError {
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Paths of the certificate and key in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Whether they were generated just now.
    pub generated: bool,
}

/// The certificate in `state_dir`, generated first if either file is missing. Its names are
/// `localhost`, the loopback addresses and `listen_ip` (unless unspecified).
pub fn self_signed(state_dir: &Path, listen_ip: IpAddr) -> Result<CertFiles, CertError> {
    let cert = state_dir.join(CERT_FILE);
    let key = state_dir.join(KEY_FILE);
    if cert.is_file() && key.is_file() {
        return Ok(CertFiles { cert, key, generated: false });
    }
    let generated = rcgen::generate_simple_self_signed(subject_alt_names(listen_ip))?;
    let write = |name: &str, pem: String, mode: u32| {
        files::write_atomic(state_dir, name, pem.as_bytes(), mode)
            .map_err(|source| CertError::Write { path: state_dir.join(name), source })
    };
    // Key first: a certificate on disk always has its key.
    write(KEY_FILE, generated.key_pair.serialize_pem(), files::PRIVATE)?;
    write(CERT_FILE, generated.cert.pem(), files::PUBLIC)?;
    tracing::info!(cert = %cert.display(), "generated a self-signed certificate for the status server");
    Ok(CertFiles { cert, key, generated: true })
}

fn subject_alt_names(listen_ip: IpAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !listen_ip.is_unspecified() && !listen_ip.is_loopback() {
        names.push(listen_ip.to_string());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = self_signed(dir.path(), "192.0.2.7".parse().unwrap()).unwrap();
        assert!(first.generated);
        let pem = std::fs::read_to_string(&first.cert).unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = self_signed(dir.path(), "192.0.2.7".parse().unwrap()).unwrap();
        assert!(!second.generated);
        assert_eq!(std::fs::read_to_string(&second.cert).unwrap(), pem);
        // usable by the TLS server
        let files = crate::io::tls::TlsFiles {
            cert: &second.cert,
            key: &second.key,
            client_ca: None,
            require_client_cert: false,
        };
        assert!(crate::io::tls::server_config(&files).is_ok());
    }

    #[test]
    fn names_include_the_listen_address() {
        assert_eq!(subject_alt_names("0.0.0.0".parse().unwrap()).len(), 3);
        assert!(subject_alt_names("10.1.2.3".parse().unwrap()).contains(&"10.1.2.3".to_owned()));
    }
}
