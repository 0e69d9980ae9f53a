//! `[connections]`: caps and timeouts for SIP over TCP/TLS and the status server. Every key
//! has a range the runtime can hold; a per-source cap may not exceed its total.

use super::Checker;
use crate::config::error::FieldPath;
use crate::config::model::ConnectionsConfig;
use crate::config::raw::RawConnections;

pub(crate) fn connections(
    raw: RawConnections,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<ConnectionsConfig> {
    let d = ConnectionsConfig::default();
    let mut key = |v: Option<u64>, default: u64, range: (u64, u64), name: &str| {
        within(v.unwrap_or(default), range, &path.key(name), c)
    };
    let sip_max = key(raw.sip_max, d.sip_max, (16, 65_536), "sip_max");
    let sip_per =
        key(raw.sip_max_per_source, d.sip_max_per_source, (1, 65_536), "sip_max_per_source");
    let sip_res =
        key(raw.sip_reserved_percent, d.sip_reserved_percent, (0, 90), "sip_reserved_percent");
    let http_max = key(raw.http_max, d.http_max, (8, 4096), "http_max");
    let http_per =
        key(raw.http_max_per_source, d.http_max_per_source, (1, 4096), "http_max_per_source");
    let http_res =
        key(raw.http_reserved_percent, d.http_reserved_percent, (0, 90), "http_reserved_percent");
    let head = key(raw.head_timeout_ms, d.head_timeout_ms, (500, 60_000), "head_timeout_ms");
    let idle = key(raw.idle_timeout_s, d.idle_timeout_s, (10, 86_400), "idle_timeout_s");
    let http_idle =
        key(raw.http_idle_timeout_s, d.http_idle_timeout_s, (5, 3600), "http_idle_timeout_s");
    let tls = key(
        raw.tls_handshake_timeout_ms,
        d.tls_handshake_timeout_ms,
        (500, 60_000),
        "tls_handshake_timeout_ms",
    );
    let cfg = ConnectionsConfig {
        sip_max: sip_max?,
        sip_max_per_source: sip_per?,
        sip_reserved_percent: sip_res?,
        http_max: http_max?,
        http_max_per_source: http_per?,
        http_reserved_percent: http_res?,
        head_timeout_ms: head?,
        idle_timeout_s: idle?,
        http_idle_timeout_s: http_idle?,
        tls_handshake_timeout_ms: tls?,
    };
    if cfg.sip_max_per_source > cfg.sip_max {
        c.error(&path.key("sip_max_per_source"), "must not exceed sip_max");
        return None;
    }
    if cfg.http_max_per_source > cfg.http_max {
        c.error(&path.key("http_max_per_source"), "must not exceed http_max");
        return None;
    }
    Some(cfg)
}

fn within(v: u64, (lo, hi): (u64, u64), path: &FieldPath, c: &mut Checker) -> Option<u64> {
    if !(lo..=hi).contains(&v) {
        c.error(path, format!("must be between {lo} and {hi} (got {v})"));
        return None;
    }
    Some(v)
}
