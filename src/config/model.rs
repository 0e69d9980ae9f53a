//! The validated, typed configuration. Values here have passed every check in `validate`; the
//! rest of trunkguard reads them and never re-validates.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::addr::{ListenAddr, PortRange};
use crate::core::sip::Peer;

/// The whole configuration (`trunkguard.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub status: StatusConfig,
    pub prompts: PromptsConfig,
    pub call: CallConfig,
    /// `[[carrier]]` tables, in file order.
    pub carriers: Vec<CarrierConfig>,
    /// `[ai]`: how calls are bridged to the agents.
    pub ai: AiConfig,
    /// `[[ai_endpoint]]` tables: at most one primary and one standby.
    pub ai_endpoints: Vec<AiEndpointConfig>,
    /// `[state]`: where the state database lives.
    pub state: StateConfig,
    /// `[limits]`: load shedding.
    pub limits: LimitsConfig,
    /// `[fallback]`: the rungs below the AI (DTMF menu, human transfer, callback).
    pub fallback: FallbackConfig,
    /// `[callback]`: where callback requests are delivered.
    pub callback: CallbackConfig,
    /// `[outbound]`: outbound INVITEs (the human leg) and carrier failover by SIP cause.
    pub outbound: OutboundConfig,
    /// `[connections]`: caps and timeouts for SIP over TCP/TLS and the status server.
    pub connections: ConnectionsConfig,
}

/// What the ladder does when the caller presses nothing at the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswerAction {
    /// Record a callback request, say so, and hang up (default).
    Callback,
    /// Say goodbye and hang up without a callback request.
    Hangup,
}

/// `[fallback]`: below the AI agents, the canned prompt, then a DTMF menu ("press 1 and we will
/// call you back; press 2 to speak to a person"), the human, and a callback request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackConfig {
    /// Offer the DTMF menu after the high-demand prompt (`false`: prompt, then callback/hangup).
    pub menu: bool,
    /// How long the menu waits for a key after it was played.
    pub menu_timeout_s: u64,
    /// How often the menu is played before `no_answer` applies.
    pub menu_attempts: u32,
    /// What no key (or only unknown keys) at the menu leads to.
    pub no_answer: NoAnswerAction,
    /// The person calls are transferred to (`sip:` or `sips:` URI); `None`: key 2 is not offered.
    pub human: Option<String>,
    /// The human leg rings at most this long before the ladder goes down to a callback.
    pub human_timeout_s: u64,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            menu: true,
            menu_timeout_s: 8,
            menu_attempts: 2,
            no_answer: NoAnswerAction::Callback,
            human: None,
            human_timeout_s: 25,
        }
    }
}

/// `[callback]`: durable callback requests delivered to a webhook, retried until a 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackConfig {
    /// `http://` or `https://` URL that receives each request as JSON; `None`: stored only.
    pub webhook_url: Option<String>,
    /// One delivery attempt gives up after this long.
    pub timeout_ms: u64,
    /// First retry delay; it doubles (with full jitter) up to `backoff_max_s`.
    pub backoff_initial_ms: u64,
    pub backoff_max_s: u64,
    /// A request still undelivered after this many hours is marked failed and no longer retried.
    pub give_up_after_h: u64,
    /// Extra CA certificates (PEM) trusted for an `https://` webhook.
    pub ca_bundle: Option<PathBuf>,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            webhook_url: None,
            timeout_ms: 5000,
            backoff_initial_ms: 1000,
            backoff_max_s: 300,
            give_up_after_h: 72,
            ca_bundle: None,
        }
    }
}

/// `[outbound]`: outbound INVITEs go to the preferred healthy carrier and move to the other on
/// 408, 480, 500, 503, 504, a transport error or no provisional response in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundConfig {
    /// No provisional response within this long: try the next carrier (instead of Timer B).
    pub no_provisional_ms: u64,
    /// Carrier tried first (by name; it needs a proxy); `None`: file order.
    pub preferred_carrier: Option<String>,
    /// Consecutive outbound failures that open a carrier's outbound breaker.
    pub breaker_failures: u32,
    /// How long an open carrier breaker refuses before one half-open trial.
    pub breaker_cooldown_s: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            no_provisional_ms: 2000,
            preferred_carrier: None,
            breaker_failures: 5,
            breaker_cooldown_s: 30,
        }
    }
}

