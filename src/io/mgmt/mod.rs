//! Management security of the status server, outside HTTP: where the state directory is,
//! the admin password file, the rule that a non-loopback `status.listen` needs a password,
//! the HTTPS certificate (files or self-signed) and listener, and the pure session and
//! lockout bookkeeping used by `io::http::auth`; `first_boot` sets the password and the
//! certificate up once on the console.

pub mod cert;
pub mod files;
pub mod first_boot;
pub mod https;
pub mod lockout;
pub mod password;
pub mod sessions;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

use crate::config::{StatusConfig, StatusTls};
use crate::io::http::auth::Auth;
use crate::io::tls::{self, TlsSetupError};

pub use password::AdminPassword;

/// State directory when neither the configuration, a flag nor `STATE_DIRECTORY` names one.
pub const DEFAULT_STATE_DIR: &str = "./trunkguard-state";

#[derive(Debug, Error)]
pub enum MgmtError {
    #[error(
        "status.listen = \"{listen}\" is not a loopback address: management from the network needs an admin \
         password, and none is set (expected {path}); run `trunkguard set-password` first, or listen on 127.0.0.1"
    )]
    ListenNeedsPassword { listen: SocketAddr, path: PathBuf },
    #[error(transparent)]
    Password(#[from] password::PasswordError),
    #[error("status.tls: {0}")]
    Cert(#[from] cert::CertError),
    #[error("status.tls: {0}")]
    Tls(#[from] TlsSetupError),
}

impl MgmtError {
    /// Errors the operator fixes in the configuration or with `set-password` (exit code 2).
    pub fn is_config(&self) -> bool {
        matches!(self, MgmtError::ListenNeedsPassword { .. } | MgmtError::Tls(_))
    }
}

/// The state directory: `config_override` (`[state] dir` or `--state-dir`), else the first
/// entry of `$STATE_DIRECTORY` (systemd `StateDirectory=`), else `./trunkguard-state`.
pub fn state_dir(config_override: Option<&Path>) -> PathBuf {
    state_dir_from(config_override, std::env::var_os("STATE_DIRECTORY"))
}

fn state_dir_from(config_override: Option<&Path>, env: Option<OsString>) -> PathBuf {
    if let Some(dir) = config_override {
        return dir.to_path_buf();
    }
    let from_env = env.and_then(|v| {
        let v = v.to_string_lossy().into_owned();
        v.split(':').next().filter(|s| !s.is_empty()).map(PathBuf::from)
    });
    from_env.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// Listening beyond loopback requires an admin password; there is no default password.
pub fn check_listen(
    listen: SocketAddr,
    password: Option<&AdminPassword>,
    password_path: &Path,
) -> Result<(), MgmtError> {
    if listen.ip().to_canonical().is_loopback() || password.is_some() {
        return Ok(());
    }
    Err(MgmtError::ListenNeedsPassword { listen, path: password_path.to_path_buf() })
}

/// Everything the status server needs for management, prepared before the runtime starts.
#[derive(Debug, Clone)]
pub struct Management {
    pub state_dir: PathBuf,
    pub password: Option<AdminPassword>,
    /// HTTPS when `[status] tls` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Management {
    /// Loads the password, applies the loopback rule and prepares TLS (generating the
    /// self-signed certificate on first use).
    pub fn prepare(status: &StatusConfig, state_dir: &Path) -> Result<Management, MgmtError> {
        let password = password::load(state_dir)?;
        check_listen(status.listen, password.as_ref(), &password::password_path(state_dir))?;
        let tls = match &status.tls {
            None => None,
            Some(StatusTls::SelfSigned) => {
                let files = cert::self_signed(state_dir, status.listen.ip())?;
                Some(server_config(&files.cert, &files.key)?)
            }
            Some(StatusTls::Files { cert, key }) => Some(server_config(cert, key)?),
        };
        Ok(Management { state_dir: state_dir.to_path_buf(), password, tls })
    }

    /// Plain HTTP, no password: management open to the local host only.
    pub fn loopback_open() -> Management {
        Management { state_dir: PathBuf::from(DEFAULT_STATE_DIR), password: None, tls: None }
    }

    /// The HTTP side: sessions, lockout and the password.
    pub fn auth(&self) -> Arc<Auth> {
        Auth::new(self.password.clone(), self.tls.is_some())
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let files = tls::TlsFiles { cert, key, client_ca: None, require_client_cert: false };
    let base = tls::server_config(&files)?;
    Ok(https::http_server_config(&base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_precedence() {
        let dir = Path::new("/etc/override");
        assert_eq!(state_dir_from(Some(dir), Some("/var/lib/tg".into())), dir);
        assert_eq!(
            state_dir_from(None, Some("/var/lib/tg:/var/lib/other".into())),
            Path::new("/var/lib/tg")
        );
        assert_eq!(state_dir_from(None, Some("".into())), Path::new(DEFAULT_STATE_DIR));
        assert_eq!(state_dir_from(None, None), Path::new(DEFAULT_STATE_DIR));
    }

    #[test]
    fn non_loopback_listen_needs_a_password() {
        let path = Path::new("/state/admin-password.argon2");
        let pw = AdminPassword::hash_for_tests("a long password");
        for ok in ["127.0.0.1:8080", "127.1.2.3:80", "[::1]:8080", "[::ffff:127.0.0.1]:8080"] {
            assert!(check_listen(ok.parse().unwrap(), None, path).is_ok(), "{ok}");
        }
        for needs in ["0.0.0.0:8080", "[::]:8080", "192.0.2.1:8443"] {
            let err = check_listen(needs.parse().unwrap(), None, path).unwrap_err();
            assert!(err.is_config());
            let text = err.to_string();
            assert!(text.contains("status.listen") && text.contains(needs), "{text}");
            assert!(
                text.contains("set-password") && text.contains("admin-password.argon2"),
                "{text}"
            );
            assert!(check_listen(needs.parse().unwrap(), Some(&pw), path).is_ok());
        }
    }

    #[test]
    fn prepare_refuses_then_accepts_with_a_password() {
        let dir = tempfile::tempdir().unwrap();
        let mut status = StatusConfig {
            listen: "0.0.0.0:8080".parse().unwrap(),
            tls: Some(StatusTls::SelfSigned),
        };
        assert!(matches!(
            Management::prepare(&status, dir.path()),
            Err(MgmtError::ListenNeedsPassword { .. })
        ));
        assert!(!dir.path().join(cert::CERT_FILE).exists(), "nothing generated when refusing");
        password::store(dir.path(), &AdminPassword::hash_for_tests("a long password")).unwrap();
        let m = Management::prepare(&status, dir.path()).unwrap();
        assert!(m.password.is_some());
        assert_eq!(m.tls.as_ref().unwrap().alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(dir.path().join(cert::CERT_FILE).is_file());
        status.tls = Some(StatusTls::Files {
            cert: dir.path().join("missing.pem"),
            key: dir.path().join("k.pem"),
        });
        assert!(matches!(Management::prepare(&status, dir.path()), Err(MgmtError::Tls(_))));
    }
}
