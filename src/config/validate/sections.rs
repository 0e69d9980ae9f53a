//! Validation of the single-instance sections: `[sip]`, `[media]`, `[status]`, `[prompts]`,
//! `[call]`, `[state]`, and the checks between them (port clashes).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::checks::{between, bounded_file, header_text, host, readable_file, required};
use super::Checker;
use crate::config::addr::{ListenAddr, PortRange};
use crate::config::bounds::{read_limited, MAX_PROMPT_BYTES};
use crate::config::defaults;
use crate::config::error::FieldPath;
use crate::config::model::{
    CallConfig, MediaConfig, PromptsConfig, SipConfig, StateConfig, StatusConfig, StatusTls,
    TlsConfig,
};
use crate::config::raw::{RawCall, RawMedia, RawPrompts, RawSip, RawState, RawStatus, RawTls};
use crate::core::ladder::prompts::load_checked;
use crate::core::ladder::PromptId;
use crate::core::sip::Transport;

pub(crate) fn sip(raw: RawSip, path: &FieldPath, c: &mut Checker) -> Option<SipConfig> {
    let listen = listen_addrs(raw.listen, &path.key("listen"), c);
    let tls = match raw.tls {
        Some(t) => tls(t, &path.key("tls"), c).map(Some),
        None => Some(None),
    };
    if let (Some(listen), Some(None)) = (&listen, &tls) {
        for (i, addr) in listen.iter().enumerate() {
            if addr.transport == Transport::Tls {
                c.error(
                    &path.key("listen").index(i),
                    format!("{addr}: a tls listen address needs [sip].tls with cert and key"),
                );
            }
        }
    }
    let user_agent = match raw.user_agent {
        Some(ua) => header_text(&ua, &path.key("user_agent"), c),
        None if raw.user_agent_version == Some(true) => {
            Some(defaults::USER_AGENT_VERSIONED.to_owned())
        }
        None => Some(defaults::USER_AGENT.to_owned()),
    };
    let domain = match raw.domain {
        Some(d) => host(&d, &path.key("domain"), c).map(Some),
        None => Some(None),
    };
    Some(SipConfig { listen: listen?, tls: tls?, user_agent: user_agent?, domain: domain? })
}

