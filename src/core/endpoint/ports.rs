//! The RTP port pool: even ports from `[media] rtp_ports` (RTP on the even port, RTCP on the
//! odd one above it). A port is chosen at random (from the endpoint's seeded generator) among
//! the older half of the free ports, so an attacker cannot guess the next call's port from the
//! last one, and a port just released is not handed out again at once.

use std::collections::{HashSet, VecDeque};

use rand::Rng;

#[derive(Debug, Clone)]
pub struct PortPool {
    /// Free ports, least recently released first.
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

    /// A random free port among the least recently released half.
    pub fn allocate(&mut self, rng: &mut impl Rng) -> Option<u16> {
        if self.free.is_empty() {
            return None;
        }
        let older_half = self.free.len().div_ceil(2);
        let port = self.free.remove(rng.gen_range(0..older_half))?;
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
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn hands_out_even_ports_and_runs_dry() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut pool = PortPool::new(20001, 20006);
        assert_eq!(pool.available(), 2); // 20002, 20004 (20006 has no odd partner)
        let a = pool.allocate(&mut rng).unwrap();
        let b = pool.allocate(&mut rng).unwrap();
        let mut both = [a, b];
        both.sort();
        assert_eq!(both, [20002, 20004]);
        assert_eq!(pool.allocate(&mut rng), None);
        pool.release(a);
        pool.release(a); // double release is harmless
        assert_eq!(pool.available(), 1);
        assert_eq!(pool.allocate(&mut rng), Some(a));
    }

    #[test]
    fn ports_are_not_handed_out_in_order() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut pool = PortPool::new(30000, 30999);
        let got: Vec<u16> = (0..20).map(|_| pool.allocate(&mut rng).unwrap()).collect();
        let ascending = got.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(ascending < 3, "sequential ports: {got:?}");
        let mut distinct = got.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 20);
        assert!(got.iter().all(|p| p % 2 == 0));
    }

    #[test]
    fn a_port_just_released_is_not_reused_at_once() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut pool = PortPool::new(30000, 30039); // 20 ports
        for _ in 0..200 {
            let p = pool.allocate(&mut rng).unwrap();
            pool.release(p);
            let q = pool.allocate(&mut rng).unwrap();
            assert_ne!(p, q, "the port just released came back at once");
            pool.release(q);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_ports() {
        let run = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut pool = PortPool::new(30000, 30999);
            (0..10).map(|_| pool.allocate(&mut rng).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
