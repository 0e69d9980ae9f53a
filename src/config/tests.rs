//! Tests of the whole pipeline: text → Config, or diagnostics naming field and line.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::core::sip::{Peer, Transport};

const EXAMPLE: &str = include_str!("../../firmware/etc/trunkguard/trunkguard.toml");
const CARRIER: &str = "[[carrier]]\nname = \"c\"\ninbound_from = [\"192.0.2.1\"]\n";

fn parse(text: &str) -> Config {
    match Config::from_toml_str(text, "t.toml") {
        Ok(config) => config,
        Err(e) => panic!("unexpected error:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match Config::from_toml_str(text, "t.toml") {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

/// Asserts that some diagnostic has this line and field and mentions `needle`.
#[track_caller]
fn assert_error(text: &str, line: usize, field: &str, needle: &str) {
    let all = errors(text);
    let found = all.iter().any(|d| {
        d.line == Some(line) && d.field.to_string() == field && d.message.contains(needle)
    });
    let shown: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert!(found, "wanted t.toml:{line}: {field}: ...{needle}...; got:\n{}", shown.join("\n"));
}

fn with_carrier(section: &str) -> String {
    format!("{section}\n{CARRIER}")
}

// ---- embedded default and example --------------------------------------------------------

#[test]
fn embedded_default_toml_matches_embedded_default() {
    assert_eq!(parse(EMBEDDED_DEFAULT_TOML), Config::embedded_default());
}

#[test]
fn embedded_default_values() {
    let c = Config::embedded_default();
    assert_eq!(c.sip.listen.len(), 2);
    assert_eq!(c.sip.listen[0].to_string(), "udp:127.0.0.1:5060");
    assert_eq!(c.sip.listen[1].to_string(), "tcp:127.0.0.1:5060");
    assert_eq!(c.media.rtp_ports, PortRange { start: 20000, end: 20999 });
    assert_eq!(c.status.listen, "127.0.0.1:8080".parse().unwrap());
    let local = c.carrier("local").unwrap();
    assert_eq!(local.proxy, None);
    assert_eq!(local.probe, None);
    assert_eq!(c.carrier_for_source("127.9.9.9".parse().unwrap()).unwrap().name, "local");
    assert!(c.carrier_for_source("10.0.0.1".parse().unwrap()).is_none());
    assert_eq!(c.summary(), "1 carrier, listen udp:127.0.0.1:5060, tcp:127.0.0.1:5060");
}

#[test]
fn firmware_example_is_valid() {
    let c = parse(EXAMPLE);
    assert_eq!(c.carriers.len(), 2);
    let a = c.carrier("carrier-a").unwrap();
    assert_eq!(
        a.proxy,
        Some(Peer { transport: Transport::Udp, addr: "127.0.0.2:5060".parse().unwrap() })
    );
    assert_eq!(
        a.probe,
        Some(ProbeConfig { interval_ms: 1000, timeout_ms: 500, down_after: 2, up_after: 2 })
    );
    let b = c.carrier("carrier-b").unwrap();
    assert_eq!(b.inbound_from, vec!["127.0.0.3/32".parse().unwrap()]);
    assert_eq!(b.probe, Some(ProbeConfig::DEFAULT));
    assert_eq!(c.carrier_for_source("127.0.0.3".parse().unwrap()).unwrap().name, "carrier-b");
    assert_eq!(c.sip_domain_for(a).as_deref(), Some("127.0.0.2"));
}

// ---- each field parses ---------------------------------------------------------------------

#[test]
fn defaults_apply_when_sections_are_omitted() {
    let c = parse(CARRIER);
    let d = Config::embedded_default();
    assert_eq!((c.sip.clone(), c.media, c.status, c.call), (d.sip, d.media, d.status, d.call));
    assert_eq!(
        c.prompts,
        PromptsConfig { dir: None, high_demand: "high-demand.wav".into(), files: Vec::new() }
    );
    assert_eq!(c.prompts.high_demand_path(), None);
    assert_eq!(c.sip.user_agent, "trunkguard", "no version unless asked for");
    assert_eq!(c.call.max_duration(), Duration::from_secs(3600));
}

#[test]
fn sip_section() {
    let c = parse(&with_carrier(
        "[sip]\nlisten = [\"udp:[::1]:5070\", \"tcp:0.0.0.0\"]\nuser_agent = \"tg 1\"\ndomain = \"pbx.example.com\"",
    ));
    assert_eq!(c.sip.listen[0].addr, "[::1]:5070".parse().unwrap());
    assert_eq!(
        c.sip.listen[1],
        ListenAddr { transport: Transport::Tcp, addr: "0.0.0.0:5060".parse().unwrap() }
    );
    assert_eq!(c.sip.user_agent, "tg 1");
    assert_eq!(c.sip.domain.as_deref(), Some("pbx.example.com"));
}

#[test]
fn the_version_is_told_only_when_asked_for() {
    let c = parse(&with_carrier("[sip]\nuser_agent_version = true"));
    assert_eq!(c.sip.user_agent, concat!("trunkguard/", env!("CARGO_PKG_VERSION")));
    let c = parse(&with_carrier("[sip]\nuser_agent_version = false"));
    assert_eq!(c.sip.user_agent, "trunkguard");
}

#[test]
fn connections_defaults_and_ranges_name_the_field() {
    let c = parse(&with_carrier(""));
    assert_eq!(c.connections, crate::config::ConnectionsConfig::default());
    let c = parse(&with_carrier("[connections]\nsip_max = 100\nsip_max_per_source = 10"));
    assert_eq!((c.connections.sip_max, c.connections.sip_max_per_source), (100, 10));
    for (text, field) in [
        ("[connections]\nsip_max = 1", "connections.sip_max"),
        ("[connections]\nhead_timeout_ms = 100000", "connections.head_timeout_ms"),
        (
            "[connections]\nhttp_max = 10\nhttp_max_per_source = 11",
            "connections.http_max_per_source",
        ),
        ("[connections]\nsip_reserved_percent = 95", "connections.sip_reserved_percent"),
        ("[limits]\ninvites_per_second = 0", "limits.invites_per_second"),
    ] {
        let err = Config::from_toml_str(&with_carrier(text), "t.toml").unwrap_err().to_string();
        assert!(err.contains(field), "{text}: {err}");
    }
}

#[test]
fn udp_and_tcp_may_share_a_port_and_port_zero_may_repeat() {
    let c = parse(&with_carrier(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\ntls = { cert = 'Cargo.toml', key = 'Cargo.toml' }",
    ));
    assert_eq!(c.sip.listen.len(), 3);
}

#[test]
fn tls_section() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let ca = dir.path().join("ca.pem");
    for f in [&cert, &key, &ca] {
        std::fs::write(f, "pem").unwrap();
    }
    let text = format!(
        "[sip]\nlisten = [\"tls:127.0.0.1:5061\"]\ntls = {{ cert = '{}', key = '{}', client_ca = '{}', require_client_cert = true }}",
        cert.display(), key.display(), ca.display()
    );
    let c = parse(&with_carrier(&text));
    let tls = c.sip.tls.unwrap();
    assert_eq!((tls.cert, tls.key, tls.client_ca), (cert, key, Some(ca)));
    assert!(tls.require_client_cert);
}

#[test]
fn media_status_call_sections() {
    let c = parse(&with_carrier(
        "[media]\nbind = \"::1\"\nrtp_ports = \"30000-30001\"\n[status]\nlisten = \"[::1]:9000\"\n[call]\nmax_duration_s = 60",
    ));
    assert_eq!(c.media.bind, "::1".parse::<IpAddr>().unwrap());
    assert_eq!(c.media.rtp_ports, PortRange { start: 30000, end: 30001 });
    assert_eq!(c.status.listen, "[::1]:9000".parse().unwrap());
    assert_eq!(c.call.max_duration(), Duration::from_secs(60));
}

#[test]
fn prompts_section() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("busy.wav"), crate::core::media::prompt::HIGH_DEMAND_WAV)
        .unwrap();
    let c = parse(&with_carrier(&format!(
        "[prompts]\ndir = '{}'\nhigh_demand = \"busy.wav\"",
        dir.path().display()
    )));
    assert_eq!(c.prompts.high_demand_path(), Some(dir.path().join("busy.wav")));
}