fn listen_addrs(
    raw: Option<Vec<String>>,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<Vec<ListenAddr>> {
    let texts =
        raw.unwrap_or_else(|| defaults::SIP_LISTEN.iter().map(|s| (*s).to_owned()).collect());
    if texts.is_empty() {
        c.error(path, "must list at least one address");
        return None;
    }
    let mut parsed: Vec<ListenAddr> = Vec::new();
    let mut ok = true;
    for (i, text) in texts.iter().enumerate() {
        match text.parse::<ListenAddr>() {
            Ok(addr) => {
                if let Some(j) = parsed.iter().position(|p| same_socket(*p, addr)) {
                    c.error(&path.index(i), format!("{addr}: same socket as sip.listen[{j}]"));
                    ok = false;
                }
                parsed.push(addr);
            }
            Err(e) => {
                c.error(&path.index(i), e.to_string());
                ok = false;
            }
        }
    }
    ok.then_some(parsed)
}

/// Two listen entries would bind the same socket (tcp and tls are both TCP sockets).
fn same_socket(a: ListenAddr, b: ListenAddr) -> bool {
    let stream = |t: Transport| t != Transport::Udp;
    a.addr == b.addr && a.addr.port() != 0 && stream(a.transport) == stream(b.transport)
}

fn tls(raw: RawTls, path: &FieldPath, c: &mut Checker) -> Option<TlsConfig> {
    let cert = required(raw.cert, &path.key("cert"), c)
        .and_then(|v| readable_file(&v, &path.key("cert"), c));
    let key =
        required(raw.key, &path.key("key"), c).and_then(|v| readable_file(&v, &path.key("key"), c));
    let client_ca = match raw.client_ca {
        Some(v) => readable_file(&v, &path.key("client_ca"), c).map(Some),
        None => Some(None),
    };
    let require_client_cert = raw.require_client_cert.unwrap_or(false);
    if require_client_cert && matches!(client_ca, Some(None)) {
        c.error(
            &path.key("require_client_cert"),
            "requires client_ca (the CA that signs client certificates)",
        );
        return None;
    }
    Some(TlsConfig { cert: cert?, key: key?, client_ca: client_ca?, require_client_cert })
}

pub(crate) fn media(raw: RawMedia, path: &FieldPath, c: &mut Checker) -> Option<MediaConfig> {
    let bind = match raw.bind {
        Some(text) => parse_ip(&text, &path.key("bind"), c),
        None => Some(defaults::MEDIA_BIND),
    };
    let rtp_ports = match raw.rtp_ports {
        Some(text) => match text.parse::<PortRange>() {
            Ok(range) => Some(range),
            Err(e) => {
                c.error(&path.key("rtp_ports"), e.to_string());
                None
            }
        },
        None => Some(defaults::RTP_PORTS),
    };
    let key = |k| path.key(k);
    let jitter_min_ms = ranged(
        raw.jitter_min_ms,
        MediaConfig::DEFAULT_JITTER_MIN_MS,
        (10, 1000),
        &key("jitter_min_ms"),
        c,
    );
    let jitter_max_ms = ranged(
        raw.jitter_max_ms,
        MediaConfig::DEFAULT_JITTER_MAX_MS,
        (20, 2000),
        &key("jitter_max_ms"),
        c,
    );
    let jitter_initial_ms = ranged(
        raw.jitter_initial_ms,
        MediaConfig::DEFAULT_JITTER_INITIAL_MS,
        (10, 60),
        &key("jitter_initial_ms"),
        c,
    );
    let complexity = raw.opus_complexity.map(u64::from);
    let opus_complexity = ranged(
        complexity,
        MediaConfig::DEFAULT_OPUS_COMPLEXITY.into(),
        (0, 10),
        &key("opus_complexity"),
        c,
    );
    let bitrate = raw.opus_bitrate.map(u64::from);
    let opus_bitrate = ranged(
        bitrate,
        MediaConfig::DEFAULT_OPUS_BITRATE.into(),
        (6_000, 510_000),
        &key("opus_bitrate"),
        c,
    );
    if let (Some(min), Some(max)) = (jitter_min_ms, jitter_max_ms) {
        if min > max {
            c.error(
                &key("jitter_max_ms"),
                format!("must not be below jitter_min_ms ({max} < {min})"),
            );
            return None;
        }
    }
    Some(MediaConfig {
        bind: bind?,
        rtp_ports: rtp_ports?,
        jitter_min_ms: jitter_min_ms?,
        jitter_max_ms: jitter_max_ms?,
        jitter_initial_ms: jitter_initial_ms?,
        opus_complexity: u8::try_from(opus_complexity?).ok()?,
        opus_bitrate: u32::try_from(opus_bitrate?).ok()?,
    })
}

/// `value` (or `default` when absent) within `lo..=hi`, else an error naming `path`.
fn ranged(
    value: Option<u64>,
    default: u64,
    (lo, hi): (u64, u64),
    path: &FieldPath,
    c: &mut Checker,
) -> Option<u64> {
    let v = value.unwrap_or(default);
    if !(lo..=hi).contains(&v) {
        c.error(path, format!("must be between {lo} and {hi} (got {v})"));
        return None;
    }
    Some(v)
}

fn parse_ip(text: &str, path: &FieldPath, c: &mut Checker) -> Option<IpAddr> {
    match text.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            c.error(path, format!("{text:?}: expected an IP address, e.g. \"127.0.0.1\""));
            None
        }
    }
}

