//! Twilio Media Streams frames from an agent, one per line of the input: the decoder, then a
//! live session fed the same frames with playout progress, caller audio and time passing.
//! Never panics; the session's queues stay bounded (its guard ends a flood).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use trunkguard::core::ai::twilio;
use trunkguard::core::ai::{AiProtocol, AiSession, CallInfo, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let call = CallInfo { stream_sid: "MZ1".into(), ..CallInfo::default() };
    let mut s = AiSession::new(SessionConfig::default(), AiProtocol::Twilio, call, None, t0);
    let _ = s.on_open(t0);
    let mut now = t0;
    for line in data.split(|b| *b == b'\n').take(256) {
        let Ok(text) = std::str::from_utf8(line) else { continue };
        let _ = twilio::decode(text);
        now += Duration::from_millis((line.len() % 64) as u64);
        let _ = s.on_text(now, text);
        let _ = s.on_played(now, (line.len() * 7 % 800) as u64);
        let _ = s.send_caller_audio(now, &[0xff; 160]);
        let _ = s.handle_timeout(now);
        while s.poll_text().is_some() {}
    }
    let _ = s.into_transcript();
});
