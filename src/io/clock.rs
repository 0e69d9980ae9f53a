//! The one clock read of the appliance. Everything below it is told the time.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::core::media::rtcp::ntp_from_unix;

/// Now, for the drive loop. The sans-IO core never calls this.
pub fn now() -> Instant {
    Instant::now()
}

/// The wall clock once, at start, as (instant, NTP time) for RTCP sender reports.
pub fn ntp_anchor() -> (Instant, u64) {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (Instant::now(), ntp_from_unix(since_epoch))
}

/// Milliseconds since the Unix epoch (wall clock), for records written to disk.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}