pub(crate) fn status(raw: RawStatus, path: &FieldPath, c: &mut Checker) -> Option<StatusConfig> {
    let tls = match raw.tls {
        Some(value) => status_tls(value, &path.key("tls"), c).map(Some),
        None => Some(None),
    };
    let Some(text) = raw.listen else {
        return Some(StatusConfig { listen: defaults::STATUS_LISTEN, tls: tls? });
    };
    match text.parse::<SocketAddr>() {
        Ok(listen) => Some(StatusConfig { listen, tls: tls? }),
        Err(_) => {
            c.error(
                &path.key("listen"),
                format!("{text:?}: expected IP:PORT, e.g. \"127.0.0.1:8080\""),
            );
            None
        }
    }
}

/// `[status] tls`: `"self-signed"` or a table `{ cert = PATH, key = PATH }`.
fn status_tls(value: toml::Value, path: &FieldPath, c: &mut Checker) -> Option<StatusTls> {
    const EXPECTED: &str = "expected \"self-signed\" or { cert = \"...\", key = \"...\" }";
    let table = match value {
        toml::Value::String(s) if s == "self-signed" => return Some(StatusTls::SelfSigned),
        toml::Value::String(s) => {
            c.error(path, format!("{s:?}: {EXPECTED}"));
            return None;
        }
        toml::Value::Table(t) => t,
        other => {
            c.error(path, format!("{}: {EXPECTED}", other.type_str()));
            return None;
        }
    };
    let mut file = |key: &str| {
        let at = path.key(key);
        match table.get(key) {
            Some(toml::Value::String(s)) => readable_file(s, &at, c),
            Some(other) => {
                c.error(&at, format!("expected a file path (string), got {}", other.type_str()));
                None
            }
            None => required(None::<PathBuf>, &at, c),
        }
    };
    let (cert, key) = (file("cert"), file("key"));
    let mut ok = true;
    for unknown in table.keys().filter(|k| !matches!(k.as_str(), "cert" | "key")) {
        c.error(&path.key(unknown), "unknown key (expected cert and key)");
        ok = false;
    }
    ok.then_some(StatusTls::Files { cert: cert?, key: key? })
}

/// `[prompts]`: with `dir`, the high-demand prompt and every prompt named by its key must be
/// there; a ladder prompt not named plays from `dir` when its default file is there, else its
/// embedded copy. Every file used is loaded now: format (WAV, 8000 Hz mono 16-bit PCM) and
/// length (0.3 to 60 s), the error naming the key and the file.
pub(crate) fn prompts(raw: RawPrompts, path: &FieldPath, c: &mut Checker) -> Option<PromptsConfig> {
    let Some(dir) = raw.dir.clone() else {
        let mut ok = true;
        for id in PromptId::ALL.into_iter().filter(|id| raw.named(*id).is_some()) {
            c.error(
                &path.key(id.key()),
                "has no effect without prompts.dir (the embedded prompt is used)",
            );
            ok = false;
        }
        return ok.then(|| PromptsConfig {
            dir: None,
            high_demand: defaults::HIGH_DEMAND_PROMPT.to_owned(),
            files: Vec::new(),
        });
    };
    let dir_path = PathBuf::from(&dir);
    if !dir_path.is_dir() {
        c.error(&path.key("dir"), format!("{dir:?}: not a directory"));
        return None;
    }
    let mut files = Vec::new();
    let mut ok = true;
    for id in PromptId::ALL {
        let named = raw.named(id);
        let file = dir_path.join(named.map_or(id.file_name(), String::as_str));
        if named.is_none() && id != PromptId::HighDemand && !file.exists() {
            continue; // the embedded copy plays
        }
        match prompt_file(&file, &path.key(id.key()), c) {
            Some(()) => files.push((id, file)),
            None => ok = false,
        }
    }
    let high_demand = raw.high_demand.unwrap_or_else(|| defaults::HIGH_DEMAND_PROMPT.to_owned());
    ok.then_some(PromptsConfig { dir: Some(dir_path), high_demand, files })
}

/// A prompt file that exists, is readable, and loads as a prompt of an accepted length (read
/// with a size limit).
fn prompt_file(file: &std::path::Path, path: &FieldPath, c: &mut Checker) -> Option<()> {
    bounded_file(&file.to_string_lossy(), MAX_PROMPT_BYTES, path, c)?;
    let loaded = read_limited(file, MAX_PROMPT_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|bytes| load_checked(&bytes).map_err(|e| e.to_string()));
    match loaded {
        Ok(_) => Some(()),
        Err(e) => {
            c.error(path, format!("{}: {e}", file.display()));
            None
        }
    }
}

