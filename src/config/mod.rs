//! The TOML configuration: schema, embedded defaults, and validation with field names.
//!
//! - [`Config::from_toml_str`] / [`Config::load`]: parse and validate; every error names its
//!   field and line (`trunkguard.toml:12: carrier[1].probe.down_after: must be at least 1`).
//! - [`Config::embedded_default`] / [`EMBEDDED_DEFAULT_TOML`]: the built-in loopback setup.
//!
//! Submodules: `raw` (serde view of the file), `validate` (defaults + checks), `model` (typed
//! result), `addr` (address strings), `locate` (spans ↔ field paths), `error`, `defaults`.
//! Relative paths in the file (TLS files, password files, prompts) are resolved against the
//! process's working directory, and are checked at load time.

mod addr;
pub mod bounds;
mod defaults;
mod error;
mod locate;
mod model;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use addr::{
    parse_net, parse_transport_addr, AddrError, ListenAddr, PortRange, SIPS_PORT, SIP_PORT,
};
pub use defaults::EMBEDDED_DEFAULT_TOML;
pub use error::{ConfigError, Diagnostic, FieldPath, Segment};
pub use model::{
    AiAudioFormat, AiConfig, AiEndpointConfig, AiProtocolName, AiRole, CallConfig, CarrierConfig,
    Config, LimitsConfig, MediaConfig, NoAnswerAction, Password, ProbeConfig, PromptsConfig,
    RegisterConfig, SipConfig, StateConfig, StatusConfig, StatusTls, TlsConfig, TransferMode,
};
pub use model::{CallbackConfig, ConnectionsConfig};

use locate::SourceMap;
use raw::RawConfig;

impl Config {
    /// Parses and validates TOML text. `origin` names the source in messages (a file path).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let map = SourceMap::new(text);
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Invalid(vec![serde_diagnostic(&e, &map, origin)]))?;
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError::Invalid(vec![serde_diagnostic(&e, &map, origin)]))?;
        validate::validate(raw, &table).map_err(|problems| {
            let mut diagnostics: Vec<Diagnostic> = problems
                .into_iter()
                .map(|(field, message)| Diagnostic {
                    origin: origin.to_owned(),
                    line: map.line_of_path(&field),
                    field,
                    message,
                })
                .collect();
            diagnostics.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
            ConfigError::Invalid(diagnostics)
        })
    }

    /// Reads (at most [`bounds::MAX_CONFIG_BYTES`]) and validates a configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = bounds::read_limited_string(path, bounds::MAX_CONFIG_BYTES)
            .map_err(|source| ConfigError::Read { path: origin.clone(), source })?;
        Config::from_toml_str(&text, &origin)
    }
}

/// A TOML syntax or type error, located by its span.
fn serde_diagnostic(e: &toml::de::Error, map: &SourceMap<'_>, origin: &str) -> Diagnostic {
    let start = e.span().map(|s| s.start);
    Diagnostic {
        origin: origin.to_owned(),
        line: start.map(|s| map.line_of(s)),
        field: start.map(|s| map.path_at(s)).unwrap_or_default(),
        message: one_line(e.message()),
    }
}

/// toml messages may span lines ("invalid table header\nexpected ..."); keep one per diagnostic.
fn one_line(message: &str) -> String {
    let parts: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    parts.join("; ")
}
