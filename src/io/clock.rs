//! The one clock read of the appliance. Everything below it is told the time.

use std::time::Instant;

/// Now, for the drive loop. The sans-IO core never calls this.
pub fn now() -> Instant {
    Instant::now()
}