/// `[limits]`: beyond these, new INVITEs get 503 with Retry-After; calls in progress go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    pub max_calls: u64,
    /// Out-of-dialog requests other than INVITE, per second and source.
    pub requests_per_second: u64,
    pub burst: u64,
    /// New INVITEs per second and source, from their own budget.
    pub invites_per_second: u64,
    pub invite_burst: u64,
    pub retry_after_s: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_calls: 100,
            requests_per_second: 200,
            burst: 400,
            invites_per_second: 100,
            invite_burst: 200,
            retry_after_s: 30,
        }
    }
}

/// `[connections]`: caps and timeouts for stream connections (docs/config.md, docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionsConfig {
    /// SIP TCP/TLS connections open at once.
    pub sip_max: u64,
    /// SIP connections open at once from one source that is not a carrier's proxy.
    pub sip_max_per_source: u64,
    /// Percent of `sip_max` only carriers' proxies (and our own outbound connections) may use.
    pub sip_reserved_percent: u64,
    /// Status server connections open at once.
    pub http_max: u64,
    /// Status server connections open at once from one non-loopback source.
    pub http_max_per_source: u64,
    /// Percent of `http_max` only loopback clients (the operator on the box) may use.
    pub http_reserved_percent: u64,
    /// A SIP message or an HTTP request head must arrive completely within this.
    pub head_timeout_ms: u64,
    /// A SIP connection with nothing received for this long is closed.
    pub idle_timeout_s: u64,
    /// A status server connection with no bytes either way for this long is closed.
    pub http_idle_timeout_s: u64,
    /// A TLS handshake (SIP or HTTPS) not finished within this is dropped.
    pub tls_handshake_timeout_ms: u64,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            sip_max: 1024,
            sip_max_per_source: 64,
            sip_reserved_percent: 25,
            http_max: 128,
            http_max_per_source: 16,
            http_reserved_percent: 25,
            head_timeout_ms: 5000,
            idle_timeout_s: 300,
            http_idle_timeout_s: 60,
            tls_handshake_timeout_ms: 5000,
        }
    }
}

/// `[ai]`: setup budget, breakers and stall detection for the AI bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AiConfig {
    /// Whole time from a call's arrival to the fallback when no agent connects (max 2000).
    pub setup_budget_ms: u64,
    /// One connect attempt (TCP + TLS + WebSocket upgrade) gives up after this.
    pub connect_timeout_ms: u64,
    /// Consecutive failures that open an endpoint's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses before one half-open trial.
    pub breaker_cooldown_s: u64,
    /// No frame from the agent for this long while the caller talks: fail over.
    pub stall_timeout_ms: u64,
    /// No audio and no sign of speech from a connected agent this long after it went live
    /// (pongs do not count): fail over.
    pub first_audio_timeout_ms: u64,
}

