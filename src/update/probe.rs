//! The outside world of an update: one `/readyz` probe (HTTP/1.0 GET, bounded in time and
//! size; over TLS when the status server speaks HTTPS, to loopback only, its certificate not
//! checked since the answer is only a status code from this very box) and the restart command
//! (`sh -c`, killed when it outlives its time).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::update::policy::Probe;

/// A parsed `http://HOST:PORT/PATH` (or `https://` to a loopback address) readiness URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyUrl {
    pub host: String,
    pub addr: SocketAddr,
    pub path: String,
    pub tls: bool,
}

impl ReadyUrl {
    pub fn parse(url: &str) -> Result<ReadyUrl, String> {
        let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(format!("{url}: not an http:// or https:// URL")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/readyz"),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            && !authority.ends_with(']')
        {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        if tls && !addr.ip().is_loopback() {
            return Err(format!("{url}: https readiness URLs only to a loopback address (the certificate is not checked)"));
        }
        Ok(ReadyUrl { host: authority.to_owned(), addr, path: path.to_owned(), tls })
    }
}

impl std::fmt::Display for ReadyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", if self.tls { "https" } else { "http" }, self.host, self.path)
    }
}

/// One GET of the readiness URL: 200 is ready; anything else says what it was.
pub fn probe(url: &ReadyUrl, timeout: Duration) -> Probe {
    match get(url, timeout) {
        Ok((200, _)) => Probe::Ready,
        Ok((code, body)) => Probe::NotReady(format!("HTTP {code}: {}", summary(&body))),
        Err(e) => Probe::NotReady(e),
    }
}

fn get(url: &ReadyUrl, timeout: Duration) -> Result<(u16, String), String> {
    let s = TcpStream::connect_timeout(&url.addr, timeout).map_err(|e| short_io(&e))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    if !url.tls {
        return exchange(s, url);
    }
    let name = rustls::pki_types::ServerName::IpAddress(url.addr.ip().into());
    let conn =
        rustls::ClientConnection::new(loopback_tls()?, name).map_err(|e| format!("TLS: {e}"))?;
    exchange(rustls::StreamOwned::new(conn, s), url)
}

/// One request, the response read until the peer closes (at most 64 KiB). A TLS peer that
/// closes without close_notify still counts when a response head arrived.
fn exchange(mut s: impl Read + Write, url: &ReadyUrl) -> Result<(u16, String), String> {
    let request =
        format!("GET {} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n", url.path, url.host);
    s.write_all(request.as_bytes()).map_err(|e| short_io(&e))?;
    s.flush().map_err(|e| short_io(&e))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if raw.len() + n <= 64 * 1024 => raw.extend_from_slice(&chunk[..n]),
            Ok(_) => break,
            Err(e) if raw.is_empty() => return Err(short_io(&e)),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "not an HTTP response".to_owned())?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((code, body))
}

/// A TLS client that accepts any certificate: only for the box's own loopback status server.
fn loopback_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn short_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timed out".to_owned(),
        _ => e.to_string(),
    }
}

/// The failing checks of a `/readyz` body (`{"ready":false,"checks":{"ai":{"ok":false,
/// "reason":"..."}}}`), else its first 200 characters.
fn summary(body: &str) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(body.trim()).ok();
    if let Some(checks) = parsed.as_ref().and_then(|v| v.get("checks")).and_then(|c| c.as_object())
    {
        let failing: Vec<String> = checks
            .iter()
            .filter(|(_, c)| c.get("ok").and_then(|o| o.as_bool()) == Some(false))
            .map(|(name, c)| match c.get("reason").and_then(|r| r.as_str()) {
                Some(why) => format!("{name} ({why})"),
                None => name.clone(),
            })
            .collect();
        if !failing.is_empty() {
            return format!("failing: {}", failing.join(", "));
        }
    }
    body.trim().chars().take(200).collect()
}

/// Runs `command` with `sh -c` (stdin closed, output passed through); `Err` says how it
/// failed, including being killed after `limit`.
pub fn restart(command: &str, limit: Duration) -> Result<(), String> {
    match super::spawn::run(&["sh", "-c", command], false, limit) {
        Ok(done) if done.code == Some(0) => Ok(()),
        Ok(done) => Err(format!(
            "`{command}` failed ({})",
            done.code.map_or("killed by a signal".to_string(), |c| format!("exit status: {c}"))
        )),
        Err(e) => Err(format!("`{command}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = ReadyUrl::parse("http://127.0.0.1:8080/readyz").unwrap();
        assert_eq!(u.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(u.path, "/readyz");
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/readyz");
        assert_eq!(ReadyUrl::parse("http://[::1]:9/x").unwrap().addr, "[::1]:9".parse().unwrap());
        assert_eq!(ReadyUrl::parse("http://127.0.0.1").unwrap().addr.port(), 80);
        let https = ReadyUrl::parse("https://127.0.0.1/readyz").unwrap();
        assert!(https.tls && https.addr.port() == 443);
        assert!(ReadyUrl::parse("https://192.0.2.1:8443/readyz")
            .unwrap_err()
            .contains("only to a loopback"));
        assert!(ReadyUrl::parse("ftp://127.0.0.1/").is_err());
    }

    #[test]
    fn probes_a_real_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for body in ["{\"ready\":true}", "{\"ready\":false,\"checks\":{\"ai\":{\"ok\":true,\"reason\":\"x\"},\"sip\":{\"ok\":false,\"reason\":\"not bound\"}}}"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).unwrap();
                let code = if body.contains("checks") { "503 Service Unavailable" } else { "200 OK" };
                write!(s, "HTTP/1.1 {code}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
            }
        });
        let url = ReadyUrl::parse(&format!("http://{addr}/readyz")).unwrap();
        assert_eq!(probe(&url, Duration::from_secs(2)), Probe::Ready);
        assert_eq!(
            probe(&url, Duration::from_secs(2)),
            Probe::NotReady("HTTP 503: failing: sip (not bound)".into())
        );
        server.join().unwrap();
        // nobody listening any more (refused; the port may be reused by a parallel test)
        assert!(matches!(probe(&url, Duration::from_secs(2)), Probe::NotReady(_)));
    }

    #[test]
    fn restart_command_results() {
        assert!(restart("true", Duration::from_secs(5)).is_ok());
        assert!(restart("exit 3", Duration::from_secs(5)).unwrap_err().contains("exit status: 3"));
        let slow = restart("sleep 5", Duration::from_millis(200)).unwrap_err();
        assert!(slow.contains("did not finish"), "{slow}");
    }
}
