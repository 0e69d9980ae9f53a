//! From the validated [`Config`] to the core's [`EndpointConfig`]: carrier settings in core
//! terms, and the prompt read from the configured folder or the one embedded in the binary.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::config::{CarrierConfig, Config};
use crate::core::carrier::probe::ProbeSettings;
use crate::core::carrier::register::RegisterSettings;
use crate::core::endpoint::{CarrierSettings, EndpointConfig};
use crate::core::media::codec::opus::OpusTuning;
use crate::core::media::codec::pipeline::AiFormat;
use crate::core::media::g711::Law;
use crate::core::media::jitter::JitterConfig;
use crate::core::media::prompt::{Prompt, PromptError};
use crate::core::timer::SipTimers;

/// Silence between the end of the prompt and our BYE.
const HANGUP_AFTER_PROMPT: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("prompt {path}: {source}")]
    PromptRead { path: PathBuf, source: std::io::Error },
    #[error("prompt {path}: {source}")]
    Prompt { path: PathBuf, source: PromptError },
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
        prompt: load_prompt(config)?,
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
        opus: OpusTuning { complexity: config.media.opus_complexity, bitrate: config.media.opus_bitrate },
        // the AI side speaks 8 kHz μ-law until the AI bridge chooses per endpoint
        ai_format: AiFormat::G711(Law::Ulaw),
        ntp_anchor: Some(super::clock::ntp_anchor()),
    })
}

fn carrier_settings(config: &Config, c: &CarrierConfig) -> CarrierSettings {
    let probe = c.probe.unwrap_or_default();
    let domain = c
        .register
        .as_ref()
        .and_then(|r| r.domain.clone())
        .or_else(|| config.sip.domain.clone());
    let domain_or_proxy = domain.clone().or_else(|| c.proxy.map(|p| crate::core::endpoint::host_port(p.addr)));
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
    }
}

fn load_prompt(config: &Config) -> Result<Prompt, SetupError> {
    match &config.prompts.dir {
        Some(dir) => {
            let path = dir.join(&config.prompts.high_demand);
            let bytes = std::fs::read(&path).map_err(|source| SetupError::PromptRead { path: path.clone(), source })?;
            Prompt::from_wav_bytes(&bytes).map_err(|source| SetupError::Prompt { path, source })
        }
        None => Prompt::high_demand().map_err(SetupError::EmbeddedPrompt),
    }
}