impl Default for AiConfig {
    fn default() -> Self {
        AiConfig {
            setup_budget_ms: 1500,
            connect_timeout_ms: 700,
            breaker_failures: 5,
            breaker_cooldown_s: 30,
            stall_timeout_ms: 500,
            first_audio_timeout_ms: 4000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiRole {
    Primary,
    Standby,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiProtocolName {
    /// `twilio-media-streams`
    TwilioMediaStreams,
    /// `openai-realtime`
    OpenAiRealtime,
}

/// Audio exchanged with an agent: `g711_ulaw` (8 kHz μ-law) or `pcm16` (24 kHz, OpenAI only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiAudioFormat {
    G711Ulaw,
    Pcm16,
}

/// One `[[ai_endpoint]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiEndpointConfig {
    pub name: String,
    pub role: AiRole,
    pub protocol: AiProtocolName,
    /// `wss://...`, or `ws://` to a loopback address (tests, trunkguard-agent-sim).
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`; read from `token_file` or `token_env`.
    pub token: Option<Password>,
    /// Extra upgrade headers.
    pub headers: Vec<(String, String)>,
    /// Twilio `start.customParameters` (merged with the call's own).
    pub custom_parameters: std::collections::BTreeMap<String, String>,
    /// Extra CA certificates (PEM) trusted for this endpoint, beside the system's.
    pub ca_bundle: Option<PathBuf>,
    pub audio_format: AiAudioFormat,
    /// When set, the health probe is an HTTP GET of this URL (2xx healthy), not a WebSocket.
    pub health_url: Option<String>,
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub voice: Option<String>,
}

/// `[sip]`: where we listen for SIP and how we present ourselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipConfig {
    pub listen: Vec<ListenAddr>,
    /// Present whenever a `tls:` listen address is configured.
    pub tls: Option<TlsConfig>,
    /// `User-Agent` header value.
    pub user_agent: String,
    /// Host used in From/To of OPTIONS and REGISTER; `None` means the carrier's proxy host.
    pub domain: Option<String>,
}

/// `[sip].tls`: PEM files for rustls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle used to verify client certificates.
    pub client_ca: Option<PathBuf>,
    /// Reject TLS clients without a certificate signed by `client_ca`.
    pub require_client_cert: bool,
}

/// `[media]`: RTP sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaConfig {
    pub bind: IpAddr,
    pub rtp_ports: PortRange,
    /// Jitter buffer target delay bounds (adaptive between them), milliseconds.
    pub jitter_min_ms: u64,
    pub jitter_max_ms: u64,
    /// Where the jitter buffer starts before it has measured anything (at most 60 ms).
    pub jitter_initial_ms: u64,
    /// Opus encoder complexity, 0..=10.
    pub opus_complexity: u8,
    /// Opus target bitrate, bit/s.
    pub opus_bitrate: u32,
}

impl MediaConfig {
    pub const DEFAULT_JITTER_MIN_MS: u64 = 20;
    pub const DEFAULT_JITTER_MAX_MS: u64 = 200;
    pub const DEFAULT_JITTER_INITIAL_MS: u64 = 40;
    pub const DEFAULT_OPUS_COMPLEXITY: u8 = 5;
    pub const DEFAULT_OPUS_BITRATE: u32 = 32_000;
}

/// `[status]`: the HTTP status server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    pub listen: SocketAddr,
    /// HTTPS instead of HTTP.
    pub tls: Option<StatusTls>,
}

/// `[status] tls`: where the status server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusTls {
    /// Generated at first start into the state directory, reused afterwards.
    SelfSigned,
    /// PEM certificate chain and private key.
    Files { cert: PathBuf, key: PathBuf },
}

/// `[state]`: the directory of the state database (`trunkguard.db`), created if missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    pub dir: PathBuf,
    /// Call records older than this many days are pruned.
    pub keep_days: u32,
    /// At most this many call records are kept (the oldest go first).
    pub max_rows: u32,
}

/// `[prompts]`: audio played to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptsConfig {
    /// Directory of prompt files; `None` means use the prompt embedded in the binary.
    pub dir: Option<PathBuf>,
    /// File name (inside `dir`) of the "high demand" prompt.
    pub high_demand: String,
    /// The prompt files in `dir` that replace the embedded ones (checked at start: format and
    /// length); a prompt not listed plays its embedded copy.
    pub files: Vec<(crate::core::ladder::PromptId, PathBuf)>,
}

impl PromptsConfig {
    /// The file that replaces prompt `id`, or `None` for the embedded copy.
    pub fn path(&self, id: crate::core::ladder::PromptId) -> Option<&std::path::Path> {
        self.files.iter().find(|(i, _)| *i == id).map(|(_, p)| p.as_path())
    }

    /// Path of the high-demand prompt on disk, or `None` for the embedded prompt.
    pub fn high_demand_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(&self.high_demand))
    }
}

/// `[call]`: per-call policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallConfig {
    pub max_duration_s: u64,
}

impl CallConfig {
    /// Calls are torn down after this long.
    pub fn max_duration(&self) -> Duration {
        Duration::from_secs(self.max_duration_s)
    }
}

/// One `[[carrier]]`: a SIP trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierConfig {
    /// Unique name (letters, digits, `-`, `_`, `.`), used in logs and the status page.
    pub name: String,
    /// Where OPTIONS, REGISTER and outbound INVITEs go. `None`: inbound-only IP peering.
    pub proxy: Option<Peer>,
    /// Sources whose INVITEs are accepted as this carrier. Disjoint across carriers.
    pub inbound_from: Vec<IpNet>,
    /// OPTIONS probing; `Some` exactly when `proxy` is set (defaults apply if not written).
    pub probe: Option<ProbeConfig>,
    /// REGISTER with digest auth; only possible with a `proxy`.
    pub register: Option<RegisterConfig>,
    /// How a call from this carrier is handed to the human: `refer` (SIP REFER to the carrier)
    /// or `invite` (a bridged outbound INVITE through the healthiest carrier, the default).
    pub transfer: TransferMode,
}

/// `[[carrier]] transfer`: how a call is transferred to the human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransferMode {
    /// Bridged outbound INVITE (the box stays in the media path).
    #[default]
    Invite,
    /// SIP REFER on the caller's dialog (the carrier connects the human).
    Refer,
}

impl CarrierConfig {
    /// Whether an INVITE from `ip` belongs to this carrier.
    pub fn accepts_from(&self, ip: IpAddr) -> bool {
        self.inbound_from.iter().any(|net| net.contains(&ip))
    }
}

/// `probe = { ... }`: OPTIONS health checking of a carrier's proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive failed probes before the carrier is marked down.
    pub down_after: u32,
    /// Consecutive successful probes before a down carrier is marked up.
    pub up_after: u32,
}

impl ProbeConfig {
    pub const DEFAULT: ProbeConfig =
        ProbeConfig { interval_ms: 5000, timeout_ms: 2000, down_after: 3, up_after: 2 };

    /// Time between the starts of two probes.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// A probe without a final response within this time counts as failed.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `register = { ... }`: REGISTER with the carrier's proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterConfig {
    /// Digest username and (unless `contact_user` is set) the AOR / Contact user part.
    pub user: String,
    /// Read at load from `password_file` or `password_env`; never printed.
    pub password: Password,
    /// Requested registration lifetime in seconds (`expires` in the file).
    pub expires_s: u32,
    /// Host of the AOR (To/From) for REGISTER; default `[sip].domain`, then the proxy host.
    pub domain: Option<String>,
    /// Expected digest realm; `None` accepts the realm the carrier challenges with.
    pub realm: Option<String>,
    /// User part of the Contact; default `user`.
    pub contact_user: Option<String>,
}

impl RegisterConfig {
    pub const DEFAULT_EXPIRES_S: u32 = 300;
    pub const MIN_EXPIRES_S: u32 = 60;
    /// One day: a longer lifetime is never granted by a registrar and would only hide a typo.
    pub const MAX_EXPIRES_S: u32 = 86_400;

    /// Requested registration lifetime.
    pub fn expires(&self) -> Duration {
        Duration::from_secs(u64::from(self.expires_s))
    }

    /// User part for the Contact header.
    pub fn contact_user(&self) -> &str {
        self.contact_user.as_deref().unwrap_or(&self.user)
    }
}

/// A secret string. `Debug` and `Display` never show it; call [`Password::expose`] to use it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(secret: impl Into<String>) -> Self {
        Password(secret.into())
    }

    /// The secret itself, for computing digest responses. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Config {
    /// The carrier with this name.
    pub fn carrier(&self, name: &str) -> Option<&CarrierConfig> {
        self.carriers.iter().find(|c| c.name == name)
    }

    /// The carrier whose `inbound_from` covers `ip` (networks are disjoint, so at most one).
    pub fn carrier_for_source(&self, ip: IpAddr) -> Option<&CarrierConfig> {
        self.carriers.iter().find(|c| c.accepts_from(ip))
    }

    /// Host for From/To of OPTIONS to this carrier: `[sip].domain`, else the proxy IP.
    pub fn sip_domain_for(&self, carrier: &CarrierConfig) -> Option<String> {
        self.sip.domain.clone().or_else(|| carrier.proxy.map(|p| host_of(p.addr)))
    }

    /// Host of the AOR for REGISTER: `register.domain`, else [`Config::sip_domain_for`].
    pub fn register_domain_for(&self, carrier: &CarrierConfig) -> Option<String> {
        carrier
            .register
            .as_ref()
            .and_then(|r| r.domain.clone())
            .or_else(|| self.sip_domain_for(carrier))
    }

    /// One line for `check-config`: `2 carriers, listen udp:127.0.0.1:5060, tcp:127.0.0.1:5060`.
    pub fn summary(&self) -> String {
        let n = self.carriers.len();
        let noun = if n == 1 { "carrier" } else { "carriers" };
        let listen: Vec<String> = self.sip.listen.iter().map(ToString::to_string).collect();
        format!("{n} {noun}, listen {}", listen.join(", "))
    }
}

/// IP as a SIP host: IPv6 in brackets.
fn host_of(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted() {
        let p = Password::new("hunter2");
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
        assert_eq!(p.to_string(), "<redacted>");
        assert_eq!(p.expose(), "hunter2");
    }

    #[test]
    fn durations() {
        let p = ProbeConfig::default();
        assert_eq!(p.interval(), Duration::from_secs(5));
        assert_eq!(p.timeout(), Duration::from_secs(2));
        assert_eq!(CallConfig { max_duration_s: 3600 }.max_duration(), Duration::from_secs(3600));
    }

    #[test]
    fn host_of_brackets_v6() {
        assert_eq!(host_of("[::1]:5060".parse().unwrap()), "[::1]");
        assert_eq!(host_of("10.0.0.1:5060".parse().unwrap()), "10.0.0.1");
    }
}