#[test]
fn carrier_fields_and_register_with_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\r\n").unwrap();
    let text = format!(
        "[[carrier]]\nname = \"a\"\nproxy = \"tls:[2001:db8::1]\"\ninbound_from = [\"2001:db8::/32\", \"192.0.2.0/24\"]\n\
         register = {{ user = \"u1\", password_file = '{}', expires = 60, domain = \"example.net\", realm = \"Example\", contact_user = \"c1\" }}",
        pw.display()
    );
    let c = parse(&text);
    let a = &c.carriers[0];
    assert_eq!(a.proxy.unwrap().addr, "[2001:db8::1]:5061".parse().unwrap());
    assert_eq!(a.inbound_from.len(), 2);
    assert!(a.accepts_from("192.0.2.77".parse().unwrap()));
    let r = a.register.as_ref().unwrap();
    assert_eq!(r.password.expose(), "s3cret");
    assert_eq!(r.expires(), Duration::from_secs(60));
    assert_eq!((r.user.as_str(), r.contact_user()), ("u1", "c1"));
    assert_eq!(r.realm.as_deref(), Some("Example"));
    assert_eq!(c.register_domain_for(a).as_deref(), Some("example.net"));
    assert_eq!(c.sip_domain_for(a).as_deref(), Some("[2001:db8::1]"));
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn register_with_password_env_and_defaults() {
    std::env::set_var("TRUNKGUARD_TEST_PW_OK", "pw-from-env");
    let c = parse(
        "[[carrier]]\nname = \"a\"\nproxy = \"udp:192.0.2.9:5060\"\nregister = { user = \"u\", password_env = \"TRUNKGUARD_TEST_PW_OK\" }",
    );
    let r = c.carriers[0].register.as_ref().unwrap();
    assert_eq!(r.password.expose(), "pw-from-env");
    assert_eq!(r.expires_s, 300);
    assert_eq!(r.contact_user(), "u");
    assert_eq!(c.register_domain_for(&c.carriers[0]).as_deref(), Some("192.0.2.9"));
}

