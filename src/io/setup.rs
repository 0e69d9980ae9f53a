//! From the validated [`Config`] to the core's [`EndpointConfig`]: carrier settings in core
//! terms, and the prompt read from the configured folder or the one embedded in the binary.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::config::bounds::{read_limited, ReadError, MAX_PROMPT_BYTES};
use crate::config::NoAnswerAction;
use crate::config::{
    AiAudioFormat, AiEndpointConfig, AiProtocolName, AiRole, CarrierConfig, Config,
};
use crate::core::ai::session::{AiProtocol, OpenAiFormat, OpenAiSettings, SessionConfig};
use crate::core::ai::{AiBreakers, BreakerConfig, CircuitBreaker, SelectorConfig};
use crate::core::carrier::probe::ProbeSettings;
use crate::core::carrier::register::RegisterSettings;
use crate::core::endpoint::{AiEndpointSettings, AiHub, Limits};
use crate::core::endpoint::{CarrierSettings, EndpointConfig, OutboundSettings, TransferMode};
use crate::core::ladder::prompts::{load_checked, LadderPromptError};
use crate::core::ladder::{LadderConfig, LadderPrompts, NoAnswer};
use crate::core::media::codec::opus::OpusTuning;
use crate::core::media::codec::pipeline::AiFormat;
use crate::core::media::codec::Rate;
use crate::core::media::g711::Law;
use crate::core::media::jitter::JitterConfig;
use crate::core::media::prompt::{Prompt, PromptError};
use crate::core::timer::SipTimers;

