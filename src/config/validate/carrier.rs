//! Validation of `[[carrier]]` tables: each carrier on its own (proxy, inbound_from, probe,
//! register with its password), then across carriers (unique names, disjoint networks).

use ipnet::IpNet;

use super::checks::{between, header_text, host, required, user_part};
use super::Checker;
use crate::config::addr::{parse_net, parse_transport_addr};
use crate::config::bounds::{read_limited_string, MAX_SECRET_BYTES};
use crate::config::error::FieldPath;
use crate::config::model::{CarrierConfig, Password, ProbeConfig, RegisterConfig};
use crate::config::raw::{RawCarrier, RawProbe, RawRegister};
use crate::core::sip::Peer;

/// The longest probe interval (and timeout): one hour.
const MAX_PROBE_INTERVAL_MS: u64 = 3_600_000;

/// What cross-carrier checks need, kept even when the carrier itself is invalid.
struct Checked {
    config: Option<CarrierConfig>,
    name: Option<String>,
    /// Parsed networks with their index in `inbound_from`.
    nets: Vec<(usize, IpNet)>,
}

pub(crate) fn carriers(
    raw: Vec<RawCarrier>,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<Vec<CarrierConfig>> {
    if raw.is_empty() {
        c.error(path, "at least one [[carrier]] is required");
        return None;
    }
    let checked: Vec<Checked> =
        raw.into_iter().enumerate().map(|(i, r)| carrier(r, &path.index(i), c)).collect();
    check_unique_names(&checked, path, c);
    check_disjoint_nets(&checked, path, c);
    checked.into_iter().map(|ch| ch.config).collect()
}

fn carrier(raw: RawCarrier, path: &FieldPath, c: &mut Checker) -> Checked {
    let name = required(raw.name, &path.key("name"), c)
        .and_then(|n| carrier_name(&n, &path.key("name"), c));
    let proxy = match raw.proxy {
        Some(text) => proxy(&text, &path.key("proxy"), c).map(Some),
        None => Some(None),
    };
    let (nets, nets_ok) =
        inbound_from(raw.inbound_from.unwrap_or_default(), &path.key("inbound_from"), c);
    let has_proxy = matches!(proxy, Some(Some(_)));
    let no_proxy = matches!(proxy, Some(None));
    if no_proxy && nets.is_empty() && nets_ok {
        c.error(path, "needs a proxy, an inbound_from list, or both");
    }
    let probe = probe(raw.probe, has_proxy, no_proxy, &path.key("probe"), c);
    let register = match raw.register {
        Some(_) if no_proxy => {
            c.error(&path.key("register"), "requires proxy (where REGISTER is sent)");
            None
        }
        Some(r) => register(r, &path.key("register"), c).map(Some),
        None => Some(None),
    };
    let transfer = super::ladder::transfer_mode(raw.transfer, &path.key("transfer"), c);
    let config = (|| {
        nets_ok.then_some(())?;
        Some(CarrierConfig {
            name: name.clone()?,
            proxy: proxy?,
            inbound_from: nets.iter().map(|(_, n)| *n).collect(),
            probe: probe?,
            register: register?,
            transfer: transfer?,
        })
    })();
    Checked { config, name, nets }
}

fn carrier_name(name: &str, path: &FieldPath, c: &mut Checker) -> Option<String> {
    let valid = |ch: char| ch.is_ascii_alphanumeric() || "-_.".contains(ch);
    if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
        c.error(path, format!("{name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"));
        return None;
    }
    Some(name.to_owned())
}

fn proxy(text: &str, path: &FieldPath, c: &mut Checker) -> Option<Peer> {
    let (transport, addr) = match parse_transport_addr(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            c.error(path, e.to_string());
            return None;
        }
    };
    if addr.port() == 0 || addr.ip().is_unspecified() {
        c.error(path, format!("{text:?}: a proxy needs a concrete IP and a non-zero port"));
        return None;
    }
    Some(Peer { transport, addr })
}

/// Parsed networks (with their indices) and whether all entries parsed.
fn inbound_from(
    texts: Vec<String>,
    path: &FieldPath,
    c: &mut Checker,
) -> (Vec<(usize, IpNet)>, bool) {
    let mut nets = Vec::new();
    let mut ok = true;
    for (i, text) in texts.iter().enumerate() {
        match parse_net(text) {
            Ok(net) => nets.push((i, net)),
            Err(e) => {
                c.error(&path.index(i), e.to_string());
                ok = false;
            }
        }
    }
    (nets, ok)
}

