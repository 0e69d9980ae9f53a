//! systemd's notification protocol (sd_notify): `READY=1` once the sockets are bound,
//! `WATCHDOG=1` from the drive loop (so a hung loop is restarted by `WatchdogSec`), and
//! `STOPPING=1` at shutdown. A datagram to `$NOTIFY_SOCKET`; nothing when it is not set.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
    /// Half of `$WATCHDOG_USEC`: how often the loop must say it is alive.
    watchdog_every: Option<Duration>,
    last_watchdog: Option<Instant>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` once.
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            let s = UnixDatagram::unbound().ok()?;
            Some((s, path))
        });
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|us| *us > 0)
            .map(|us| Duration::from_micros(us / 2));
        Notifier { socket, watchdog_every, last_watchdog: None }
    }

    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=answering calls");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Called every drive-loop turn; pings the watchdog at most every half period.
    pub fn alive(&mut self, now: Instant) {
        let Some(every) = self.watchdog_every else { return };
        if self.last_watchdog.is_some_and(|t| now.saturating_duration_since(t) < every) {
            return;
        }
        self.last_watchdog = Some(now);
        self.send("WATCHDOG=1");
    }

    fn send(&self, message: &str) {
        let Some((socket, path)) = &self.socket else { return };
        let result = match path.strip_prefix('@') {
            Some(abstract_name) => send_abstract(socket, abstract_name, message),
            None => socket.send_to(message.as_bytes(), path).map(|_| ()),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &str, message: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(message.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &str, _: &str) -> std::io::Result<()> {
    Ok(())
}
