//! Built-in defaults, and the embedded configuration used when `run` gets no `--config`:
//! SIP on udp+tcp 127.0.0.1:5060, RTP on 127.0.0.1 20000-20999, HTTP on 127.0.0.1:8080, and one
//! carrier "local" that accepts INVITEs from any loopback source.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net};

use super::addr::{ListenAddr, PortRange};
use super::model::{
    AiConfig, CallConfig, CarrierConfig, Config, LimitsConfig, MediaConfig, PromptsConfig,
    SipConfig, StateConfig, StatusConfig,
};
use crate::core::sip::Transport;

/// `Server` / `User-Agent` by default: the product without its version (a version tells an
/// attacker which flaws to try).
pub const USER_AGENT: &str = "trunkguard";
/// With `[sip] user_agent_version = true`.
pub const USER_AGENT_VERSIONED: &str = concat!("trunkguard/", env!("CARGO_PKG_VERSION"));
pub const SIP_LISTEN: [&str; 2] = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"];
pub const MEDIA_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const RTP_PORTS: PortRange = PortRange { start: 20000, end: 20999 };
pub const STATUS_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const HIGH_DEMAND_PROMPT: &str = "high-demand.wav";
pub const MAX_CALL_DURATION_S: u64 = 3600;
/// `[state] keep_days`: call records are kept this many days.
pub const STATE_KEEP_DAYS: u32 = 90;
/// `[state] max_rows`: at most this many call records are kept.
pub const STATE_MAX_ROWS: u32 = 100_000;

/// The state directory when neither `[state] dir` nor `$STATE_DIRECTORY` is set.
pub const STATE_DIR: &str = "./trunkguard-state";

/// The default `[state] dir`: the first path in `$STATE_DIRECTORY` (set by systemd for
/// `StateDirectory=`; colon-separated when several are listed), else [`STATE_DIR`].
pub fn state_dir() -> PathBuf {
    state_dir_from(std::env::var_os("STATE_DIRECTORY"))
}

/// [`state_dir`] with the environment variable's value passed in (testable).
pub fn state_dir_from(env: Option<std::ffi::OsString>) -> PathBuf {
    env.as_ref()
        .and_then(|v| v.to_str())
        .and_then(|v| v.split(':').find(|p| !p.is_empty()))
        .map_or_else(|| PathBuf::from(STATE_DIR), PathBuf::from)
}

/// The embedded default configuration as TOML; parses to [`Config::embedded_default`].
pub const EMBEDDED_DEFAULT_TOML: &str = r#"# trunkguard embedded default: loopback only, one local test carrier.
[sip]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]

[media]
bind = "127.0.0.1"
rtp_ports = "20000-20999"

[status]
listen = "127.0.0.1:8080"

# Any loopback source is the local test carrier; it has no proxy, so it is not probed.
[[carrier]]
name = "local"
inbound_from = ["127.0.0.0/8"]
"#;

impl Config {
    /// The configuration used when `run` is given no `--config`.
    pub fn embedded_default() -> Config {
        let loopback = Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).map(IpNet::V4);
        Config {
            sip: SipConfig {
                listen: vec![
                    ListenAddr { transport: Transport::Udp, addr: sip_loopback() },
                    ListenAddr { transport: Transport::Tcp, addr: sip_loopback() },
                ],
                tls: None,
                user_agent: USER_AGENT.to_owned(),
                domain: None,
            },
            media: MediaConfig {
                bind: MEDIA_BIND,
                rtp_ports: RTP_PORTS,
                jitter_min_ms: MediaConfig::DEFAULT_JITTER_MIN_MS,
                jitter_max_ms: MediaConfig::DEFAULT_JITTER_MAX_MS,
                jitter_initial_ms: MediaConfig::DEFAULT_JITTER_INITIAL_MS,
                opus_complexity: MediaConfig::DEFAULT_OPUS_COMPLEXITY,
                opus_bitrate: MediaConfig::DEFAULT_OPUS_BITRATE,
            },
            status: StatusConfig { listen: STATUS_LISTEN, tls: None },
            prompts: PromptsConfig {
                dir: None,
                high_demand: HIGH_DEMAND_PROMPT.to_owned(),
                files: Vec::new(),
            },
            call: CallConfig { max_duration_s: MAX_CALL_DURATION_S },
            carriers: vec![CarrierConfig {
                name: "local".to_owned(),
                proxy: None,
                inbound_from: loopback.into_iter().collect(),
                probe: None,
                register: None,
                transfer: Default::default(),
            }],
            ai: AiConfig::default(),
            ai_endpoints: Vec::new(),
            limits: LimitsConfig::default(),
            fallback: Default::default(),
            callback: Default::default(),
            outbound: Default::default(),
            connections: Default::default(),
            state: StateConfig {
                dir: state_dir(),
                keep_days: STATE_KEEP_DAYS,
                max_rows: STATE_MAX_ROWS,
            },
        }
    }
}

fn sip_loopback() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060)
}
