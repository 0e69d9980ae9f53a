//! Fault injection for the agent simulator: what the `--fault` option means and how it parses.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Longest delay a fault may name (one day): anything longer is surely a typo.
const MAX_FAULT_DELAY: Duration = Duration::from_secs(86_400);

/// One way the simulated agent misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `refuse`: accept the TCP connection and close it at once, before any upgrade.
    Refuse,
    /// `http503`: answer the WebSocket upgrade with HTTP 503 Service Unavailable.
    Http503,
    /// `close-after:N`: close the WebSocket with code 1011 N seconds after the upgrade.
    CloseAfter(Duration),
    /// `stall-after:N`: after N seconds send nothing at all (not even pongs or a close),
    /// keeping the socket open until the peer gives up.
    StallAfter(Duration),
    /// `slow-first-audio:MS`: hold the first agent audio back by MS milliseconds.
    SlowFirstAudio(Duration),
}

/// A `--fault` value that is not one of the documented forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultParseError {
    #[error(
        "unknown fault `{0}` (refuse, http503, close-after:N, stall-after:N, slow-first-audio:MS)"
    )]
    Unknown(String),
    #[error("fault `{name}` needs a value: `{name}:{unit}`")]
    MissingValue { name: &'static str, unit: &'static str },
    #[error("fault `{name}`: `{value}` is not a valid number of {unit} (0 to 1 day)")]
    BadValue { name: &'static str, value: String, unit: &'static str },
    #[error("fault `{0}` takes no value")]
    UnexpectedValue(&'static str),
}

impl FromStr for Fault {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Fault, FaultParseError> {
        let (name, value) = match s.trim().split_once(':') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (s.trim(), None),
        };
        match name {
            "refuse" => no_value("refuse", value).map(|()| Fault::Refuse),
            "http503" => no_value("http503", value).map(|()| Fault::Http503),
            "close-after" => seconds("close-after", value).map(Fault::CloseAfter),
            "stall-after" => seconds("stall-after", value).map(Fault::StallAfter),
            "slow-first-audio" => millis("slow-first-audio", value).map(Fault::SlowFirstAudio),
            other => Err(FaultParseError::Unknown(other.to_owned())),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Refuse => f.write_str("refuse"),
            Fault::Http503 => f.write_str("http503"),
            Fault::CloseAfter(d) => write!(f, "close-after:{}", d.as_secs_f64()),
            Fault::StallAfter(d) => write!(f, "stall-after:{}", d.as_secs_f64()),
            Fault::SlowFirstAudio(d) => write!(f, "slow-first-audio:{}", d.as_millis()),
        }
    }
}

fn no_value(name: &'static str, value: Option<&str>) -> Result<(), FaultParseError> {
    match value {
        None => Ok(()),
        Some(_) => Err(FaultParseError::UnexpectedValue(name)),
    }
}

/// Seconds, fractions allowed (`close-after:0.5`).
fn seconds(name: &'static str, value: Option<&str>) -> Result<Duration, FaultParseError> {
    let unit = "seconds";
    let value = value.ok_or(FaultParseError::MissingValue { name, unit })?;
    let bad = || FaultParseError::BadValue { name, value: value.to_owned(), unit };
    let secs: f64 = value.parse().map_err(|_| bad())?;
    if !secs.is_finite() || secs < 0.0 || secs > MAX_FAULT_DELAY.as_secs_f64() {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Whole milliseconds.
fn millis(name: &'static str, value: Option<&str>) -> Result<Duration, FaultParseError> {
    let unit = "milliseconds";
    let value = value.ok_or(FaultParseError::MissingValue { name, unit })?;
    let ms: u64 = value.parse().map_err(|_| FaultParseError::BadValue {
        name,
        value: value.to_owned(),
        unit,
    })?;
    let d = Duration::from_millis(ms);
    if d > MAX_FAULT_DELAY {
        return Err(FaultParseError::BadValue { name, value: value.to_owned(), unit });
    }
    Ok(d)
}

/// The faults of one simulator, looked up by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults(pub Vec<Fault>);

impl Faults {
    pub fn refuse(&self) -> bool {
        self.0.contains(&Fault::Refuse)
    }

    pub fn http503(&self) -> bool {
        self.0.contains(&Fault::Http503)
    }

    pub fn close_after(&self) -> Option<Duration> {
        self.0.iter().find_map(|f| match f {
            Fault::CloseAfter(d) => Some(*d),
            _ => None,
        })
    }

    pub fn stall_after(&self) -> Option<Duration> {
        self.0.iter().find_map(|f| match f {
            Fault::StallAfter(d) => Some(*d),
            _ => None,
        })
    }

    pub fn slow_first_audio(&self) -> Option<Duration> {
        self.0.iter().find_map(|f| match f {
            Fault::SlowFirstAudio(d) => Some(*d),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        assert_eq!("refuse".parse(), Ok(Fault::Refuse));
        assert_eq!("http503".parse(), Ok(Fault::Http503));
        assert_eq!("close-after:2".parse(), Ok(Fault::CloseAfter(Duration::from_secs(2))));
        assert_eq!("stall-after:0.5".parse(), Ok(Fault::StallAfter(Duration::from_millis(500))));
        assert_eq!(
            "slow-first-audio:1500".parse(),
            Ok(Fault::SlowFirstAudio(Duration::from_millis(1500)))
        );
        for f in ["refuse", "http503", "close-after:1", "stall-after:0.25", "slow-first-audio:7"] {
            assert_eq!(f.parse::<Fault>().unwrap().to_string(), f);
        }
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(matches!("boom".parse::<Fault>(), Err(FaultParseError::Unknown(_))));
        assert!(matches!(
            "close-after".parse::<Fault>(),
            Err(FaultParseError::MissingValue { .. })
        ));
        for bad in ["close-after:-1", "close-after:NaN", "stall-after:x", "close-after:1e9"] {
            assert!(matches!(bad.parse::<Fault>(), Err(FaultParseError::BadValue { .. })), "{bad}");
        }
        assert!(matches!(
            "slow-first-audio:1.5".parse::<Fault>(),
            Err(FaultParseError::BadValue { .. })
        ));
        assert_eq!("refuse:1".parse::<Fault>(), Err(FaultParseError::UnexpectedValue("refuse")));
    }

    #[test]
    fn lookup_by_kind() {
        let faults = Faults(vec![
            Fault::SlowFirstAudio(Duration::from_millis(100)),
            Fault::CloseAfter(Duration::from_secs(3)),
        ]);
        assert!(!faults.refuse());
        assert_eq!(faults.close_after(), Some(Duration::from_secs(3)));
        assert_eq!(faults.slow_first_audio(), Some(Duration::from_millis(100)));
        assert_eq!(faults.stall_after(), None);
    }
}
