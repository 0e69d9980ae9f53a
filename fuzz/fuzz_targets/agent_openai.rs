//! OpenAI Realtime events from an agent, one per line of the input (the first byte picks the
//! audio format): the decoder, then a live session (deltas, barge-in truncation, transcripts).
//! Never panics.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use trunkguard::core::ai::openai;
use trunkguard::core::ai::SessionConfig;
use trunkguard::core::ai::{AiProtocol, AiSession, CallInfo, OpenAiFormat, OpenAiSettings};

fuzz_target!(|data: &[u8]| {
    let pcm = data.first().is_some_and(|b| b % 2 == 1);
    let format = if pcm { OpenAiFormat::Pcm24k } else { OpenAiFormat::G711Ulaw };
    let protocol = AiProtocol::OpenAi(OpenAiSettings { format, ..OpenAiSettings::default() });
    let t0 = Instant::now();
    let mut s = AiSession::new(SessionConfig::default(), protocol, CallInfo::default(), None, t0);
    let _ = s.on_open(t0);
    let mut now = t0;
    for line in data.split(|b| *b == b'\n').take(256) {
        let Ok(text) = std::str::from_utf8(line) else { continue };
        let _ = openai::decode(text);
        let _ = openai::parse_client_event(text);
        now += Duration::from_millis((line.len() % 64) as u64);
        let _ = s.on_text(now, text);
        let _ = s.on_played(now, (line.len() * 13 % 2400) as u64);
        let _ = s.send_caller_audio(now, &[0xff; 160]);
        let _ = s.handle_timeout(now);
        while s.poll_text().is_some() {}
    }
    let _ = s.into_transcript();
});
