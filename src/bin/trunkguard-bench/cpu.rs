//! CPU time consumed by the calling thread (`CLOCK_THREAD_CPUTIME_ID`): what a benchmark on
//! a shared machine should divide by, rather than wall time.

use std::time::Duration;

/// CPU time of the calling thread so far; `None` where the clock cannot be read.
pub fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

/// A stopwatch on the calling thread's CPU clock (falls back to wall time where that clock
/// cannot be read).
#[derive(Debug, Clone, Copy)]
pub struct CpuStopwatch {
    cpu: Option<Duration>,
    wall: std::time::Instant,
}

impl CpuStopwatch {
    /// Starts now.
    pub fn start() -> CpuStopwatch {
        CpuStopwatch { cpu: thread_cpu_time(), wall: std::time::Instant::now() }
    }

    /// CPU time spent by this thread since [`CpuStopwatch::start`].
    pub fn elapsed(&self) -> Duration {
        match (self.cpu, thread_cpu_time()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => self.wall.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_takes_cpu_time_and_sleeping_does_not() {
        let busy = CpuStopwatch::start();
        let mut x = 0u64;
        while busy.elapsed() < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(x > 0);
        let idle = CpuStopwatch::start();
        std::thread::sleep(Duration::from_millis(50));
        assert!(idle.elapsed() < Duration::from_millis(20), "{:?}", idle.elapsed());
    }
}
