//! Validation of `[ai]` and `[[ai_endpoint]]`: budgets and breaker numbers in range, at most one
//! primary and one standby (a standby needs a primary), URLs that are ws(s)://, plain ws:// only
//! to loopback, a token read now (never printed), and one audio format shared by both.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::carrier::{password_from_env, password_from_file};
use super::checks::{readable_file, required};
use super::Checker;
use crate::config::error::FieldPath;
use crate::config::model::LimitsConfig;
use crate::config::model::{
    AiAudioFormat, AiConfig, AiEndpointConfig, AiProtocolName, AiRole, Password,
};
use crate::config::raw::{RawAi, RawAiEndpoint, RawLimits};

/// The budget can never exceed 2 s: a caller must not wait longer in silence.
const MAX_BUDGET_MS: u64 = 2000;

pub(crate) fn ai(raw: RawAi, path: &FieldPath, c: &mut Checker) -> Option<AiConfig> {
    let d = AiConfig::default();
    let budget = within(
        raw.setup_budget_ms.unwrap_or(d.setup_budget_ms),
        (100, MAX_BUDGET_MS),
        &path.key("setup_budget_ms"),
        c,
    );
    let connect = within(
        raw.connect_timeout_ms.unwrap_or(d.connect_timeout_ms),
        (50, MAX_BUDGET_MS),
        &path.key("connect_timeout_ms"),
        c,
    );
    let failures = within(
        u64::from(raw.breaker_failures.unwrap_or(d.breaker_failures)),
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
    let stall = within(
        raw.stall_timeout_ms.unwrap_or(d.stall_timeout_ms),
        (100, 10_000),
        &path.key("stall_timeout_ms"),
        c,
    );
    let first_audio = within(
        raw.first_audio_timeout_ms.unwrap_or(d.first_audio_timeout_ms),
        (500, 60_000),
        &path.key("first_audio_timeout_ms"),
        c,
    );
    Some(AiConfig {
        setup_budget_ms: budget?,
        connect_timeout_ms: connect?,
        breaker_failures: u32::try_from(failures?).ok()?,
        breaker_cooldown_s: cooldown?,
        stall_timeout_ms: stall?,
        first_audio_timeout_ms: first_audio?,
    })
}

/// `[limits]` (kept beside `[ai]`: both are call-admission policy).
pub(crate) fn limits(raw: RawLimits, path: &FieldPath, c: &mut Checker) -> Option<LimitsConfig> {
    let d = LimitsConfig::default();
    let max_calls =
        within(raw.max_calls.unwrap_or(d.max_calls), (1, 100_000), &path.key("max_calls"), c);
    let rps = within(
        raw.requests_per_second.unwrap_or(d.requests_per_second),
        (1, 100_000),
        &path.key("requests_per_second"),
        c,
    );
    let burst = within(raw.burst.unwrap_or(d.burst), (1, 1_000_000), &path.key("burst"), c);
    let invites = within(
        raw.invites_per_second.unwrap_or(d.invites_per_second),
        (1, 100_000),
        &path.key("invites_per_second"),
        c,
    );
    let invite_burst = within(
        raw.invite_burst.unwrap_or(d.invite_burst),
        (1, 1_000_000),
        &path.key("invite_burst"),
        c,
    );
    let retry = within(
        raw.retry_after_s.unwrap_or(d.retry_after_s),
        (1, 3600),
        &path.key("retry_after_s"),
        c,
    );
    Some(LimitsConfig {
        max_calls: max_calls?,
        requests_per_second: rps?,
        burst: burst?,
        invites_per_second: invites?,
        invite_burst: invite_burst?,
        retry_after_s: retry?,
    })
}

fn within(v: u64, (lo, hi): (u64, u64), path: &FieldPath, c: &mut Checker) -> Option<u64> {
    if !(lo..=hi).contains(&v) {
        c.error(path, format!("must be between {lo} and {hi} (got {v})"));
        return None;
    }
    Some(v)
}

pub(crate) fn endpoints(
    raw: Vec<RawAiEndpoint>,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<Vec<AiEndpointConfig>> {
    let checked: Vec<Option<AiEndpointConfig>> =
        raw.into_iter().enumerate().map(|(i, r)| endpoint(r, &path.index(i), c)).collect();
    let ok: Vec<&AiEndpointConfig> = checked.iter().flatten().collect();
    let count = |role| ok.iter().filter(|e| e.role == role).count();
    if count(AiRole::Primary) > 1 || count(AiRole::Standby) > 1 {
        c.error(path, "at most one primary and one standby endpoint");
    }
    if count(AiRole::Standby) == 1 && count(AiRole::Primary) == 0 {
        c.error(path, "a standby endpoint needs a primary one");
    }
    if ok.windows(2).any(|w| w[0].audio_format != w[1].audio_format) {
        c.error(
            path,
            "primary and standby must use the same audio_format (calls fail over between them)",
        );
    }
    checked.into_iter().collect()
}

fn endpoint(raw: RawAiEndpoint, path: &FieldPath, c: &mut Checker) -> Option<AiEndpointConfig> {
    let name = required(raw.name, &path.key("name"), c);
    let role = required(raw.role, &path.key("role"), c).and_then(|r| match r.as_str() {
        "primary" => Some(AiRole::Primary),
        "standby" => Some(AiRole::Standby),
        other => {
            c.error(&path.key("role"), format!("{other:?}: expected \"primary\" or \"standby\""));
            None
        }
    });
    let protocol =
        required(raw.protocol, &path.key("protocol"), c).and_then(|p| match p.as_str() {
            "twilio-media-streams" => Some(AiProtocolName::TwilioMediaStreams),
            "openai-realtime" => Some(AiProtocolName::OpenAiRealtime),
            other => {
                c.error(
                    &path.key("protocol"),
                    format!("{other:?}: expected \"twilio-media-streams\" or \"openai-realtime\""),
                );
                None
            }
        });
    let url = required(raw.url, &path.key("url"), c).and_then(|u| url(&u, &path.key("url"), c));
    let token = match (raw.token_file, raw.token_env) {
        (Some(_), Some(_)) => {
            c.error(&path.key("token_env"), "set either token_file or token_env, not both");
            None
        }
        (Some(f), None) => password_from_file(&f, &path.key("token_file"), c).map(Some),
        (None, Some(v)) => password_from_env(&v, &path.key("token_env"), c).map(Some),
        (None, None) => Some(None::<Password>),
    };
    let audio_format = match raw.audio_format.as_deref() {
        None | Some("g711_ulaw") => Some(AiAudioFormat::G711Ulaw),
        Some("pcm16") if protocol == Some(AiProtocolName::OpenAiRealtime) => {
            Some(AiAudioFormat::Pcm16)
        }
        Some("pcm16") => {
            c.error(
                &path.key("audio_format"),
                "pcm16 is only for openai-realtime (Twilio Media Streams is μ-law)",
            );
            None
        }
        Some(other) => {
            c.error(
                &path.key("audio_format"),
                format!("{other:?}: expected \"g711_ulaw\" or \"pcm16\""),
            );
            None
        }
    };
    let headers = headers(raw.headers.unwrap_or_default(), &path.key("headers"), c);
    let ca_bundle = match raw.ca_bundle {
        Some(p) => readable_file(&p, &path.key("ca_bundle"), c).map(Some),
        None => Some(None),
    };
    let health_url = match raw.health_url {
        Some(u) => health_url(&u, &path.key("health_url"), c).map(Some),
        None => Some(None),
    };
    Some(AiEndpointConfig {
        name: name?,
        role: role?,
        protocol: protocol?,
        url: url?,
        token: token?,
        headers: headers?,
        custom_parameters: raw.custom_parameters.unwrap_or_default(),
        ca_bundle: ca_bundle?,
        audio_format: audio_format?,
        health_url: health_url?,
        model: raw.model,
        instructions: raw.instructions,
        voice: raw.voice,
    })
}

/// wss:// anywhere; ws:// only to a loopback address (no credentials in clear on a network).
fn url(text: &str, path: &FieldPath, c: &mut Checker) -> Option<String> {
    let (scheme, rest) = match text.split_once("://") {
        Some(parts) => parts,
        None => {
            c.error(path, format!("{text:?}: not a URL (expected wss://host/path)"));
            return None;
        }
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        c.error(path, format!("{text:?}: no host"));
        return None;
    }
    match scheme {
        "wss" => Some(text.to_string()),
        "ws" if is_loopback(host) => Some(text.to_string()),
        "ws" => {
            c.error(path, format!("{text:?}: plain ws:// is only allowed to loopback; use wss://"));
            None
        }
        other => {
            c.error(path, format!("{text:?}: scheme {other:?} is not ws or wss"));
            None
        }
    }
}

/// `health_url`: http:// or https:// with a host, no credentials in it (the probe sends none).
fn health_url(text: &str, path: &FieldPath, c: &mut Checker) -> Option<String> {
    let Some(rest) = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://")) else {
        c.error(path, format!("{text:?}: expected an http:// or https:// URL"));
        return None;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || text.contains(char::is_whitespace) {
        c.error(path, format!("{text:?}: the URL needs a host (and no credentials or spaces)"));
        return None;
    }
    Some(text.to_string())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn headers(
    raw: BTreeMap<String, String>,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<Vec<(String, String)>> {
    let mut ok = true;
    for (name, value) in &raw {
        let bad_name =
            name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if bad_name || value.chars().any(|ch| ch.is_control()) {
            c.error(
                &path.key(name),
                "header names are letters, digits and '-'; values have no control characters",
            );
            ok = false;
        }
    }
    ok.then(|| raw.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "[[carrier]]\nname = \"a\"\ninbound_from = [\"127.0.0.2/32\"]\n";

    fn load(extra: &str) -> Result<Config, String> {
        Config::from_toml_str(&format!("{BASE}{extra}"), "t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn endpoints_parse_with_defaults() {
        let cfg = load(
            "[[ai_endpoint]]\nname = \"p\"\nrole = \"primary\"\nprotocol = \"twilio-media-streams\"\nurl = \"ws://127.0.0.1:9000/media\"\n\
             [[ai_endpoint]]\nname = \"s\"\nrole = \"standby\"\nprotocol = \"openai-realtime\"\nurl = \"wss://agent.example.com/v1/realtime\"\n",
        )
        .unwrap();
        assert_eq!(cfg.ai_endpoints.len(), 2);
        assert_eq!(cfg.ai.setup_budget_ms, 1500);
        assert_eq!(cfg.ai.breaker_failures, 5);
        assert_eq!(cfg.ai.first_audio_timeout_ms, 4000);
    }

    #[test]
    fn the_first_audio_timeout_is_checked_and_named() {
        let cfg = load("[ai]\nfirst_audio_timeout_ms = 1500\n").unwrap();
        assert_eq!(cfg.ai.first_audio_timeout_ms, 1500);
        for bad in [100, 60_001] {
            let e = load(&format!("[ai]\nfirst_audio_timeout_ms = {bad}\n")).unwrap_err();
            assert!(e.contains("ai.first_audio_timeout_ms: must be between 500 and 60000"), "{e}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = load("[ai]\nsetup_budget_ms = 5000\n").unwrap_err();
        assert!(e.contains("t.toml:5: ai.setup_budget_ms: must be between 100 and 2000"), "{e}");
        let e = load("[[ai_endpoint]]\nname = \"p\"\nrole = \"primary\"\nprotocol = \"sip\"\nurl = \"ws://10.0.0.1/x\"\n").unwrap_err();
        assert!(e.contains("ai_endpoint[0].protocol"), "{e}");
        assert!(e.contains("ai_endpoint[0].url") && e.contains("only allowed to loopback"), "{e}");
        let e = load("[[ai_endpoint]]\nname = \"s\"\nrole = \"standby\"\nprotocol = \"openai-realtime\"\nurl = \"wss://a.example/x\"\n").unwrap_err();
        assert!(e.contains("needs a primary"), "{e}");
        let e = load("[[ai_endpoint]]\nname = \"p\"\nrole = \"primary\"\nprotocol = \"twilio-media-streams\"\nurl = \"wss://a.example/x\"\naudio_format = \"pcm16\"\n").unwrap_err();
        assert!(e.contains("ai_endpoint[0].audio_format"), "{e}");
    }

    #[test]
    fn health_url_is_an_http_url_and_errors_name_it() {
        let ep = "[[ai_endpoint]]\nname = \"p\"\nrole = \"primary\"\n\
                  protocol = \"twilio-media-streams\"\nurl = \"wss://a.example/x\"\n";
        let cfg = load(&format!("{ep}health_url = \"https://a.example/healthz\"\n")).unwrap();
        assert_eq!(cfg.ai_endpoints[0].health_url.as_deref(), Some("https://a.example/healthz"));
        assert_eq!(load(ep).unwrap().ai_endpoints[0].health_url, None, "off by default");
        for bad in ["wss://a.example/healthz", "http://", "https://user:pw@a.example/h", "healthz"]
        {
            let e = load(&format!("{ep}health_url = \"{bad}\"\n")).unwrap_err();
            assert!(e.contains("t.toml:9: ai_endpoint[0].health_url:"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_token_is_read_and_never_printed() {
        std::env::set_var("TG_TEST_AI_TOKEN", "sk-very-secret");
        let cfg = load("[[ai_endpoint]]\nname = \"p\"\nrole = \"primary\"\nprotocol = \"openai-realtime\"\nurl = \"wss://a.example/x\"\ntoken_env = \"TG_TEST_AI_TOKEN\"\n").unwrap();
        let token = cfg.ai_endpoints[0].token.as_ref().unwrap();
        assert_eq!(token.expose(), "sk-very-secret");
        assert!(!format!("{cfg:?}").contains("sk-very-secret"));
    }
}
