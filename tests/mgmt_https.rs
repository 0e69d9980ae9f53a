//! The status server over HTTPS with `[status] tls = "self-signed"`: the real binary generates
//! the certificate into the state directory, a rustls client trusting that certificate fetches
//! `/livez`, and the login cookie carries `Secure`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, Ports};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const PASSWORD: &str = "correct horse battery";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(cert_pem: &Path) -> Arc<ClientConfig> {
    let pem = std::fs::read(cert_pem).unwrap();
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut pem.as_slice()).map(Result::unwrap).collect();
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).unwrap();
    }
    Arc::new(ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

/// One HTTP/1.1 request over TLS (server name 127.0.0.1); returns the response head and body.
fn https(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    request: &str,
) -> std::io::Result<(String, String)> {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = ServerName::try_from("127.0.0.1").unwrap().to_owned();
    let conn = ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // the server may close without close_notify once the response is complete
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.to_owned(), body.to_owned()))
}

#[test]
fn self_signed_https_serves_livez_and_secure_cookies() {
    let ports = Ports::new(31400);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let bin = env!("CARGO_BIN_EXE_trunkguard");
    let mut set = Command::new(bin)
        .args(["set-password", "--state-dir"])
        .arg(&state)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    assert!(set.wait().unwrap().success());

    let http: SocketAddr = format!("127.0.0.1:{}", ports.http()).parse().unwrap();
    let config = dir.path().join("trunkguard.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:{sip}\"]\n[media]\nbind = \"127.0.0.1\"\nrtp_ports = \"{rtp}\"\n\
             [status]\nlisten = \"{http}\"\ntls = \"self-signed\"\n\
             [[carrier]]\nname = \"local\"\ninbound_from = [\"127.0.0.1/32\"]\n",
            sip = ports.sip(),
            rtp = ports.rtp_range(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let _guard = Killed(child);
    let show_log = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();

    let cert = state.join("cert.pem");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || cert.is_file()),
        "no cert: {}",
        show_log()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.join("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let tls = client(&cert);
    let get = format!("GET /livez HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    let mut livez = None;
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            livez =
                https(&tls, http, &get).ok().filter(|(head, _)| head.starts_with("HTTP/1.1 200"));
            livez.is_some()
        }),
        "GET /livez over HTTPS failed: {}",
        show_log()
    );
    let (livez_head, livez_body) = livez.unwrap();
    assert_eq!(livez_body, "ok\n");
    assert!(
        livez_head.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000"),
        "HSTS under HTTPS: {livez_head}"
    );

    // plain HTTP gets no answer from the TLS port
    assert!(!matches!(common::http_get(http, "/livez"), Ok((200, _))));

    let body = format!("password={}", PASSWORD.replace(' ', "+"));
    let login = format!(
        "POST /login HTTP/1.1\r\nHost: {http}\r\nOrigin: https://{http}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (head, body) = https(&tls, http, &login).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no Set-Cookie in {head}"));
    assert!(cookie.contains("tg_session="), "{cookie}");
    for attr in ["; Secure", "; HttpOnly", "; SameSite=Strict"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }

    // restart reuses the certificate
    drop(_guard);
    let before = std::fs::read(&cert).unwrap();
    let log = std::fs::File::create(dir.path().join("log2")).unwrap();
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let _guard = Killed(child);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            https(&tls, http, &get).is_ok_and(|(head, _)| head.starts_with("HTTP/1.1 200"))
        }),
        "second start: the old certificate is still trusted"
    );
    assert_eq!(std::fs::read(&cert).unwrap(), before);
}
