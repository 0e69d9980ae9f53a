//! `wss://` for the simulator: a rustls server configuration from PEM files (certificate chain
//! and private key), with the ring provider.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

/// Why the PEM files cannot serve TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}: no certificate found")]
    NoCert(String),
    #[error("{0}: no private key found")]
    NoKey(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn open(path: &Path) -> Result<BufReader<File>, TlsError> {
    let read = |source| TlsError::Read { path: path.display().to_string(), source };
    File::open(path).map(BufReader::new).map_err(read)
}

/// A server configuration serving the chain in `cert` with the key in `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| TlsError::Read { path, source }
    };
    let chain = rustls_pemfile::certs(&mut open(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(cert.display().to_string()));
    }
    let private = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(read_err(key))?
        .ok_or_else(|| TlsError::NoKey(key.display().to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private)?;
    Ok(Arc::new(config))
}