// ---- errors name field and line ------------------------------------------------------------

#[test]
fn unknown_transport() {
    let text = with_carrier("\n[sip]\nlisten = [\"udpx:1.2.3.4:5060\"]");
    assert_error(
        &text,
        3,
        "sip.listen[0]",
        "\"udpx:1.2.3.4:5060\": unknown transport \"udpx\" (expected udp, tcp or tls)",
    );
    let msg = Config::from_toml_str(&text, "trunkguard.toml").unwrap_err().to_string();
    assert!(msg.starts_with("trunkguard.toml:3: sip.listen[0]: \"udpx:"), "{msg}");
}

#[test]
fn probe_down_after_zero_on_line_12() {
    let text = "\
[sip]
listen = [\"udp:127.0.0.1:5060\"]

[[carrier]]
name = \"a\"
proxy = \"udp:127.0.0.2:5060\"

[[carrier]]
name = \"b\"
proxy = \"udp:127.0.0.3:5060\"
[carrier.probe]
down_after = 0
";
    assert_error(text, 12, "carrier[1].probe.down_after", "must be at least 1");
    let msg = Config::from_toml_str(text, "trunkguard.toml").unwrap_err().to_string();
    assert_eq!(msg, "trunkguard.toml:12: carrier[1].probe.down_after: must be at least 1 (got 0)");
}

#[test]
fn unknown_keys_are_errors() {
    assert_error(
        &with_carrier("[sip]\nlisten = []\nlisen = 1"),
        3,
        "sip.lisen",
        "unknown field `lisen`",
    );
    assert_error(
        "[[carrier]]\nname = \"a\"\nproxy = \"udp:10.0.0.1:5060\"\nprobe = { interval = 5 }",
        4,
        "carrier[0].probe.interval",
        "unknown field `interval`",
    );
    assert_error(&with_carrier("[bogus]\nx = 1"), 1, "bogus", "unknown field `bogus`");
}

#[test]
fn type_errors_name_field_and_line() {
    let text =
        "[[carrier]]\nname = \"a\"\nproxy = \"udp:10.0.0.1:5060\"\nprobe = { down_after = -1 }";
    assert_error(text, 4, "carrier[0].probe.down_after", "invalid value");
    assert_error(
        &with_carrier("[sip]\nlisten = [\"udp:1.2.3.4:5060\", 7]"),
        2,
        "sip.listen[1]",
        "invalid type",
    );
    assert_error(
        &with_carrier("[call]\n\nmax_duration_s = \"long\""),
        3,
        "call.max_duration_s",
        "invalid type",
    );
}

#[test]
fn syntax_error_has_line() {
    let all = errors("[sip]\nlisten = [\n[media]\n");
    assert_eq!(all.len(), 1);
    assert!(all[0].line.is_some(), "{:?}", all[0]);
    let all = errors("a = 1\nb = = 2\n");
    assert_eq!(all[0].line, Some(2));
    let all = errors("[sip\nlisten = 1\n");
    assert_eq!(all[0].line, Some(1));
    assert!(!all[0].message.contains('\n'), "{:?}", all[0].message);
    assert!(all[0].message.contains("invalid table header; expected"), "{:?}", all[0].message);
}

#[test]
fn listen_errors() {
    assert_error(&with_carrier("[sip]\nlisten = []"), 2, "sip.listen", "at least one");
    assert_error(
        &with_carrier("[sip]\nlisten = [\"tcp:127.0.0.1:5060\",\n  \"tls:127.0.0.1:5060\"]\ntls = { cert = 'Cargo.toml', key = 'Cargo.toml' }"),
        3,
        "sip.listen[1]",
        "same socket as sip.listen[0]",
    );
    assert_error(
        &with_carrier("[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"udp:127.0.0.1:5060\"]"),
        2,
        "sip.listen[1]",
        "same socket",
    );
    assert_error(
        &with_carrier("[sip]\nlisten = [\"udp:127.0.0.1:5060\",\n\"tls:127.0.0.1:5061\"]"),
        3,
        "sip.listen[1]",
        "needs [sip].tls",
    );
}

#[test]
fn tls_errors() {
    let text = with_carrier(
        "[sip]\nlisten = [\"tls:127.0.0.1:5061\"]\ntls = { cert = '/nonexistent/cert.pem' }",
    );
    assert_error(&text, 3, "sip.tls.cert", "\"/nonexistent/cert.pem\": cannot open");
    assert_error(&text, 3, "sip.tls.key", "is required");
    let text =
        with_carrier("[sip.tls]\ncert = 'Cargo.toml'\nkey = 'src'\nrequire_client_cert = true");
    assert_error(&text, 3, "sip.tls.key", "is a directory");
    assert_error(&text, 4, "sip.tls.require_client_cert", "requires client_ca");
}

#[test]
fn sip_text_errors() {
    assert_error(&with_carrier("[sip]\ndomain = \"bad host\""), 2, "sip.domain", "host name or IP");
    assert_error(
        &with_carrier("[sip]\nuser_agent = \"a\\r\\nX-Evil: 1\""),
        2,
        "sip.user_agent",
        "control characters",
    );
}

#[test]
fn media_errors() {
    assert_error(
        &with_carrier("[media]\nrtp_ports = \"20001-20999\""),
        2,
        "media.rtp_ports",
        "must be even",
    );
    assert_error(
        &with_carrier("[media]\nrtp_ports = \"20000-20000\""),
        2,
        "media.rtp_ports",
        "at least 2 ports",
    );
    assert_error(
        &with_carrier("[media]\nbind = \"localhost\""),
        2,
        "media.bind",
        "expected an IP address",
    );
    let text = with_carrier(
        "[sip]\nlisten = [\"udp:0.0.0.0:20002\"]\n[media]\nrtp_ports = \"20000-20999\"",
    );
    assert_error(&text, 4, "media.rtp_ports", "overlaps sip.listen[0] udp:0.0.0.0:20002");
    parse(&with_carrier(
        "[sip]\nlisten = [\"udp:127.0.0.2:20002\"]\n[media]\nbind = \"127.0.0.1\"",
    ));
}

#[test]
fn status_errors() {
    assert_error(
        &with_carrier("[status]\nlisten = \"8080\""),
        2,
        "status.listen",
        "expected IP:PORT",
    );
    assert_error(
        &with_carrier("[status]\nlisten = \"127.0.0.1:5060\""),
        2,
        "status.listen",
        "same TCP socket as sip.listen[1]",
    );
}

#[test]
fn status_tls() {
    use crate::config::StatusTls;
    let c = parse(&with_carrier("[status]\ntls = \"self-signed\""));
    assert_eq!(c.status.tls, Some(StatusTls::SelfSigned));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, "x").unwrap();
    std::fs::write(&key, "x").unwrap();
    let text = format!(
        "[status]\ntls = {{ cert = {:?}, key = {:?} }}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let c = parse(&with_carrier(&text));
    assert_eq!(c.status.tls, Some(StatusTls::Files { cert, key }));
    assert_eq!(Config::embedded_default().status.tls, None);
}

#[test]
fn status_tls_errors() {
    assert_error(
        &with_carrier("[status]\ntls = \"selfsigned\""),
        2,
        "status.tls",
        "expected \"self-signed\" or",
    );
    assert_error(&with_carrier("[status]\ntls = true"), 2, "status.tls", "boolean: expected");
    assert_error(
        &with_carrier("[status]\ntls = { cert = \"/nonexistent.pem\" }"),
        2,
        "status.tls.cert",
        "/nonexistent.pem",
    );
    assert_error(
        &with_carrier("[status]\ntls = { cert = \"/nonexistent.pem\" }"),
        2,
        "status.tls.key",
        "is required",
    );
    assert_error(
        &with_carrier("[status]\ntls = { key = 1 }"),
        2,
        "status.tls.key",
        "expected a file path",
    );
    assert_error(
        &with_carrier("[status]\ntls = { crt = \"x\" }"),
        2,
        "status.tls.crt",
        "unknown key",
    );
}

#[test]
fn prompts_errors() {
    assert_error(
        &with_carrier("[prompts]\nhigh_demand = \"x.wav\""),
        2,
        "prompts.high_demand",
        "no effect without prompts.dir",
    );
    assert_error(
        &with_carrier("[prompts]\ndir = \"/nonexistent-prompts\""),
        2,
        "prompts.dir",
        "not a directory",
    );
    assert_error(
        &with_carrier("[prompts]\ndir = \"src\"\nhigh_demand = \"none.wav\""),
        3,
        "prompts.high_demand",
        "cannot open",
    );
}

/// A 16-bit mono WAV at `rate` with `samples` samples of a tone.
fn wav(rate: u32, samples: usize) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for i in 0..samples {
        w.write_sample(((i as f32 * 0.05).sin() * 8000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    cursor.into_inner()
}

#[test]
fn ladder_prompts_from_the_directory_replace_the_embedded_ones() {
    use crate::core::ladder::PromptId;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("high-demand.wav"), wav(8000, 8000)).unwrap();
    std::fs::write(dir.path().join("goodbye.wav"), wav(8000, 8000)).unwrap(); // by its default name
    std::fs::write(dir.path().join("mine.wav"), wav(8000, 4000)).unwrap();
    let c = parse(&with_carrier(&format!(
        "[prompts]\ndir = '{}'\nmenu = \"mine.wav\"",
        dir.path().display()
    )));
    assert_eq!(c.prompts.path(PromptId::Menu), Some(dir.path().join("mine.wav").as_path()));
    assert_eq!(c.prompts.path(PromptId::Goodbye), Some(dir.path().join("goodbye.wav").as_path()));
    assert_eq!(
        c.prompts.path(PromptId::MenuInvalid),
        None,
        "not in the directory: the embedded copy"
    );
    assert_eq!(
        c.prompts.path(PromptId::HighDemand),
        Some(dir.path().join("high-demand.wav").as_path())
    );
}

#[test]
fn ladder_prompt_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("high-demand.wav"), wav(8000, 8000)).unwrap();
    std::fs::write(dir.path().join("wide.wav"), wav(16_000, 16_000)).unwrap();
    std::fs::write(dir.path().join("blip.wav"), wav(8000, 800)).unwrap();
    std::fs::write(dir.path().join("junk.wav"), b"RIFF junk").unwrap();
    let d = dir.path().display();
    assert_error(
        &with_carrier(&format!("[prompts]\ndir = '{d}'\nmenu = \"wide.wav\"")),
        3,
        "prompts.menu",
        "wide.wav: prompt must be 8000 Hz mono 16-bit integer PCM, got 16000 Hz",
    );
    assert_error(
        &with_carrier(&format!("[prompts]\ndir = '{d}'\ngoodbye = \"blip.wav\"")),
        3,
        "prompts.goodbye",
        "blip.wav: prompt is 100 ms long; it must be between 300 ms and 60 s",
    );
    assert_error(
        &with_carrier(&format!("[prompts]\ndir = '{d}'\ntransfer_hold = \"junk.wav\"")),
        3,
        "prompts.transfer_hold",
        "junk.wav: prompt is not a readable WAV file",
    );
    assert_error(
        &with_carrier(&format!("[prompts]\ndir = '{d}'\nsorry_callback = \"none.wav\"")),
        3,
        "prompts.sorry_callback",
        "cannot open",
    );
    assert_error(
        &with_carrier("[prompts]\ncallback_confirm = \"x.wav\""),
        2,
        "prompts.callback_confirm",
        "no effect without prompts.dir",
    );
    // a default-named file that is broken is refused too (it would be played)
    std::fs::write(dir.path().join("menu-invalid.wav"), wav(8000, 100)).unwrap();
    assert_error(
        &with_carrier(&format!("[prompts]\ndir = '{d}'")),
        1,
        "prompts.menu_invalid",
        "menu-invalid.wav: prompt is 12 ms long",
    );
}

