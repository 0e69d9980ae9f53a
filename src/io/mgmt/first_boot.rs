//! `trunkguard first-boot`: what the site engineer does once, on the console: set the admin
//! password (typed twice, without echo on a terminal, with the rules shown), have the
//! management certificate generated into the state directory, and learn the status page's
//! address. Idempotent: a password already set and a certificate already there are kept.
//! `--password-file` is the same without questions (automation, tests).

use std::io::{self, BufRead, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::cert::{self, CertError, CertFiles};
use super::password::{self, AdminPassword, PasswordError, MIN_PASSWORD_CHARS};
use crate::config::StatusConfig;

/// How many times a mismatch or a refused password may be typed again.
pub const ATTEMPTS: usize = 3;

#[derive(Debug, Error)]
pub enum FirstBootError {
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("the two passwords did not match {ATTEMPTS} times; run `trunkguard first-boot` again")]
    NoMatch,
    #[error("no password typed (end of input)")]
    EndOfInput,
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Where the password comes from.
pub enum PasswordSource<'a> {
    /// The first line of a file.
    File(&'a Path),
    /// Asked on the console: prompts go to `output`, answers come from `input`.
    Ask { input: &'a mut dyn BufRead, output: &'a mut dyn Write, terminal: bool },
}

/// What first-boot did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// False when a password was already set (kept).
    pub password_set: bool,
    pub cert: CertFiles,
    /// Where the status page is (one per address when listening on all of them).
    pub urls: Vec<String>,
    pub loopback_only: bool,
}

/// Sets the password if none is set, generates the certificate if missing.
pub fn run(
    state_dir: &Path,
    status: &StatusConfig,
    source: PasswordSource<'_>,
) -> Result<Report, FirstBootError> {
    let password_set = match password::load(state_dir)? {
        Some(_) => {
            if let PasswordSource::Ask { output, .. } = source {
                let _ = writeln!(
                    output,
                    "The admin password is already set (change it with `trunkguard set-password`)."
                );
            }
            false
        }
        None => {
            let hashed = match source {
                PasswordSource::File(path) => {
                    let f = std::fs::File::open(path).map_err(|source| FirstBootError::Io {
                        path: path.to_path_buf(),
                        source,
                    })?;
                    AdminPassword::hash(&password::read_line(io::BufReader::new(f))?)?
                }
                PasswordSource::Ask { input, output, terminal } => ask(input, output, terminal)?,
            };
            let path = password::store(state_dir, &hashed)?;
            match_owner(state_dir, &path);
            true
        }
    };
    let cert = cert::self_signed(state_dir, status.listen.ip())?;
    if cert.generated {
        match_owner(state_dir, &cert.cert);
        match_owner(state_dir, &cert.key);
    }
    let scheme = if status.tls.is_some() { "https" } else { "http" };
    let loopback_only = status.listen.ip().is_loopback();
    let urls = page_ips(status.listen.ip())
        .into_iter()
        .map(|ip| url(scheme, SocketAddr::new(ip, status.listen.port())))
        .collect();
    Ok(Report { password_set, cert, urls, loopback_only })
}

/// Asks twice until both match and the rules hold (at most [`ATTEMPTS`] times).
fn ask(
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    terminal: bool,
) -> Result<AdminPassword, FirstBootError> {
    let io_err = |source| FirstBootError::Io { path: PathBuf::from("<console>"), source };
    writeln!(output, "Set the admin password of the trunkguard status page.").map_err(io_err)?;
    writeln!(
        output,
        "Rules: at least {MIN_PASSWORD_CHARS} characters; spaces and any letters allowed."
    )
    .map_err(io_err)?;
    for attempt in 1..=ATTEMPTS {
        let first = prompt(input, output, "New admin password: ", terminal)?;
        if let Err(e) = password::check_rules(&first) {
            writeln!(output, "{e}.").map_err(io_err)?;
            continue;
        }
        let second = prompt(input, output, "Type it again: ", terminal)?;
        if first != second {
            let again = if attempt < ATTEMPTS { " Try again." } else { "" };
            writeln!(output, "The two passwords do not match.{again}").map_err(io_err)?;
            continue;
        }
        return Ok(AdminPassword::hash(&first)?);
    }
    Err(FirstBootError::NoMatch)
}

fn prompt(
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    text: &str,
    terminal: bool,
) -> Result<String, FirstBootError> {
    let io_err = |source| FirstBootError::Io { path: PathBuf::from("<console>"), source };
    write!(output, "{text}").map_err(io_err)?;
    output.flush().map_err(io_err)?;
    let _echo = if terminal { EchoOff::stdin() } else { None };
    let mut line = String::new();
    let n = input.read_line(&mut line).map_err(io_err)?;
    if terminal {
        writeln!(output).map_err(io_err)?; // the Enter the engineer typed was not echoed
    }
    if n == 0 {
        return Err(FirstBootError::EndOfInput);
    }
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// Terminal echo of standard input switched off until dropped.
struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    fn stdin() -> Option<EchoOff> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios owned by this frame.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(EchoOff { saved })
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `stdin()`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

/// When run as root on a state directory that belongs to the service user, the new files are
/// given to that user too (the service reads them). Failing that is only reported.
fn match_owner(state_dir: &Path, file: &Path) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let Ok(meta) = std::fs::metadata(state_dir) else { return };
    if meta.uid() == 0 {
        return;
    }
    if let Err(e) = std::os::unix::fs::chown(file, Some(meta.uid()), Some(meta.gid())) {
        tracing::warn!(file = %file.display(), error = %e, "cannot give the file to the state directory's owner");
    }
}

/// The addresses to show: the listen address, or every non-loopback address of the box when
/// listening on all of them (loopback when there is none).
fn page_ips(listen: IpAddr) -> Vec<IpAddr> {
    if !listen.is_unspecified() {
        return vec![listen];
    }
    let mut ips: Vec<IpAddr> = interface_ips()
        .into_iter()
        .filter(|ip| !ip.is_loopback() && (listen.is_ipv6() || ip.is_ipv4()))
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        ips.push(if listen.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        });
    }
    ips
}

fn url(scheme: &str, addr: SocketAddr) -> String {
    format!("{scheme}://{addr}/")
}

/// The addresses of the box's interfaces (getifaddrs).
fn interface_ips() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a list this function walks read-only and frees once.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.password_set {
            writeln!(f, "Admin password set.")?;
        }
        let what = if self.cert.generated { "generated" } else { "kept" };
        writeln!(f, "Management certificate {what}: {}", self.cert.cert.display())?;
        for u in &self.urls {
            writeln!(f, "Status page: {u}")?;
        }
        if self.loopback_only {
            writeln!(
                f,
                "The status page listens on this box only. To open it from the network, set [status] listen = \"0.0.0.0:8443\" \
                 and tls = \"self-signed\" in /etc/trunkguard/trunkguard.toml, then `systemctl restart trunkguard`."
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_shown() {
        assert_eq!(
            page_ips("192.0.2.5".parse().unwrap()),
            vec!["192.0.2.5".parse::<IpAddr>().unwrap()]
        );
        let all = page_ips("0.0.0.0".parse().unwrap());
        assert!(!all.is_empty() && all.iter().all(|ip| ip.is_ipv4()), "{all:?}");
        assert_eq!(url("https", "[::1]:8443".parse().unwrap()), "https://[::1]:8443/");
    }
}
