//! The `--audio` modes: how the simulated agent times and sizes its audio messages.
//!
//! - `paced` (default): 20 ms per message, sent at real time (never faster).
//! - `jitter:MS`: 20 ms messages, each sent at its real-time instant moved by a random offset in
//!   ±MS (seeded by `--seed`; never reordered, never earlier than the audio exists).
//! - `burst:MS`: MS of audio at once (as 20 ms messages back to back), then nothing until the
//!   real-time schedule has caught up with what was sent, then the next burst.
//! - `odd-size:BYTES`: messages of BYTES bytes of payload (whole samples: rounded down to an even
//!   count for PCM16), not a multiple of 20 ms, sent at real time.
//! - `mute`: completes the opening, then never sends audio or marks; only WebSocket pings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Longest jitter or burst accepted (one minute).
const MAX_MS: u64 = 60_000;
/// Largest odd-size payload accepted.
const MAX_BYTES: usize = 65_536;

/// How agent audio leaves the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AudioMode {
    /// 20 ms messages at real time.
    #[default]
    Paced,
    /// Real-time schedule moved by a seeded random offset in ±this, per message.
    Jitter(Duration),
    /// This much audio at once, then wait for the real-time schedule.
    Burst(Duration),
    /// Messages of this many payload bytes.
    OddSize(usize),
    /// No audio at all, only pings.
    Mute,
}

/// An `--audio` value that is not one of the documented forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioModeParseError {
    #[error("unknown audio mode `{0}` (paced, jitter:MS, burst:MS, odd-size:BYTES, mute)")]
    Unknown(String),
    #[error("audio mode `{0}` needs a value")]
    MissingValue(&'static str),
    #[error("audio mode `{name}`: `{value}` is not a whole number in {range}")]
    BadValue { name: &'static str, value: String, range: &'static str },
    #[error("audio mode `{0}` takes no value")]
    UnexpectedValue(&'static str),
}

impl FromStr for AudioMode {
    type Err = AudioModeParseError;

    fn from_str(s: &str) -> Result<AudioMode, AudioModeParseError> {
        let (name, value) = match s.trim().split_once(':') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (s.trim(), None),
        };
        match name {
            "paced" => no_value("paced", value).map(|()| AudioMode::Paced),
            "mute" => no_value("mute", value).map(|()| AudioMode::Mute),
            "jitter" => number("jitter", value, 1, MAX_MS, "1-60000 ms")
                .map(|ms| AudioMode::Jitter(Duration::from_millis(ms))),
            "burst" => number("burst", value, 20, MAX_MS, "20-60000 ms")
                .map(|ms| AudioMode::Burst(Duration::from_millis(ms))),
            "odd-size" => number("odd-size", value, 1, MAX_BYTES as u64, "1-65536 bytes")
                .map(|b| AudioMode::OddSize(b as usize)),
            other => Err(AudioModeParseError::Unknown(other.to_owned())),
        }
    }
}

impl fmt::Display for AudioMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioMode::Paced => f.write_str("paced"),
            AudioMode::Jitter(d) => write!(f, "jitter:{}", d.as_millis()),
            AudioMode::Burst(d) => write!(f, "burst:{}", d.as_millis()),
            AudioMode::OddSize(b) => write!(f, "odd-size:{b}"),
            AudioMode::Mute => f.write_str("mute"),
        }
    }
}

fn no_value(name: &'static str, value: Option<&str>) -> Result<(), AudioModeParseError> {
    match value {
        None => Ok(()),
        Some(_) => Err(AudioModeParseError::UnexpectedValue(name)),
    }
}

fn number(
    name: &'static str,
    value: Option<&str>,
    min: u64,
    max: u64,
    range: &'static str,
) -> Result<u64, AudioModeParseError> {
    let value = value.ok_or(AudioModeParseError::MissingValue(name))?;
    let bad = || AudioModeParseError::BadValue { name, value: value.to_owned(), range };
    let n: u64 = value.parse().map_err(|_| bad())?;
    if n < min || n > max {
        return Err(bad());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form_and_prints_it_back() {
        assert_eq!("paced".parse(), Ok(AudioMode::Paced));
        assert_eq!("mute".parse(), Ok(AudioMode::Mute));
        assert_eq!("jitter:30".parse(), Ok(AudioMode::Jitter(Duration::from_millis(30))));
        assert_eq!("burst:5000".parse(), Ok(AudioMode::Burst(Duration::from_secs(5))));
        assert_eq!("odd-size:333".parse(), Ok(AudioMode::OddSize(333)));
        for m in ["paced", "mute", "jitter:30", "burst:5000", "odd-size:333"] {
            assert_eq!(m.parse::<AudioMode>().unwrap().to_string(), m);
        }
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(matches!("loud".parse::<AudioMode>(), Err(AudioModeParseError::Unknown(_))));
        assert_eq!("jitter".parse::<AudioMode>(), Err(AudioModeParseError::MissingValue("jitter")));
        assert_eq!(
            "mute:1".parse::<AudioMode>(),
            Err(AudioModeParseError::UnexpectedValue("mute"))
        );
        for bad in
            ["jitter:0", "jitter:-5", "burst:10", "burst:1e3", "odd-size:0", "odd-size:99999"]
        {
            assert!(
                matches!(bad.parse::<AudioMode>(), Err(AudioModeParseError::BadValue { .. })),
                "{bad}"
            );
        }
    }
}