#[test]
fn call_errors() {
    assert_error(
        &with_carrier("[call]\nmax_duration_s = 0"),
        2,
        "call.max_duration_s",
        "must be at least 1",
    );
}

#[test]
fn at_least_one_carrier() {
    let all = errors("[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].field.to_string(), "carrier");
    assert_eq!(all[0].line, None);
    assert_eq!(all[0].to_string(), "t.toml: carrier: at least one [[carrier]] is required");
}

#[test]
fn carrier_shape_errors() {
    assert_error("[[carrier]]\nproxy = \"udp:10.0.0.1:5060\"", 1, "carrier[0].name", "is required");
    assert_error(
        "[[carrier]]\nname = \"a b\"\nproxy = \"udp:10.0.0.1:5060\"",
        2,
        "carrier[0].name",
        "letters, digits",
    );
    assert_error(
        "[[carrier]]\nname = \"a\"",
        1,
        "carrier[0]",
        "needs a proxy, an inbound_from list, or both",
    );
    assert_error(
        "[[carrier]]\nname = \"a\"\nproxy = \"udp:0.0.0.0:5060\"",
        3,
        "carrier[0].proxy",
        "concrete IP",
    );
    assert_error(
        "[[carrier]]\nname = \"a\"\nproxy = \"sctp:10.0.0.1\"",
        3,
        "carrier[0].proxy",
        "unknown transport \"sctp\"",
    );
    assert_error(
        "[[carrier]]\nname = \"a\"\ninbound_from = [\"10.0.0.1\", \"nope\"]",
        3,
        "carrier[0].inbound_from[1]",
        "CIDR",
    );
}

#[test]
fn proxyless_carrier_cannot_probe_or_register() {
    let text = "[[carrier]]\nname = \"a\"\ninbound_from = [\"10.0.0.1\"]\nprobe = { interval_ms = 1000 }\nregister = { user = \"u\", password_env = \"X\" }";
    assert_error(text, 4, "carrier[0].probe", "requires proxy");
    assert_error(text, 5, "carrier[0].register", "requires proxy");
}

#[test]
fn probe_errors() {
    let base = "[[carrier]]\nname = \"a\"\nproxy = \"udp:10.0.0.1:5060\"\n";
    assert_error(
        &format!("{base}probe = {{ interval_ms = 1000, timeout_ms = 2000 }}"),
        4,
        "carrier[0].probe.timeout_ms",
        "must not exceed interval_ms",
    );
    assert_error(
        &format!("{base}probe = {{ interval_ms = 0 }}"),
        4,
        "carrier[0].probe.interval_ms",
        "at least 1",
    );
    assert_error(
        &format!("{base}probe = {{ up_after = 0 }}"),
        4,
        "carrier[0].probe.up_after",
        "at least 1",
    );
}

#[test]
fn duplicate_names_and_overlapping_sources() {
    let text = "\
[[carrier]]
name = \"a\"
inbound_from = [\"10.0.0.0/8\"]

[[carrier]]
name = \"a\"
inbound_from = [\"192.0.2.1\",
  \"10.1.2.3\"]
";
    assert_error(text, 6, "carrier[1].name", "duplicate carrier name \"a\" (also carrier[0])");
    assert_error(
        text,
        8,
        "carrier[1].inbound_from[1]",
        "10.1.2.3/32 overlaps 10.0.0.0/8 of carrier[0]",
    );
}

#[test]
fn register_errors() {
    let base = "[[carrier]]\nname = \"a\"\nproxy = \"udp:10.0.0.1:5060\"\n";
    let reg = |body: &str| format!("{base}register = {{ {body} }}");
    assert_error(
        &reg("password_env = \"TRUNKGUARD_TEST_PW_OK2\""),
        4,
        "carrier[0].register.user",
        "is required",
    );
    assert_error(
        &reg("user = \"u\""),
        4,
        "carrier[0].register",
        "needs password_file or password_env",
    );
    assert_error(
        &reg("user = \"u\", password_file = \"/x\", password_env = \"Y\""),
        4,
        "carrier[0].register.password_env",
        "not both",
    );
    assert_error(
        &reg("user = \"u\", password_file = \"/nonexistent/pw\""),
        4,
        "carrier[0].register.password_file",
        "\"/nonexistent/pw\": cannot read",
    );
    assert_error(
        &reg("user = \"u\", password_env = \"TRUNKGUARD_TEST_UNSET_VAR\""),
        4,
        "carrier[0].register.password_env",
        "is not set",
    );
    std::env::set_var("TRUNKGUARD_TEST_PW_OK2", "x");
    assert_error(
        &reg("user = \"u\", password_env = \"TRUNKGUARD_TEST_PW_OK2\", expires = 59"),
        4,
        "carrier[0].register.expires",
        "at least 60",
    );
    assert_error(
        &reg("user = \"u@x\", password_env = \"TRUNKGUARD_TEST_PW_OK2\""),
        4,
        "carrier[0].register.user",
        "must not contain",
    );
    assert_error(
        &reg("user = \"u\", password_env = \"TRUNKGUARD_TEST_PW_OK2\", realm = 'a\"b'"),
        4,
        "carrier[0].register.realm",
        "must not contain",
    );
}

#[test]
fn empty_password_file_and_secret_never_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "topsecret\n").unwrap();
    let text = format!(
        "[[carrier]]\nname = \"a\"\nproxy = \"udp:10.0.0.1:5060\"\nregister = {{ user = \"u\", password_file = '{}' }}\n\
         [[carrier]]\nname = \"b\"\nproxy = \"udp:10.0.0.2:5060\"\nregister = {{ user = \"u\", password_file = '{}', expires = 1 }}\n",
        empty.display(),
        pw.display()
    );
    assert_error(&text, 4, "carrier[0].register.password_file", "the password is empty");
    let msg = Config::from_toml_str(&text, "t.toml").unwrap_err().to_string();
    assert!(!msg.contains("topsecret"), "{msg}");
}

#[test]
fn all_errors_are_reported_in_line_order() {
    let text = "\
[sip]
listen = [\"udpx:1.2.3.4:5060\"]
[call]
max_duration_s = 0
[[carrier]]
name = \"a\"
proxy = \"udp:10.0.0.1:5060\"
probe = { down_after = 0, up_after = 0 }
";
    let all = errors(text);
    let lines: Vec<_> = all.iter().map(|d| (d.line, d.field.to_string())).collect();
    assert_eq!(
        lines,
        vec![
            (Some(2), "sip.listen[0]".to_string()),
            (Some(4), "call.max_duration_s".to_string()),
            (Some(8), "carrier[0].probe.down_after".to_string()),
            (Some(8), "carrier[0].probe.up_after".to_string()),
        ]
    );
}

#[test]
fn load_reads_files_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, EXAMPLE).unwrap();
    assert_eq!(Config::load(&good).unwrap().carriers.len(), 2);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[call]\nmax_duration_s = 0\n").unwrap();
    let msg = Config::load(&bad).unwrap_err().to_string();
    assert!(msg.contains(&format!("{}:2: call.max_duration_s", bad.display())), "{msg}");
    let missing = Config::load(dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
    assert!(missing.diagnostics().is_empty());
}

// ---- [state] ------------------------------------------------------------------------------

#[test]
fn state_dir_defaults_to_systemd_state_directory_then_a_local_directory() {
    use std::ffi::OsString;
    use std::path::PathBuf;
    assert_eq!(defaults::state_dir_from(None), PathBuf::from("./trunkguard-state"));
    assert_eq!(
        defaults::state_dir_from(Some(OsString::from(""))),
        PathBuf::from("./trunkguard-state")
    );
    assert_eq!(
        defaults::state_dir_from(Some(OsString::from("/var/lib/trunkguard"))),
        PathBuf::from("/var/lib/trunkguard")
    );
    assert_eq!(
        defaults::state_dir_from(Some(OsString::from("/var/lib/a:/var/lib/b"))),
        PathBuf::from("/var/lib/a")
    );
}

#[test]
fn state_dir_is_read_and_must_not_name_a_file() {
    let c = parse(&with_carrier("[state]\ndir = \"/nonexistent/yet/trunkguard\""));
    assert_eq!(c.state.dir, std::path::PathBuf::from("/nonexistent/yet/trunkguard"));
    let file = tempfile::NamedTempFile::new().unwrap();
    let text = with_carrier(&format!("[state]\ndir = {:?}", file.path().display().to_string()));
    let err = Config::from_toml_str(&text, "t.toml").unwrap_err().to_string();
    assert!(err.contains("state.dir") && err.contains("not a directory"), "{err}");
    let err = Config::from_toml_str(&with_carrier("[state]\ndir = \"\""), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("state.dir") && err.contains("empty"), "{err}");
    let err = Config::from_toml_str(&with_carrier("[state]\ndirectory = \"x\""), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("directory"), "{err}");
}

#[test]
fn call_record_retention_defaults_and_bounds() {
    let c = parse(&with_carrier(""));
    assert_eq!((c.state.keep_days, c.state.max_rows), (90, 100_000));
    let c = parse(&with_carrier("[state]\nkeep_days = 7\nmax_rows = 500"));
    assert_eq!((c.state.keep_days, c.state.max_rows), (7, 500));
    let err =
        Config::from_toml_str(&with_carrier("[state]\nkeep_days = 0\nmax_rows = 0"), "t.toml")
            .unwrap_err()
            .to_string();
    assert!(err.contains("state.keep_days") && err.contains("state.max_rows"), "{err}");
}

#[test]
fn ladder_sections_default_when_absent() {
    let c = parse(&with_carrier(""));
    assert_eq!(c.fallback, crate::config::model::FallbackConfig::default());
    assert!(c.fallback.menu && c.fallback.human.is_none());
    assert_eq!(c.callback.webhook_url, None);
    assert_eq!(c.outbound.no_provisional_ms, 2000);
    assert_eq!(c.carriers[0].transfer, crate::config::model::TransferMode::Invite);
}

#[test]
fn ladder_sections_are_read() {
    let text = r#"
[[carrier]]
name = "a"
proxy = "udp:127.0.0.1:5070"
transfer = "refer"

[fallback]
menu_timeout_s = 5
menu_attempts = 3
no_answer = "hangup"
human = "sip:desk@127.0.0.1:5090"
human_timeout_s = 20

[callback]
webhook_url = "https://crm.example/hooks/callback"
timeout_ms = 2000
backoff_initial_ms = 500
backoff_max_s = 60
give_up_after_h = 24

[outbound]
no_provisional_ms = 1500
preferred_carrier = "a"
"#;
    let c = parse(text);
    assert_eq!(c.carriers[0].transfer, crate::config::model::TransferMode::Refer);
    assert_eq!(c.fallback.human.as_deref(), Some("sip:desk@127.0.0.1:5090"));
    assert_eq!(c.fallback.no_answer, crate::config::model::NoAnswerAction::Hangup);
    assert_eq!(
        (c.fallback.menu_timeout_s, c.fallback.menu_attempts, c.fallback.human_timeout_s),
        (5, 3, 20)
    );
    assert_eq!(c.callback.webhook_url.as_deref(), Some("https://crm.example/hooks/callback"));
    assert_eq!(
        (
            c.callback.timeout_ms,
            c.callback.backoff_initial_ms,
            c.callback.backoff_max_s,
            c.callback.give_up_after_h
        ),
        (2000, 500, 60, 24)
    );
    assert_eq!(c.outbound.no_provisional_ms, 1500);
    assert_eq!(c.outbound.preferred_carrier.as_deref(), Some("a"));
}

#[test]
fn ladder_errors_name_their_fields() {
    let text = r#"
[[carrier]]
name = "a"
inbound_from = ["127.0.0.1"]
transfer = "blind"

[fallback]
no_answer = "sing"
human = "tel:+4940123"
menu_attempts = 0

[callback]
webhook_url = "ftp://x"

[outbound]
preferred_carrier = "zzz"
no_provisional_ms = 10
"#;
    let err = Config::from_toml_str(text, "t.toml").unwrap_err().to_string();
    for field in [
        "carrier[0].transfer",
        "fallback.no_answer",
        "fallback.human",
        "fallback.menu_attempts",
        "callback.webhook_url",
        "outbound.no_provisional_ms",
    ] {
        assert!(err.contains(field), "{field} missing in: {err}");
    }
    // the cross-check runs once the sections themselves are valid
    let text = "[[carrier]]\nname = \"a\"\ninbound_from = [\"127.0.0.1\"]\n[fallback]\nhuman = \"sip:desk@127.0.0.1\"\n[outbound]\npreferred_carrier = \"a\"\n";
    let err = Config::from_toml_str(text, "t.toml").unwrap_err().to_string();
    assert!(err.contains("outbound.preferred_carrier") && err.contains("no proxy"), "{err}");
    assert!(err.contains("fallback.human") && err.contains("with a proxy"), "{err}");
}

// ---- bounds: numbers the runtime can hold, files and strings read with a limit ------------

#[test]
fn durations_beyond_the_clock_are_refused() {
    let text = with_carrier("[call]\nmax_duration_s = 9223372036854775807");
    assert_error(&text, 2, "call.max_duration_s", "must be at most 86400");
    assert_eq!(parse(&with_carrier("[call]\nmax_duration_s = 86400")).call.max_duration_s, 86_400);
    let probe = "[[carrier]]\nname = \"a\"\nproxy = \"udp:10.0.0.1:5060\"\n\
                 probe = { interval_ms = 9223372036854775807, timeout_ms = 9223372036854775807, \
                 down_after = 4294967295, up_after = 101 }\n";
    for field in ["interval_ms", "timeout_ms", "down_after", "up_after"] {
        assert_error(probe, 4, &format!("carrier[0].probe.{field}"), "must be at most");
    }
}

#[test]
fn register_expires_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let text = format!(
        "[[carrier]]\nname = \"a\"\nproxy = \"udp:10.0.0.1:5060\"\n\
         register = {{ user = \"u\", password_file = '{}', expires = 4294967295 }}\n",
        pw.display()
    );
    assert_error(&text, 4, "carrier[0].register.expires", "must be at most 86400");
}

