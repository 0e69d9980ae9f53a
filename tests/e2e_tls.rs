//! SIP over TLS with mutual authentication against the real `trunkguard`
//! binary. rcgen makes a CA, a server certificate (localhost, 127.0.0.1)
//! and a client certificate signed by it, plus a rogue self-signed client
//! certificate. A blocking rustls client places a call over TLS (100, 180,
//! 200 with SDP, prompt as RTP, ACK, BYE); clients without a certificate
//! from `client_ca` are refused without any SIP response.

mod common;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Identity {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Identity {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.der().clone()]
    }
    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

struct Pki {
    ca: Identity,
    server: Identity,
    client: Identity,
    rogue: Identity,
}

fn leaf_params(sans: &[&str], cn: &str, usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = vec![usage];
    p
}

fn make_pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "trunkguard e2e CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();

    let signed = |sans: &[&str], cn: &str, usage| {
        let key = KeyPair::generate().unwrap();
        let cert = leaf_params(sans, cn, usage).signed_by(&key, &ca_cert, &ca_key).unwrap();
        Identity { cert, key }
    };
    let server =
        signed(&["localhost", "127.0.0.1"], "trunkguard", ExtendedKeyUsagePurpose::ServerAuth);
    let client = signed(&["carrier-tls.test"], "carrier-tls", ExtendedKeyUsagePurpose::ClientAuth);
    let rogue_key = KeyPair::generate().unwrap();
    let rogue_cert =
        leaf_params(&["carrier-tls.test"], "carrier-tls", ExtendedKeyUsagePurpose::ClientAuth)
            .self_signed(&rogue_key)
            .unwrap();
    Pki {
        ca: Identity { cert: ca_cert, key: ca_key },
        server,
        client,
        rogue: Identity { cert: rogue_cert, key: rogue_key },
    }
}

/// Writes server.pem, server.key, ca.pem into `dir` and returns the config.
fn tls_config(ports: Ports, pki: &Pki, dir: &Path) -> String {
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p.display().to_string()
    };
    let cert = write("server.pem", pki.server.cert.pem());
    let key = write("server.key", pki.server.key.serialize_pem());
    let ca = write("ca.pem", pki.ca.cert.pem());
    format!(
        "[sip]\n\
         listen = [\"udp:127.0.0.1:{sip}\", \"tls:127.0.0.1:{tls}\"]\n\
         tls = {{ cert = \"{cert}\", key = \"{key}\", client_ca = \"{ca}\", require_client_cert = true }}\n\n\
         [media]\n\
         bind = \"127.0.0.1\"\n\
         rtp_ports = \"{rtp}\"\n\n\
         [status]\n\
         listen = \"127.0.0.1:{http}\"\n\n\
         [[carrier]]\n\
         name = \"carrier-tls\"\n\
         inbound_from = [\"127.0.0.1/32\"]\n",
        sip = ports.sip(),
        tls = ports.tls(),
        rtp = ports.rtp_range(),
        http = ports.http(),
    )
}

fn client_config(pki: &Pki, identity: Option<&Identity>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.cert.der().clone()).unwrap();
    let builder = ClientConfig::builder().with_root_certificates(roots);
    Arc::new(match identity {
        Some(id) => builder.with_client_auth_cert(id.chain(), id.private_key()).unwrap(),
        None => builder.with_no_client_auth(),
    })
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

fn connect(config: Arc<ClientConfig>, addr: SocketAddr) -> TlsStream {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .expect("TCP connect to the TLS listener");
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    StreamOwned::new(conn, sock)
}

/// Reads whole SIP messages off a stream (framed by Content-Length).
struct SipReader {
    buf: Vec<u8>,
}

impl SipReader {
    fn new() -> Self {
        SipReader { buf: Vec::new() }
    }

    fn take_message(&mut self) -> Option<String> {
        // Keep-alive CRLFs between messages are skipped.
        while self.buf.starts_with(b"\r\n") {
            self.buf.drain(..2);
        }
        let head_end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let len: usize =
            header(&head, "Content-Length", Some("l")).and_then(|v| v.parse().ok()).unwrap_or(0);
        if self.buf.len() < head_end + len {
            return None;
        }
        let msg: Vec<u8> = self.buf.drain(..head_end + len).collect();
        Some(String::from_utf8_lossy(&msg).into_owned())
    }

    /// The next message within `timeout` (None on timeout, EOF or error).
    fn next(&mut self, tls: &mut TlsStream, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(m) = self.take_message() {
                return Some(m);
            }
            if Instant::now() >= deadline {
                return None;
            }
            match tls.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
    }
}

/// What a client without a trusted certificate experiences.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// Handshake/alert error or the connection closed, no SIP bytes seen.
    Refused,
    /// Nothing happened within the timeout (connection left open).
    Hung,
    /// The appliance spoke SIP to an unauthenticated client.
    SipResponse(String),
}

