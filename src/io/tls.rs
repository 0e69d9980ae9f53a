//! TLS through rustls (ring): the SIP server configuration from PEM files, with optional
//! client certificate verification against a CA bundle; and the client configuration the
//! agents' WebSockets and the callback webhook share ([`client_config`]).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsSetupError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: no certificate found")]
    NoCert { path: String },
    #[error("{path}: no private key found")]
    NoKey { path: String },
    #[error("client CA {path}: {reason}")]
    ClientCa { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client configuration trusting the system's CA certificates plus those of `ca_bundles`
/// (PEM; unreadable files and bad certificates are skipped: the config checks them first).
pub fn client_config(ca_bundles: &[&Path]) -> Result<ClientConfig, rustls::Error> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for path in ca_bundles {
        if let Ok(pem) = std::fs::read(path) {
            for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The TLS files of `[sip] tls`.
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: Option<&'a Path>,
    pub require_client_cert: bool,
}

pub fn server_config(files: &TlsFiles<'_>) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs(files.cert)?;
    let key = load_key(files.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots.add(cert).map_err(|e| TlsSetupError::ClientCa {
                    path: show(ca),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier =
                if files.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier
                .build()
                .map_err(|e| TlsSetupError::ClientCa { path: show(ca), reason: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(certs, key)?))
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read { path: show(path), source })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice()).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsSetupError::NoCert { path: show(path) });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let pem = read(path)?;
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(key)) => Ok(key),
        _ => Err(TlsSetupError::NoKey { path: show(path) }),
    }
}