#[test]
fn numbers_too_big_for_toml_keep_their_field() {
    let text = with_carrier("[call]\nmax_duration_s = 99999999999999999999999");
    let all = errors(&text);
    let shown: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert!(
        all.iter().any(|d| d.line == Some(2) && d.field.to_string() == "call.max_duration_s"),
        "{shown:?}"
    );
    let text =
        "[[carrier]]\nname = \"a\"\nproxy = \"udp:10.0.0.1:5060\"\n[[carrier]]\nname = \"b\"\n\
                proxy = \"udp:10.0.0.2:5060\"\n[carrier.probe]\ndown_after = 99999999999\n";
    assert_error(text, 8, "carrier[1].probe.down_after", "");
    let text = "[media]\njitter_min_ms = -1\n";
    assert_error(text, 2, "media.jitter_min_ms", "");
}

#[test]
fn secret_files_are_read_with_a_limit() {
    let text = "[[carrier]]\nname = \"a\"\nproxy = \"udp:10.0.0.1:5060\"\n\
                register = { user = \"u\", password_file = \"/dev/zero\" }\n\
                [[ai_endpoint]]\nname = \"p\"\nrole = \"primary\"\nprotocol = \"openai-realtime\"\n\
                url = \"wss://a.example/x\"\ntoken_file = \"/dev/zero\"\n";
    assert_error(text, 4, "carrier[0].register.password_file", "larger than 16384 bytes");
    assert_error(text, 10, "ai_endpoint[0].token_file", "larger than 16384 bytes");
}

