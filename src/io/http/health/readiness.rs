//! Readiness: is this appliance able to take calls right now? A pure function of the status
//! snapshot, the drive loop's liveness and the state database's last write check.
//!
//! Checks (all must pass for `ready`):
//! - `drive_loop`: the loop turned within the liveness window (the snapshot is current).
//! - `carriers`: at least one carrier with a proxy (probed with OPTIONS, or registering) answered
//!   a probe within [`READY_WINDOW`] (widened to two probe intervals when the interval is longer,
//!   so one lost probe does not flap readiness) or holds a valid registration; carriers out of
//!   service do not count. When no carrier has a proxy (inbound-only, IP-authenticated peering)
//!   there is nothing to probe and the check passes, saying so. In a mixed setup the carriers
//!   with a proxy decide: an inbound-only carrier proves nothing about reachability.
//! - `ai`: some AI endpoint passed a real health probe within 10 s (the core's `ai_reachable`);
//!   with no endpoint configured every call gets the canned prompt, and the check passes.
//! - `state_db`: the state database committed a write (checked at most once a second).

use std::time::Duration;

use serde::Serialize;

use crate::core::endpoint::{CarrierStatus, EndpointStatus};

/// How recent a carrier's probe answer must be.
pub const READY_WINDOW: Duration = Duration::from_secs(10);

/// One check's verdict and why, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub ok: bool,
    pub reason: String,
}

impl Check {
    pub fn pass(reason: impl Into<String>) -> Check {
        Check { ok: true, reason: reason.into() }
    }