/// `Some(Some(_))` with a proxy, `Some(None)` without one, `None` on error.
fn probe(
    raw: Option<RawProbe>,
    has_proxy: bool,
    no_proxy: bool,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<Option<ProbeConfig>> {
    if no_proxy {
        if raw.is_some() {
            c.error(path, "requires proxy (a carrier without proxy is not probed)");
            return None;
        }
        return Some(None);
    }
    let raw = raw.unwrap_or_default();
    let d = ProbeConfig::DEFAULT;
    let interval_ms = between(
        raw.interval_ms.unwrap_or(d.interval_ms),
        (1, MAX_PROBE_INTERVAL_MS),
        &path.key("interval_ms"),
        c,
    );
    let timeout_ms = between(
        raw.timeout_ms.unwrap_or(d.timeout_ms),
        (1, MAX_PROBE_INTERVAL_MS),
        &path.key("timeout_ms"),
        c,
    );
    let down_after =
        between(raw.down_after.unwrap_or(d.down_after), (1, 100), &path.key("down_after"), c);
    let up_after = between(raw.up_after.unwrap_or(d.up_after), (1, 100), &path.key("up_after"), c);
    if let (Some(interval), Some(timeout)) = (interval_ms, timeout_ms) {
        if timeout > interval {
            c.error(
                &path.key("timeout_ms"),
                format!("must not exceed interval_ms ({timeout} > {interval})"),
            );
            return None;
        }
    }
    if !has_proxy {
        return None; // the proxy itself was invalid and already reported
    }
    Some(Some(ProbeConfig {
        interval_ms: interval_ms?,
        timeout_ms: timeout_ms?,
        down_after: down_after?,
        up_after: up_after?,
    }))
}

fn register(raw: RawRegister, path: &FieldPath, c: &mut Checker) -> Option<RegisterConfig> {
    let user =
        required(raw.user, &path.key("user"), c).and_then(|u| user_part(&u, &path.key("user"), c));
    let password = password(raw.password_file, raw.password_env, path, c);
    let expires = raw.expires.unwrap_or(RegisterConfig::DEFAULT_EXPIRES_S);
    let range = (RegisterConfig::MIN_EXPIRES_S, RegisterConfig::MAX_EXPIRES_S);
    let expires_s = between(expires, range, &path.key("expires"), c);
    let domain = optional(raw.domain, |d, c| host(d, &path.key("domain"), c), c);
    let realm = optional(raw.realm, |r, c| realm(r, &path.key("realm"), c), c);
    let contact_user =
        optional(raw.contact_user, |u, c| user_part(u, &path.key("contact_user"), c), c);
    Some(RegisterConfig {
        user: user?,
        password: password?,
        expires_s: expires_s?,
        domain: domain?,
        realm: realm?,
        contact_user: contact_user?,
    })
}

/// `Some(None)` when absent, `Some(Some(v))` when valid, `None` when invalid.
fn optional<T>(
    raw: Option<String>,
    check: impl FnOnce(&str, &mut Checker) -> Option<T>,
    c: &mut Checker,
) -> Option<Option<T>> {
    match raw {
        Some(v) => check(&v, c).map(Some),
        None => Some(None),
    }
}

fn realm(value: &str, path: &FieldPath, c: &mut Checker) -> Option<String> {
    let text = header_text(value, path, c)?;
    if text.contains('"') || text.contains('\\') {
        c.error(path, "must not contain '\"' or '\\'");
        return None;
    }
    Some(text)
}

/// Reads the password now. Errors never include its content.
fn password(
    file: Option<String>,
    env: Option<String>,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<Password> {
    match (file, env) {
        (Some(_), Some(_)) => {
            c.error(
                &path.key("password_env"),
                "set either password_file or password_env, not both",
            );
            None
        }
        (None, None) => {
            c.error(path, "needs password_file or password_env");
            None
        }
        (Some(file), None) => password_from_file(&file, &path.key("password_file"), c),
        (None, Some(var)) => password_from_env(&var, &path.key("password_env"), c),
    }
}

pub(crate) fn password_from_file(
    file: &str,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<Password> {
    match read_limited_string(std::path::Path::new(file), MAX_SECRET_BYTES) {
        Ok(text) => non_empty_password(text.trim_end_matches(['\r', '\n']), path, c),
        Err(e) => {
            c.error(path, format!("{file:?}: cannot read: {e}"));
            None
        }
    }
}

pub(crate) fn password_from_env(var: &str, path: &FieldPath, c: &mut Checker) -> Option<Password> {
    match std::env::var(var) {
        Ok(value) => non_empty_password(&value, path, c),
        Err(std::env::VarError::NotPresent) => {
            c.error(path, format!("environment variable {var:?} is not set"));
            None
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            c.error(path, format!("environment variable {var:?} is not valid UTF-8"));
            None
        }
    }
}

fn non_empty_password(secret: &str, path: &FieldPath, c: &mut Checker) -> Option<Password> {
    if secret.is_empty() {
        c.error(path, "the password is empty");
        return None;
    }
    Some(Password::new(secret))
}

fn check_unique_names(checked: &[Checked], path: &FieldPath, c: &mut Checker) {
    for (j, later) in checked.iter().enumerate() {
        let Some(name) = &later.name else { continue };
        let first = checked[..j].iter().position(|e| e.name.as_ref() == Some(name));
        if let Some(i) = first {
            c.error(
                &path.index(j).key("name"),
                format!("duplicate carrier name {name:?} (also carrier[{i}])"),
            );
        }
    }
}

/// Every source address must map to at most one carrier.
fn check_disjoint_nets(checked: &[Checked], path: &FieldPath, c: &mut Checker) {
    for (j, later) in checked.iter().enumerate() {
        for (k, net) in &later.nets {
            let clash = checked[..j].iter().enumerate().find_map(|(i, earlier)| {
                earlier
                    .nets
                    .iter()
                    .find(|(_, other)| other.contains(net) || net.contains(other))
                    .map(|(_, other)| (i, *other))
            });
            if let Some((i, other)) = clash {
                c.error(
                    &path.index(j).key("inbound_from").index(*k),
                    format!("{net} overlaps {other} of carrier[{i}]: a source must identify one carrier"),
                );
            }
        }
    }
}
