//! RTCP compound packets from the network into a live RTCP session (reports, RTT, BYE) while
//! its own sending side runs: the input is one packet, received repeatedly as time passes.
//! Never panics.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use trunkguard::core::media::rtcp::{RtcpConfig, RtcpSession};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut s = RtcpSession::new(RtcpConfig::new(0x1234_5678, "fuzz@trunkguard"), t0, 1 << 32, 7);
    let mut now = t0;
    for i in 0..4u32 {
        now += Duration::from_millis(1250);
        s.on_rtp_sent(now, i * 160, 160);
        let _ = s.on_rtcp(now, data);
        let _ = s.poll_report(now);
    }
    let _ = s.bye(now, "fuzz");
    let _ = s.stats();
});