fn try_untrusted(config: Arc<ClientConfig>, addr: SocketAddr, invite: &str) -> Refusal {
    let mut tls = connect(config, addr);
    if tls.write_all(invite.as_bytes()).and_then(|_| tls.flush()).is_err() {
        return Refusal::Refused;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    if text.contains("SIP/2.0") {
        Refusal::SipResponse(text)
    } else if Instant::now() >= deadline {
        Refusal::Hung
    } else {
        Refusal::Refused
    }
}

fn in_dialog(
    method: &str,
    cseq: u32,
    local: SocketAddr,
    to: SocketAddr,
    call_id: &str,
    from_hdr: &str,
    to_hdr: &str,
) -> String {
    format!(
        "{method} sip:agent@{to};transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS {local};branch={}\r\n\
         Max-Forwards: 70\r\n\
         From: {from_hdr}\r\n\
         To: {to_hdr}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        branch()
    )
}

#[test]
fn tls_call_with_client_certificate_and_rogue_clients_refused() {
    let ports = Ports::new(26000);
    let pki = make_pki();
    let files = tempfile::tempdir().unwrap();
    let mut app = Appliance::start(&tls_config(ports, &pki, files.path()));
    let addr = SocketAddr::from(([127, 0, 0, 1], ports.tls()));
    let sink = RtpSink::bind("127.0.0.1", ports.audio(0));

    // Rogue (self-signed) and anonymous clients: refused, no SIP spoken.
    for (who, identity) in [("rogue self-signed", Some(&pki.rogue)), ("no certificate", None)] {
        let invite = invite_request(
            "TLS",
            "127.0.0.1:5061".parse().unwrap(),
            addr,
            &format!("rogue-{who}"),
            sink.addr,
        );
        let outcome = try_untrusted(client_config(&pki, identity), addr, &invite);
        assert_eq!(outcome, Refusal::Refused, "client with {who} was not refused");
    }
    assert_eq!(sink.count(), 0, "RTP flowed for a refused client");

    // The trusted carrier places a call.
    let mut tls = connect(client_config(&pki, Some(&pki.client)), addr);
    let mut reader = SipReader::new();
    let local = tls.sock.local_addr().unwrap();
    let call_id = format!("tls-call-{}@127.0.0.1", ports.base);
    let invite = invite_request("TLS", local, addr, &call_id, sink.addr);
    tls.write_all(invite.as_bytes()).expect("write INVITE over TLS");
    tls.flush().unwrap();

    let mut codes = Vec::new();
    let mut ok = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while ok.is_none() && Instant::now() < deadline {
        let Some(msg) = reader.next(&mut tls, Duration::from_millis(500)) else {
            continue;
        };
        if call_id_of(&msg).as_deref() != Some(call_id.as_str()) {
            continue;
        }
        let code = status_code(&msg);
        codes.extend(code);
        if code == Some(200) {
            ok = Some(msg);
        }
    }
    let ok = ok.unwrap_or_else(|| panic!("no 200 OK over TLS; got {codes:?}"));
    assert!(codes.starts_with(&[100, 180]), "expected 100, 180, 200; got {codes:?}");
    let sdp = body_of(&ok);
    assert!(sdp.contains("m=audio "), "200 OK without SDP answer:\n{ok}");
    assert!(
        sdp.contains("RTP/AVP 0") || sdp.contains("RTP/AVP 8"),
        "answer is not PCMU/PCMA:\n{sdp}"
    );
    let to_hdr = header(&ok, "To", Some("t")).expect("To in 200");
    let from_hdr = header(&ok, "From", Some("f")).expect("From in 200");
    assert!(to_hdr.contains("tag="), "200 OK To has no tag: {to_hdr}");

    tls.write_all(in_dialog("ACK", 1, local, addr, &call_id, &from_hdr, &to_hdr).as_bytes())
        .unwrap();
    tls.flush().unwrap();
    let got_audio =
        wait_until(Duration::from_secs(3), Duration::from_millis(50), || sink.count() >= 50);
    assert!(got_audio, "only {} RTP packets 3 s after ACK", sink.count());

    tls.write_all(in_dialog("BYE", 2, local, addr, &call_id, &from_hdr, &to_hdr).as_bytes())
        .unwrap();
    tls.flush().unwrap();
    let mut bye_ok = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !bye_ok && Instant::now() < deadline {
        if let Some(msg) = reader.next(&mut tls, Duration::from_millis(500)) {
            bye_ok = status_code(&msg) == Some(200)
                && header(&msg, "CSeq", None).is_some_and(|c| c.ends_with("BYE"));
        }
    }
    assert!(bye_ok, "no 200 OK to BYE over TLS");
    let n = sink.wait_quiet(Duration::from_millis(400), Duration::from_secs(3));
    let speech = sink.speech();
    assert!(
        speech.rms > 500.0 && speech.voiced_packets > 10,
        "prompt over TLS call is not speech: {speech:?}"
    );
    assert!(n < 250, "RTP kept flowing after BYE ({n} packets)");
    assert_eq!(app.calls_counter("answered_total"), 1);
    app.assert_alive();
}

#[test]
fn selftest_pki_verifies_with_rustls() {
    // The generated chain is accepted by rustls' verifiers, the rogue is not.
    let pki = make_pki();
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.cert.der().clone()).unwrap();
    let roots = Arc::new(roots);
    let client_verifier =
        rustls::server::WebPkiClientVerifier::builder(roots.clone()).build().unwrap();
    let now = rustls::pki_types::UnixTime::now();
    assert!(client_verifier.verify_client_cert(pki.client.cert.der(), &[], now).is_ok());
    assert!(client_verifier.verify_client_cert(pki.rogue.cert.der(), &[], now).is_err());
    let server_verifier = rustls::client::WebPkiServerVerifier::builder(roots).build().unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    assert!(server_verifier
        .verify_server_cert(pki.server.cert.der(), &[], &name, &[], now)
        .is_ok());
    let ip = ServerName::try_from("127.0.0.1").unwrap();
    assert!(server_verifier.verify_server_cert(pki.server.cert.der(), &[], &ip, &[], now).is_ok());
    // Config plumbing: the PEM files the appliance reads parse back.
    let dir = tempfile::tempdir().unwrap();
    let config = tls_config(Ports::new(26200), &pki, dir.path());
    let value: toml::Value = toml::from_str(&config).unwrap();
    assert_eq!(value["sip"]["tls"]["require_client_cert"].as_bool(), Some(true));
    let pem = std::fs::read(dir.path().join("server.key")).unwrap();
    assert!(rustls_pemfile::private_key(&mut pem.as_slice()).unwrap().is_some());
}