    pub fn fail(reason: impl Into<String>) -> Check {
        Check { ok: false, reason: reason.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checks {
    pub drive_loop: Check,
    pub carriers: Check,
    pub ai: Check,
    pub state_db: Check,
    /// Not draining: an operator's drain takes the box out of rotation.
    pub taking_calls: Check,
}

/// The body of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Checks,
}

impl Readiness {
    /// Combines the checks; `status` is `None` until the drive loop has turned once.
    pub fn evaluate(
        status: Option<&EndpointStatus>,
        drive_loop: Check,
        state_db: Check,
    ) -> Readiness {
        let (carriers, ai) = match status {
            Some(s) => (carriers_check(&s.carriers), ai_check(s)),
            None => {
                (Check::fail("starting: no status yet"), Check::fail("starting: no status yet"))
            }
        };
        let taking_calls = match status {
            Some(s) if s.admin.draining => Check::fail("draining: an operator stopped new calls"),
            _ => Check::pass("taking new calls"),
        };
        let checks = Checks { drive_loop, carriers, ai, state_db, taking_calls };
        let ready = [
            &checks.drive_loop,
            &checks.carriers,
            &checks.ai,
            &checks.state_db,
            &checks.taking_calls,
        ]
        .iter()
        .all(|c| c.ok);
        Readiness { ready, checks }
    }

    /// (name, check) pairs, in a fixed order (for metrics).
    pub fn named(&self) -> [(&'static str, &Check); 5] {
        let c = &self.checks;
        [
            ("drive_loop", &c.drive_loop),
            ("carriers", &c.carriers),
            ("ai", &c.ai),
            ("state_db", &c.state_db),
            ("taking_calls", &c.taking_calls),
        ]
    }
}

/// Whether a carrier has something to probe: a proxy (probed) or a registrar.
fn has_proxy(c: &CarrierStatus) -> bool {
    c.probe_interval_ms.is_some() || c.registers
}

/// How old a probe answer may be for this carrier.
fn window_ms(c: &CarrierStatus) -> u64 {
    let floor = READY_WINDOW.as_millis() as u64;
    c.probe_interval_ms.map_or(floor, |i| floor.max(2 * i))
}

pub fn carriers_check(carriers: &[CarrierStatus]) -> Check {
    if carriers.is_empty() {
        return Check::fail("no carrier configured");
    }
    let proxied: Vec<&CarrierStatus> = carriers.iter().filter(|c| has_proxy(c)).collect();
    if proxied.is_empty() {
        return Check::pass("inbound-only peering: no carrier has a proxy to probe");
    }
    let in_service = proxied.iter().filter(|c| c.state != "out-of-service");
    for c in in_service {
        if c.registered {
            return Check::pass(format!("{} is registered", c.name));
        }
        if let Some(ago) = c.last_probe_ok_ms_ago.filter(|ago| *ago <= window_ms(c)) {
            return Check::pass(format!("{} answered a probe {} ago", c.name, secs(ago)));
        }
    }
    let detail: Vec<String> = proxied.iter().map(|c| carrier_detail(c)).collect();
    Check::fail(format!(
        "no carrier answered a probe within {} s or is registered: {}",
        READY_WINDOW.as_secs(),
        detail.join("; ")
    ))
}

fn carrier_detail(c: &CarrierStatus) -> String {
    if c.state == "out-of-service" {
        return format!("{} out of service", c.name);
    }
    let last = c
        .last_probe_ok_ms_ago
        .map_or("never answered".to_string(), |ago| format!("last answer {} ago", secs(ago)));
    let reg = if c.registers { ", not registered" } else { "" };
    format!("{} {}, {}{}", c.name, c.state, last, reg)
}

pub fn ai_check(s: &EndpointStatus) -> Check {
    if s.ai_endpoints.is_empty() {
        return Check::pass("no AI endpoints: canned prompt");
    }
    if s.ai_reachable {
        let freshest = s
            .ai_endpoints
            .iter()
            .filter_map(|e| e.last_probe_ok_ms_ago.map(|ago| (ago, e)))
            .min_by_key(|(ago, _)| *ago);
        return match freshest {
            Some((ago, e)) => {
                Check::pass(format!("{} passed a health probe {} ago", e.name, secs(ago)))
            }
            None => Check::pass("an AI endpoint passed a health probe"),
        };
    }
    let detail: Vec<String> = s
        .ai_endpoints
        .iter()
        .map(|e| {
            let out = if s.admin.ai_endpoints_out_of_service.contains(&e.name) {
                ", out of service"
            } else {
                ""
            };
            let last = e
                .last_probe_ok_ms_ago
                .map_or("never passed".to_string(), |ago| format!("last pass {} ago", secs(ago)));
            format!("{} ({}): breaker {}, {}{}", e.name, e.role, e.breaker, last, out)
        })
        .collect();
    Check::fail(format!("no AI endpoint passed a health probe within 10 s: {}", detail.join("; ")))
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::endpoint::{AiEndpointStatus, CallsStatus};

    pub(crate) fn carrier(
        name: &str,
        state: &'static str,
        interval: Option<u64>,
        ago: Option<u64>,
    ) -> CarrierStatus {
        CarrierStatus {
            name: name.into(),
            state,
            registered: false,
            registers: false,
            last_probe_ok_ms_ago: ago,
            probe_interval_ms: interval,
            last_probe_rtt_ms: None,
            outbound_breaker: "closed",
            outbound_hold_ms: None,
            outbound_attempts: 0,
            outbound_failures: 0,
            outbound_breaker_trips: 0,
        }
    }

    pub(crate) fn ai_endpoint(
        name: &str,
        breaker: &'static str,
        ago: Option<u64>,
    ) -> AiEndpointStatus {
        AiEndpointStatus {
            name: name.into(),
            role: "primary",
            breaker,
            breaker_trips: 2,
            last_probe_ok_ms_ago: ago,
            last_probe_rtt_ms: Some(35),
            probe_successes: 10,
            probe_failures: 3,
        }
    }

    pub(crate) fn status(
        carriers: Vec<CarrierStatus>,
        ai: Vec<AiEndpointStatus>,
        ai_reachable: bool,
    ) -> EndpointStatus {
        EndpointStatus {
            carriers,
            calls: CallsStatus { active: 0, answered_total: 0, rtp_packets_received_total: 0 },
            counters: Default::default(),
            outbound: Default::default(),
            ai_reachable,
            admin: Default::default(),
            ai_failovers: 0,
            ai_fallbacks: 0,
            latency: crate::core::metrics::Latencies::default().snapshot(),
            ai_endpoints: ai,
            active_calls: vec![],
            recent_failures: vec![],
        }
    }

    #[test]
    fn a_probed_carrier_must_have_answered_recently() {
        let up = carrier("a", "up", Some(5000), Some(4000));
        assert!(carriers_check(std::slice::from_ref(&up)).ok);
        let stale = carrier("a", "up", Some(5000), Some(10_001));
        let c = carriers_check(&[stale]);
        assert!(!c.ok);
        assert!(c.reason.contains("a up, last answer 10.0 s ago"), "{}", c.reason);
        let never = carrier("b", "unknown", Some(5000), None);
        assert!(carriers_check(std::slice::from_ref(&never))
            .reason
            .contains("b unknown, never answered"));
        // one good carrier is enough
        assert!(carriers_check(&[never, up]).ok);
    }

    #[test]
    fn a_long_probe_interval_widens_the_window_to_two_intervals() {
        assert!(carriers_check(&[carrier("a", "up", Some(30_000), Some(45_000))]).ok);
        assert!(!carriers_check(&[carrier("a", "up", Some(30_000), Some(61_000))]).ok);
    }

    #[test]
    fn registration_counts_and_out_of_service_does_not() {
        let mut r = carrier("reg", "down", Some(5000), None);
        r.registers = true;
        r.registered = true;
        assert_eq!(carriers_check(std::slice::from_ref(&r)), Check::pass("reg is registered"));
        r.registered = false;
        assert!(carriers_check(std::slice::from_ref(&r)).reason.contains("not registered"));
        let oos = carrier("a", "out-of-service", Some(5000), Some(100));
        let c = carriers_check(&[oos]);
        assert!(!c.ok && c.reason.contains("a out of service"), "{}", c.reason);
    }

    #[test]
    fn inbound_only_peering_passes_and_does_not_mask_a_down_proxy() {
        let inbound = carrier("local", "unprobed", None, None);
        let c = carriers_check(std::slice::from_ref(&inbound));
        assert!(c.ok && c.reason.starts_with("inbound-only peering"), "{c:?}");
        assert!(!carriers_check(&[inbound, carrier("a", "down", Some(5000), None)]).ok);
        assert!(!carriers_check(&[]).ok);
    }

    #[test]
    fn ai_check_names_each_endpoint_when_none_passed() {
        assert_eq!(
            ai_check(&status(vec![], vec![], true)),
            Check::pass("no AI endpoints: canned prompt")
        );
        let ok = ai_check(&status(vec![], vec![ai_endpoint("p", "closed", Some(1200))], true));
        assert_eq!(ok, Check::pass("p passed a health probe 1.2 s ago"));
        let mut s = status(
            vec![],
            vec![ai_endpoint("p", "open", Some(42_000)), ai_endpoint("s", "closed", None)],
            false,
        );
        s.admin.ai_endpoints_out_of_service = vec!["s".into()];
        let c = ai_check(&s);
        assert!(!c.ok);
        assert!(
            c.reason.contains("p (primary): breaker open, last pass 42.0 s ago"),
            "{}",
            c.reason
        );
        assert!(
            c.reason.contains("s (primary): breaker closed, never passed, out of service"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn ready_only_when_every_check_passes() {
        let s = status(vec![carrier("local", "unprobed", None, None)], vec![], true);
        let r = Readiness::evaluate(Some(&s), Check::pass("x"), Check::pass("y"));
        assert!(r.ready);
        let r = Readiness::evaluate(Some(&s), Check::pass("x"), Check::fail("disk full"));
        assert!(!r.ready);
        let r = Readiness::evaluate(None, Check::pass("x"), Check::pass("y"));
        assert!(!r.ready && r.checks.carriers.reason.contains("starting"));
    }
}

#[cfg(test)]
mod drain_tests {
    use super::*;

    #[test]
    fn a_draining_box_is_not_ready() {
        let inbound_only = super::tests::carrier("a", "unprobed", None, None);
        let mut s = super::tests::status(vec![inbound_only], vec![], true);
        let ok = || Check::pass("ok");
        assert!(Readiness::evaluate(Some(&s), ok(), ok()).ready);
        s.admin.draining = true;
        let r = Readiness::evaluate(Some(&s), ok(), ok());
        assert!(!r.ready);
        assert!(r.checks.taking_calls.reason.contains("draining"));
    }
}
