//! The file as serde sees it: every key optional, unknown keys rejected. `validate` turns this
//! into the typed [`Config`](super::Config), applying defaults and checks.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub sip: RawSip,
    pub media: RawMedia,
    pub status: RawStatus,
    pub prompts: RawPrompts,
    pub call: RawCall,
    pub carrier: Vec<RawCarrier>,
    pub ai: RawAi,
    pub ai_endpoint: Vec<RawAiEndpoint>,
    pub state: RawState,
    pub limits: RawLimits,
    pub fallback: RawFallback,
    pub callback: RawCallback,
    pub outbound: RawOutbound,
    pub connections: RawConnections,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawFallback {
    pub menu: Option<bool>,
    pub menu_timeout_s: Option<u64>,
    pub menu_attempts: Option<u64>,
    pub no_answer: Option<String>,
    pub human: Option<String>,
    pub human_timeout_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCallback {
    pub webhook_url: Option<String>,
    pub timeout_ms: Option<u64>,
    pub backoff_initial_ms: Option<u64>,
    pub backoff_max_s: Option<u64>,
    pub give_up_after_h: Option<u64>,
    pub ca_bundle: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawOutbound {
    pub no_provisional_ms: Option<u64>,
    pub preferred_carrier: Option<String>,
    pub breaker_failures: Option<u64>,
    pub breaker_cooldown_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConnections {
    pub sip_max: Option<u64>,
    pub sip_max_per_source: Option<u64>,
    pub sip_reserved_percent: Option<u64>,
    pub http_max: Option<u64>,
    pub http_max_per_source: Option<u64>,
    pub http_reserved_percent: Option<u64>,
    pub head_timeout_ms: Option<u64>,
    pub idle_timeout_s: Option<u64>,
    pub http_idle_timeout_s: Option<u64>,
    pub tls_handshake_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLimits {
    pub max_calls: Option<u64>,
    pub requests_per_second: Option<u64>,
    pub burst: Option<u64>,
    pub invites_per_second: Option<u64>,
    pub invite_burst: Option<u64>,
    pub retry_after_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAi {
    pub setup_budget_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub breaker_failures: Option<u32>,
    pub breaker_cooldown_s: Option<u64>,
    pub stall_timeout_ms: Option<u64>,
    pub first_audio_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAiEndpoint {
    pub name: Option<String>,
    pub role: Option<String>,
    pub protocol: Option<String>,
    pub url: Option<String>,
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub custom_parameters: Option<std::collections::BTreeMap<String, String>>,
    pub ca_bundle: Option<String>,
    pub audio_format: Option<String>,
    pub health_url: Option<String>,
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub voice: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSip {
    pub listen: Option<Vec<String>>,
    pub tls: Option<RawTls>,
    pub user_agent: Option<String>,
    pub user_agent_version: Option<bool>,
    pub domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub require_client_cert: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMedia {
    pub bind: Option<String>,
    pub rtp_ports: Option<String>,
    pub jitter_min_ms: Option<u64>,
    pub jitter_max_ms: Option<u64>,
    pub jitter_initial_ms: Option<u64>,
    pub opus_complexity: Option<u8>,
    pub opus_bitrate: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStatus {
    pub listen: Option<String>,
    /// `"self-signed"` or `{ cert = "...", key = "..." }`, checked in validation.
    pub tls: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawState {
    pub dir: Option<String>,
    pub keep_days: Option<u64>,
    pub max_rows: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPrompts {
    pub dir: Option<String>,
    pub high_demand: Option<String>,
    pub menu: Option<String>,
    pub menu_no_human: Option<String>,
    pub menu_invalid: Option<String>,
    pub callback_confirm: Option<String>,
    pub transfer_hold: Option<String>,
    pub sorry_callback: Option<String>,
    pub goodbye: Option<String>,
}

impl RawPrompts {
    /// The file name given for prompt `id`, if any.
    pub fn named(&self, id: crate::core::ladder::PromptId) -> Option<&String> {
        use crate::core::ladder::PromptId as P;
        match id {
            P::HighDemand => self.high_demand.as_ref(),
            P::Menu => self.menu.as_ref(),
            P::MenuNoHuman => self.menu_no_human.as_ref(),
            P::MenuInvalid => self.menu_invalid.as_ref(),
            P::CallbackConfirm => self.callback_confirm.as_ref(),
            P::TransferHold => self.transfer_hold.as_ref(),
            P::SorryCallback => self.sorry_callback.as_ref(),
            P::Goodbye => self.goodbye.as_ref(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCall {
    pub max_duration_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCarrier {
    pub name: Option<String>,
    pub proxy: Option<String>,
    pub inbound_from: Option<Vec<String>>,
    pub probe: Option<RawProbe>,
    pub register: Option<RawRegister>,
    pub transfer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawProbe {
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub down_after: Option<u32>,
    pub up_after: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRegister {
    pub user: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub expires: Option<u32>,
    pub domain: Option<String>,
    pub realm: Option<String>,
    pub contact_user: Option<String>,
}
