//! Validation of the degradation ladder's sections: `[fallback]` (menu, human), `[callback]`
//! (webhook delivery) and `[outbound]` (carrier failover for outbound INVITEs), and the checks
//! that tie them to the carriers (the human needs a carrier that can place calls).

use super::checks::readable_file;
use super::Checker;
use crate::config::error::FieldPath;
use crate::config::model::{
    CallbackConfig, CarrierConfig, FallbackConfig, NoAnswerAction, OutboundConfig, TransferMode,
};
use crate::config::raw::{RawCallback, RawFallback, RawOutbound};
use crate::core::sip::headers::SipUri;

fn within(v: u64, (lo, hi): (u64, u64), path: &FieldPath, c: &mut Checker) -> Option<u64> {
    if !(lo..=hi).contains(&v) {
        c.error(path, format!("must be between {lo} and {hi} (got {v})"));
        return None;
    }
    Some(v)
}

/// `[fallback]`.
pub(crate) fn fallback(
    raw: RawFallback,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<FallbackConfig> {
    let d = FallbackConfig::default();
    let menu_timeout_s = within(
        raw.menu_timeout_s.unwrap_or(d.menu_timeout_s),
        (1, 60),
        &path.key("menu_timeout_s"),
        c,
    );
    let attempts = within(
        raw.menu_attempts.unwrap_or(u64::from(d.menu_attempts)),
        (1, 5),
        &path.key("menu_attempts"),
        c,
    );
    let human_timeout_s = within(
        raw.human_timeout_s.unwrap_or(d.human_timeout_s),
        (5, 120),
        &path.key("human_timeout_s"),
        c,
    );
    let no_answer = match raw.no_answer.as_deref() {
        None | Some("callback") => Some(NoAnswerAction::Callback),
        Some("hangup") => Some(NoAnswerAction::Hangup),
        Some(other) => {
            c.error(
                &path.key("no_answer"),
                format!("{other:?}: expected \"callback\" or \"hangup\""),
            );
            None
        }
    };
    let human = match raw.human {
        None => Some(None),
        Some(text) => human_uri(&text, &path.key("human"), c).map(Some),
    };
    Some(FallbackConfig {
        menu: raw.menu.unwrap_or(d.menu),
        menu_timeout_s: menu_timeout_s?,
        menu_attempts: u32::try_from(attempts?).ok()?,
        no_answer: no_answer?,
        human: human?,
        human_timeout_s: human_timeout_s?,
    })
}

fn human_uri(text: &str, path: &FieldPath, c: &mut Checker) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
        c.error(
            path,
            format!("{text:?}: expected a sip: or sips: URI, like \"sip:desk@192.0.2.10\""),
        );
        return None;
    }
    match SipUri::parse(text) {
        Ok(_) => Some(text.to_owned()),
        Err(e) => {
            c.error(path, format!("{text:?}: not a valid SIP URI: {e}"));
            None
        }
    }
}

/// `[callback]`.
pub(crate) fn callback(
    raw: RawCallback,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<CallbackConfig> {
    let d = CallbackConfig::default();
    let timeout_ms =
        within(raw.timeout_ms.unwrap_or(d.timeout_ms), (100, 60_000), &path.key("timeout_ms"), c);
    let initial = within(
        raw.backoff_initial_ms.unwrap_or(d.backoff_initial_ms),
        (100, 60_000),
        &path.key("backoff_initial_ms"),
        c,
    );
    let max = within(
        raw.backoff_max_s.unwrap_or(d.backoff_max_s),
        (1, 86_400),
        &path.key("backoff_max_s"),
        c,
    );
    let give_up = within(
        raw.give_up_after_h.unwrap_or(d.give_up_after_h),
        (1, 24 * 30),
        &path.key("give_up_after_h"),
        c,
    );
    let webhook_url = match raw.webhook_url {
        None => Some(None),
        Some(url) => webhook_url(&url, &path.key("webhook_url"), c).map(Some),
    };
    let ca_bundle = match raw.ca_bundle {
        None => Some(None),
        Some(file) => readable_file(&file, &path.key("ca_bundle"), c).map(Some),
    };
    if let (Some(initial), Some(max)) = (initial, max) {
        if initial > max * 1000 {
            c.error(&path.key("backoff_initial_ms"), "must not exceed backoff_max_s");
        }
    }
    Some(CallbackConfig {
        webhook_url: webhook_url?,
        timeout_ms: timeout_ms?,
        backoff_initial_ms: initial?,
        backoff_max_s: max?,
        give_up_after_h: give_up?,
        ca_bundle: ca_bundle?,
    })
}

fn webhook_url(url: &str, path: &FieldPath, c: &mut Checker) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
    match host {
        Some(h) if !h.is_empty() && !h.contains(char::is_whitespace) && !h.contains('@') => {
            Some(url.to_owned())
        }
        Some(_) => {
            c.error(path, format!("{url:?}: the URL needs a host (and no credentials in it)"));
            None
        }
        None => {
            c.error(path, format!("{url:?}: expected an http:// or https:// URL"));
            None
        }
    }
}

/// `[outbound]`.
pub(crate) fn outbound(
    raw: RawOutbound,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<OutboundConfig> {
    let d = OutboundConfig::default();
    let no_prov = within(
        raw.no_provisional_ms.unwrap_or(d.no_provisional_ms),
        (200, 32_000),
        &path.key("no_provisional_ms"),
        c,
    );
    let failures = within(
        raw.breaker_failures.unwrap_or(u64::from(d.breaker_failures)),
        (1, 100),
        &path.key("breaker_failures"),
        c,
    );
    let cooldown = within(
        raw.breaker_cooldown_s.unwrap_or(d.breaker_cooldown_s),
        (1, 3600),
        &path.key("breaker_cooldown_s"),
        c,
    );
    Some(OutboundConfig {
        no_provisional_ms: no_prov?,
        preferred_carrier: raw.preferred_carrier,
        breaker_failures: u32::try_from(failures?).ok()?,
        breaker_cooldown_s: cooldown?,
    })
}

/// `[[carrier]] transfer`.
pub(crate) fn transfer_mode(
    raw: Option<String>,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<TransferMode> {
    match raw.as_deref() {
        None | Some("invite") => Some(TransferMode::Invite),
        Some("refer") => Some(TransferMode::Refer),
        Some(other) => {
            c.error(path, format!("{other:?}: expected \"invite\" or \"refer\""));
            None
        }
    }
}

/// Cross-checks: the preferred carrier exists and has a proxy; a human needs a carrier with a
/// proxy (the bridged INVITE goes out through one).
pub(crate) fn check_vs_carriers(
    fallback: &FallbackConfig,
    outbound: &OutboundConfig,
    carriers: &[CarrierConfig],
    root: &FieldPath,
    c: &mut Checker,
) {
    if let Some(name) = &outbound.preferred_carrier {
        match carriers.iter().find(|k| &k.name == name) {
            None => c.error(
                &root.key("outbound").key("preferred_carrier"),
                format!("{name:?}: no [[carrier]] has this name"),
            ),
            Some(k) if k.proxy.is_none() => c.error(
                &root.key("outbound").key("preferred_carrier"),
                format!(
                    "{name:?}: this carrier has no proxy, so calls cannot be placed through it"
                ),
            ),
            Some(_) => {}
        }
    }
    if fallback.human.is_some() && !carriers.iter().any(|k| k.proxy.is_some()) {
        c.error(
            &root.key("fallback").key("human"),
            "a human transfer needs at least one [[carrier]] with a proxy to place the call through",
        );
    }
}
