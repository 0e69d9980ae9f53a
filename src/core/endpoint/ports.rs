//! The RTP port pool: even ports from `[media] rtp_ports` (RTP on the even port, RTCP on the
//! odd one above it), handed out least-recently-used first so a port is not reused at once.

use std::collections::{HashSet, VecDeque};

#[derive(Debug, Clone)]
pub struct PortPool {
    free: VecDeque<u16>,
    used: HashSet<u16>,
}

impl PortPool {
    /// Every even port `p` with `p + 1 <= end` in `start..=end`.
    pub fn new(start: u16, end: u16) -> Self {
        let first = start + (start % 2);
        let free = (first..end).step_by(2).collect();
        PortPool { free, used: HashSet::new() }
    }

    pub fn allocate(&mut self) -> Option<u16> {
        let port = self.free.pop_front()?;
        self.used.insert(port);
        Some(port)
    }

    /// Returns a port to the back of the queue; unknown ports are ignored.
    pub fn release(&mut self, port: u16) {
        if self.used.remove(&port) {
            self.free.push_back(port);
        }
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_even_ports_lru_and_runs_dry() {
        let mut pool = PortPool::new(20001, 20006);
        assert_eq!(pool.available(), 2); // 20002, 20004 (20006 has no odd partner)
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!((a, b), (20002, 20004));
        assert_eq!(pool.allocate(), None);
        pool.release(a);
        pool.release(a); // double release is harmless
        assert_eq!(pool.available(), 1);
        assert_eq!(pool.allocate(), Some(20002));
    }
}