/// The longest call accepted: one day (any larger value is a mistake, and the largest integers
/// would overflow the clock when a call starts).
pub const MAX_CALL_DURATION_S: u64 = 86_400;

pub(crate) fn call(raw: RawCall, path: &FieldPath, c: &mut Checker) -> Option<CallConfig> {
    let max = raw.max_duration_s.unwrap_or(defaults::MAX_CALL_DURATION_S);
    let max_duration_s = between(max, (1, MAX_CALL_DURATION_S), &path.key("max_duration_s"), c)?;
    Some(CallConfig { max_duration_s })
}

/// `[state] dir`: not checked for existence (it is created at start), but it must not name a
/// file. Default: `$STATE_DIRECTORY` (systemd `StateDirectory=`), else `./trunkguard-state`.
/// `keep_days` (1..=3650) and `max_rows` (1..=10 000 000) bound the call records.
pub(crate) fn state(raw: RawState, path: &FieldPath, c: &mut Checker) -> Option<StateConfig> {
    let keep_days = ranged(
        raw.keep_days,
        u64::from(defaults::STATE_KEEP_DAYS),
        (1, 3650),
        &path.key("keep_days"),
        c,
    );
    let max_rows = ranged(
        raw.max_rows,
        u64::from(defaults::STATE_MAX_ROWS),
        (1, 10_000_000),
        &path.key("max_rows"),
        c,
    );
    let dir = state_dir(raw.dir, path, c);
    Some(StateConfig {
        dir: dir?,
        keep_days: u32::try_from(keep_days?).ok()?,
        max_rows: u32::try_from(max_rows?).ok()?,
    })
}

fn state_dir(dir: Option<String>, path: &FieldPath, c: &mut Checker) -> Option<PathBuf> {
    let Some(dir) = dir else {
        return Some(defaults::state_dir());
    };
    let dir_path = PathBuf::from(&dir);
    if dir.trim().is_empty() {
        c.error(&path.key("dir"), "must not be empty");
        return None;
    }
    if dir_path.exists() && !dir_path.is_dir() {
        c.error(&path.key("dir"), format!("{dir:?}: exists and is not a directory"));
        return None;
    }
    Some(dir_path)
}

/// Two addresses could bind the same port: equal, or one is the wildcard of the same family.
fn ips_collide(a: IpAddr, b: IpAddr) -> bool {
    a == b || (a.is_ipv4() == b.is_ipv4() && (a.is_unspecified() || b.is_unspecified()))
}

/// No SIP listen port may fall inside the RTP range on a colliding address.
pub(crate) fn check_rtp_vs_sip(sip: &SipConfig, media: &MediaConfig, c: &mut Checker) {
    let path = FieldPath::root().key("media").key("rtp_ports");
    for (i, l) in sip.listen.iter().enumerate() {
        let port = l.addr.port();
        if port != 0 && ips_collide(l.addr.ip(), media.bind) && media.rtp_ports.contains(port) {
            c.error(&path, format!("{} overlaps sip.listen[{i}] {l}", media.rtp_ports));
        }
    }
}

/// The HTTP status server must not take a SIP TCP/TLS socket.
pub(crate) fn check_status_vs_sip(sip: &SipConfig, status: &StatusConfig, c: &mut Checker) {
    let path = FieldPath::root().key("status").key("listen");
    for (i, l) in sip.listen.iter().enumerate() {
        let port = l.addr.port();
        let clash = l.transport != Transport::Udp
            && port != 0
            && port == status.listen.port()
            && ips_collide(l.addr.ip(), status.listen.ip());
        if clash {
            c.error(
                &path,
                format!("{} is the same TCP socket as sip.listen[{i}] {l}", status.listen),
            );
        }
    }
}