#[test]
fn tls_and_prompt_files_must_be_regular_and_bounded() {
    let text = "[sip]\ntls = { cert = \"/dev/zero\", key = \"/dev/zero\" }\n";
    assert_error(text, 2, "sip.tls.cert", "not a regular file");
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.pem");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(bounds::MAX_PEM_BYTES + 1).unwrap();
    let text =
        format!("[sip]\ntls = {{ cert = '{}', key = '{}' }}\n", big.display(), big.display());
    assert_error(&text, 2, "sip.tls.key", "larger than 1048576");
    let prompt = dir.path().join("high-demand.wav");
    std::fs::File::create(&prompt).unwrap().set_len(bounds::MAX_PROMPT_BYTES + 1).unwrap();
    let text = with_carrier(&format!("[prompts]\ndir = '{}'", dir.path().display()));
    assert_error(&text, 1, "prompts.high_demand", "larger than 2097152");
}

#[test]
fn strings_and_lists_are_bounded_naming_the_field() {
    let ua = "a".repeat(bounds::MAX_USER_AGENT + 1);
    assert_error(
        &with_carrier(&format!("[sip]\nuser_agent = \"{ua}\"")),
        2,
        "sip.user_agent",
        "at most 256",
    );
    let ua = "a".repeat(bounds::MAX_USER_AGENT);
    assert_eq!(parse(&with_carrier(&format!("[sip]\nuser_agent = \"{ua}\""))).sip.user_agent, ua);
    let long = "x".repeat(bounds::MAX_STRING + 1);
    let text = format!(
        "[[carrier]]\nname = \"a\"\ninbound_from = [\"192.0.2.1\"]\n[[ai_endpoint]]\nname = \"p\"\n\
         role = \"primary\"\nprotocol = \"openai-realtime\"\nurl = \"wss://a.example/x\"\n\
         voice = \"{long}\"\ninstructions = \"{long}\"\nheaders = {{ X-A = \"{long}\" }}\n"
    );
    assert_error(&text, 9, "ai_endpoint[0].voice", "at most 4096");
    assert_error(&text, 11, "ai_endpoint[0].headers.X-A", "at most 4096");
    let all = errors(&text);
    assert!(!all.iter().any(|d| d.field.to_string() == "ai_endpoint[0].instructions"), "{all:?}");
    let many = vec!["\"192.0.2.1\""; bounds::MAX_ENTRIES + 1].join(",");
    let text = format!("[[carrier]]\nname = \"a\"\ninbound_from = [{many}]\n");
    assert_error(&text, 3, "carrier[0].inbound_from", "at most 1024");
}

#[test]
fn load_refuses_a_file_larger_than_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    let ua = "a".repeat(bounds::MAX_CONFIG_BYTES as usize);
    std::fs::write(&path, format!("[sip]\nuser_agent = \"{ua}\"\n")).unwrap();
    let e = Config::load(&path).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
}