/// Silence between the end of the prompt and our BYE.
const HANGUP_AFTER_PROMPT: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("prompt {path}: {source}")]
    PromptRead { path: PathBuf, source: ReadError },
    #[error("prompts.{key}: {path}: {source}")]
    Prompt { key: &'static str, path: PathBuf, source: LadderPromptError },
    #[error("embedded prompt {key}: {source}")]
    EmbeddedLadderPrompt { key: &'static str, source: LadderPromptError },
    #[error("embedded prompt: {0}")]
    EmbeddedPrompt(PromptError),
    #[error("sip.listen has a tls: address but [sip] tls is not configured")]
    TlsWithoutCert,
}

pub fn endpoint_config(config: &Config) -> Result<EndpointConfig, SetupError> {
    Ok(EndpointConfig {
        listen: config.sip.listen.iter().map(|l| (l.transport, l.addr)).collect(),
        user_agent: config.sip.user_agent.clone(),
        media_ip: config.media.bind,
        rtp_ports: (config.media.rtp_ports.start, config.media.rtp_ports.end),
        carriers: config.carriers.iter().map(|c| carrier_settings(config, c)).collect(),
        prompts: load_prompts(config)?,
        ladder: ladder_config(config),
        timers: SipTimers::default(),
        answer_delay: Duration::ZERO,
        max_call_duration: Duration::from_secs(config.call.max_duration_s),
        hangup_after_prompt: HANGUP_AFTER_PROMPT,
        jitter: JitterConfig {
            min_delay: Duration::from_millis(config.media.jitter_min_ms),
            max_delay: Duration::from_millis(config.media.jitter_max_ms),
            initial_delay: Duration::from_millis(config.media.jitter_initial_ms),
            ..JitterConfig::default()
        },
        opus: OpusTuning {
            complexity: config.media.opus_complexity,
            bitrate: config.media.opus_bitrate,
        },
        ai_format: ai_hub(config).map_or(AiFormat::G711(Law::Ulaw), |h| h.format),
        ntp_anchor: Some(super::clock::ntp_anchor()),
        ai: ai_hub(config),
        filler: Prompt::one_moment().map_err(SetupError::EmbeddedPrompt)?,
        limits: Limits {
            max_calls: usize::try_from(config.limits.max_calls).unwrap_or(usize::MAX),
            requests_per_second: config.limits.requests_per_second as f64,
            burst: config.limits.burst as f64,
            invites_per_second: config.limits.invites_per_second as f64,
            invite_burst: config.limits.invite_burst as f64,
            retry_after: Duration::from_secs(config.limits.retry_after_s),
        },
        outbound: outbound_settings(config),
    })
}

/// `[outbound]` and the human of `[fallback]`.
fn outbound_settings(config: &Config) -> OutboundSettings {
    let o = &config.outbound;
    OutboundSettings {
        no_provisional: Duration::from_millis(o.no_provisional_ms),
        preferred_carrier: o
            .preferred_carrier
            .as_ref()
            .and_then(|name| config.carriers.iter().position(|c| &c.name == name)),
        breaker: BreakerConfig {
            failure_threshold: o.breaker_failures,
            cooldown: Duration::from_secs(o.breaker_cooldown_s),
            ..BreakerConfig::default()
        },
        human: config.fallback.human.clone(),
        human_timeout: Duration::from_secs(config.fallback.human_timeout_s),
    }
}

/// The agents of `[[ai_endpoint]]` with the `[ai]` policies; `None` when none is configured.
fn ai_hub(config: &Config) -> Option<AiHub> {
    let by_role = |role| config.ai_endpoints.iter().find(|e| e.role == role).map(ai_endpoint);
    let primary = by_role(AiRole::Primary)?;
    let standby = by_role(AiRole::Standby);
    let breaker = BreakerConfig {
        failure_threshold: config.ai.breaker_failures,
        cooldown: Duration::from_secs(config.ai.breaker_cooldown_s),
        ..BreakerConfig::default()
    };
    let pcm = config.ai_endpoints.iter().any(|e| e.audio_format == AiAudioFormat::Pcm16);
    Some(AiHub {
        primary,
        breakers: AiBreakers {
            primary: CircuitBreaker::new(breaker),
            standby: standby.as_ref().map(|_| CircuitBreaker::new(breaker)),
        },
        standby,
        selector: SelectorConfig {
            budget: Duration::from_millis(config.ai.setup_budget_ms),
            attempt_timeout: Duration::from_millis(config.ai.connect_timeout_ms),
            ..SelectorConfig::default()
        },
        session: SessionConfig {
            stall_timeout: Duration::from_millis(config.ai.stall_timeout_ms),
            first_audio_timeout: Duration::from_millis(config.ai.first_audio_timeout_ms),
            ..SessionConfig::default()
        },
        format: if pcm { AiFormat::Pcm(Rate::Hz24000) } else { AiFormat::G711(Law::Ulaw) },
        failovers: 0,
        fallbacks: 0,
    })
}

fn ai_endpoint(e: &AiEndpointConfig) -> AiEndpointSettings {
    let protocol = match e.protocol {
        AiProtocolName::TwilioMediaStreams => AiProtocol::Twilio,
        AiProtocolName::OpenAiRealtime => AiProtocol::OpenAi(OpenAiSettings {
            format: match e.audio_format {
                AiAudioFormat::G711Ulaw => OpenAiFormat::G711Ulaw,
                AiAudioFormat::Pcm16 => OpenAiFormat::Pcm24k,
            },
            model: e.model.clone(),
            instructions: e.instructions.clone(),
            voice: e.voice.clone(),
            ..OpenAiSettings::default()
        }),
    };
    let mut headers = e.headers.clone();
    if let Some(token) = &e.token {
        headers.push(("Authorization".to_string(), format!("Bearer {}", token.expose())));
    }
    AiEndpointSettings {
        name: e.name.clone(),
        protocol,
        url: e.url.clone(),
        headers,
        health_url: e.health_url.clone(),
    }
}

/// Extra CA bundles named by the AI endpoints.
pub fn ca_bundles(config: &Config) -> Vec<&std::path::Path> {
    config.ai_endpoints.iter().filter_map(|e| e.ca_bundle.as_deref()).collect()
}

fn carrier_settings(config: &Config, c: &CarrierConfig) -> CarrierSettings {
    let probe = c.probe.unwrap_or_default();
    let domain =
        c.register.as_ref().and_then(|r| r.domain.clone()).or_else(|| config.sip.domain.clone());
    let domain_or_proxy =
        domain.clone().or_else(|| c.proxy.map(|p| crate::core::endpoint::host_port(p.addr)));
    let register = c.register.as_ref().map(|r| {
        let uri = format!("sip:{}", domain_or_proxy.clone().unwrap_or_default());
        let mut s = RegisterSettings::new(&uri, &r.user, r.password.expose());
        s.expires = r.expires_s;
        s
    });
    CarrierSettings {
        name: c.name.clone(),
        proxy: c.proxy,
        inbound_from: c.inbound_from.clone(),
        probe: ProbeSettings {
            interval: probe.interval(),
            timeout: probe.timeout(),
            down_after: probe.down_after,
            up_after: probe.up_after,
        },
        register,
        domain,
        contact_user: c
            .register
            .as_ref()
            .map(|r| r.contact_user().to_string())
            .unwrap_or_else(|| "trunkguard".to_string()),
        transfer: match c.transfer {
            crate::config::TransferMode::Invite => TransferMode::Invite,
            crate::config::TransferMode::Refer => TransferMode::Refer,
        },
    }
}

/// Every prompt: the file `[prompts]` names for it, else the copy embedded in the binary; each
/// checked for format and length.
fn load_prompts(config: &Config) -> Result<LadderPrompts, SetupError> {
    LadderPrompts::try_from_fn(|id| match config.prompts.path(id) {
        Some(path) => {
            let bytes = read_limited(path, MAX_PROMPT_BYTES)
                .map_err(|source| SetupError::PromptRead { path: path.to_path_buf(), source })?;
            load_checked(&bytes).map_err(|source| SetupError::Prompt {
                key: id.key(),
                path: path.to_path_buf(),
                source,
            })
        }
        None => load_checked(id.embedded_wav())
            .map_err(|source| SetupError::EmbeddedLadderPrompt { key: id.key(), source }),
    })
}

/// `[fallback]` in the ladder's terms.
fn ladder_config(config: &Config) -> LadderConfig {
    let f = &config.fallback;
    LadderConfig {
        menu: f.menu,
        menu_timeout: Duration::from_secs(f.menu_timeout_s),
        menu_attempts: f.menu_attempts,
        no_answer: match f.no_answer {
            NoAnswerAction::Callback => NoAnswer::Callback,
            NoAnswerAction::Hangup => NoAnswer::Goodbye,
        },
        human: f.human.is_some(),
        human_timeout: Duration::from_secs(f.human_timeout_s),
    }
}
