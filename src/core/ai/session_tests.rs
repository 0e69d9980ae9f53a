//! Tests of [`AiSession`] over both protocols, on a fake clock.

use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde_json::{json, Value};

use super::*;
use crate::core::ai::openai::ClientEvent;
use crate::core::ai::twilio::{encode_agent_mark, encode_agent_media, encode_clear};

const MS: fn(u64) -> Duration = Duration::from_millis;

fn call() -> CallInfo {
    CallInfo {
        call_sid: "CA1".into(),
        stream_sid: "MZ1".into(),
        account_sid: "AC1".into(),
        custom_parameters: [("carrier".to_string(), "a".to_string())].into(),
    }
}

fn drain(s: &mut AiSession) -> Vec<Value> {
    std::iter::from_fn(|| s.poll_text()).map(|t| serde_json::from_str(&t).unwrap()).collect()
}

fn twilio_open(t0: Instant, resume: Option<Transcript>) -> AiSession {
    let mut s = AiSession::new(SessionConfig::default(), AiProtocol::Twilio, call(), resume, t0);
    assert_eq!(s.on_open(t0), vec![AiEvent::Ready]);
    s
}

fn openai(format: OpenAiFormat) -> AiProtocol {
    AiProtocol::OpenAi(OpenAiSettings {
        format,
        instructions: Some("Be brief.".into()),
        ..OpenAiSettings::default()
    })
}

fn openai_open(t0: Instant, format: OpenAiFormat, resume: Option<Transcript>) -> AiSession {
    let mut s = AiSession::new(SessionConfig::default(), openai(format), call(), resume, t0);
    assert_eq!(s.on_open(t0), vec![]);
    s
}

fn delta(item: &str, bytes: &[u8]) -> String {
    use base64::Engine as _;
    json!({
        "type": "response.output_audio.delta", "response_id": "resp_1", "item_id": item,
        "output_index": 0, "content_index": 0,
        "delta": base64::engine::general_purpose::STANDARD.encode(bytes)
    })
    .to_string()
}

const SPEECH_STARTED: &str =
    r#"{"type":"input_audio_buffer.speech_started","audio_start_ms":1200,"item_id":"msg_9"}"#;

// ---------------------------------------------------------------- Twilio

#[test]
fn twilio_opening_sequence() {
    let t0 = Instant::now();
    let mut s = twilio_open(t0, None);
    let out = drain(&mut s);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}));
    assert_eq!(out[1]["event"], "start");
    assert_eq!(out[1]["sequenceNumber"], "1");
    assert_eq!(out[1]["streamSid"], "MZ1");
    assert_eq!(out[1]["start"]["callSid"], "CA1");
    assert_eq!(out[1]["start"]["accountSid"], "AC1");
    assert_eq!(out[1]["start"]["tracks"], json!(["inbound"]));
    assert_eq!(out[1]["start"]["customParameters"], json!({"carrier": "a"}));
    assert_eq!(out[1]["start"]["mediaFormat"]["encoding"], "audio/x-mulaw");
    assert!(s.is_ready());
    assert!(s.on_open(t0).is_empty(), "second open is a no-op");
}

#[test]
fn twilio_resume_sets_custom_parameter() {
    let t0 = Instant::now();
    let mut s = twilio_open(t0, Some(Transcript::new(8, 100)));
    let out = drain(&mut s);
    assert_eq!(out[1]["start"]["customParameters"], json!({"carrier": "a", "resumed": "true"}));
}

#[test]
fn twilio_media_out_counts_sequence_chunk_and_timestamp() {
    let t0 = Instant::now();
    let mut s = AiSession::new(SessionConfig::default(), AiProtocol::Twilio, call(), None, t0);
    assert_eq!(s.send_caller_audio(t0, &[0xFF; 160]), Err(SessionError::NotOpen));
    s.on_open(t0 + MS(5));
    drain(&mut s);
    s.send_caller_audio(t0 + MS(25), &[0xFF; 160]).unwrap();
    s.send_caller_audio(t0 + MS(45), &[0x7F; 160]).unwrap();
    s.send_dtmf('5').unwrap();
    assert_eq!(s.send_dtmf('x'), Err(SessionError::InvalidDigit('x')));
    let out = drain(&mut s);
    assert_eq!(out[0]["event"], "media");
    assert_eq!(out[0]["sequenceNumber"], "2");
    assert_eq!(out[0]["media"]["chunk"], "1");
    assert_eq!(out[0]["media"]["timestamp"], "20");
    assert_eq!(out[0]["media"]["track"], "inbound");
    assert_eq!(out[0]["media"]["payload"].as_str().unwrap().len(), 216);
    assert_eq!(out[1]["sequenceNumber"], "3");
    assert_eq!(out[1]["media"]["chunk"], "2");
    assert_eq!(out[1]["media"]["timestamp"], "40");
    assert_eq!(
        out[2],
        json!({"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "4",
               "dtmf": {"track": "inbound_track", "digit": "5"}})
    );
    s.close(t0 + MS(60));
    let out = drain(&mut s);
    assert_eq!(
        out,
        vec![json!({"event": "stop", "sequenceNumber": "5", "streamSid": "MZ1",
                    "stop": {"accountSid": "AC1", "callSid": "CA1"}})]
    );
    assert_eq!(s.send_caller_audio(t0 + MS(80), &[0; 160]), Err(SessionError::Closed));
}

#[test]
fn twilio_audio_in_and_mark_echo_only_after_played() {
    let t0 = Instant::now();
    let mut s = twilio_open(t0, None);
    drain(&mut s);
    let ev = s.on_text(t0, &encode_agent_media("MZ1", &[1; 160]));
    assert_eq!(ev, vec![AiEvent::Audio(AiAudio::Ulaw8k(vec![1; 160]))]);
    assert!(s.on_text(t0, &encode_agent_mark("MZ1", "m1")).is_empty());
    s.on_text(t0, &encode_agent_media("MZ1", &[2; 160]));
    assert!(s.on_text(t0, &encode_agent_mark("MZ1", "m2")).is_empty());
    assert!(drain(&mut s).is_empty(), "no echo before playout");
    assert!(s.on_played(t0 + MS(10), 80).is_empty());
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.on_played(t0 + MS(20), 80), vec![AiEvent::Mark("m1".into())]);
    let out = drain(&mut s);
    assert_eq!(
        out,
        vec![json!({"event": "mark", "streamSid": "MZ1", "sequenceNumber": "2",
                    "mark": {"name": "m1"}})]
    );
    // Over-reporting is clamped to what was queued.
    assert_eq!(s.on_played(t0 + MS(40), 1000), vec![AiEvent::Mark("m2".into())]);
    assert_eq!(s.unplayed(), 0);
    // A mark with nothing queued is echoed at once.
    assert_eq!(
        s.on_text(t0 + MS(41), &encode_agent_mark("MZ1", "m3")),
        vec![AiEvent::Mark("m3".into())]
    );
    assert_eq!(s.stats().marks_echoed, 3);
}

#[test]
fn twilio_clear_flushes_and_echoes_pending_marks() {
    let t0 = Instant::now();
    let mut s = twilio_open(t0, None);
    drain(&mut s);
    s.on_text(t0, &encode_agent_media("MZ1", &[1; 800]));
    s.on_text(t0, &encode_agent_mark("MZ1", "end"));
    s.on_played(t0 + MS(20), 160);
    let ev = s.on_text(t0 + MS(20), &encode_clear("MZ1"));
    assert_eq!(ev, vec![AiEvent::Clear, AiEvent::Mark("end".into())]);
    assert_eq!(s.unplayed(), 0);
    assert_eq!(drain(&mut s)[0]["mark"]["name"], "end");
    // Clear with nothing queued: nothing to flush.
    assert!(s.on_text(t0 + MS(30), &encode_clear("MZ1")).is_empty());
}

#[test]
fn twilio_rejects_other_streams_and_counts_unknown_and_bad_frames() {
    let t0 = Instant::now();
    let mut s = twilio_open(t0, None);
    let ev = s.on_text(t0, &encode_agent_media("MZ2", &[1; 160]));
    assert!(matches!(ev.as_slice(), [AiEvent::Error(_)]));
    assert_eq!(s.unplayed(), 0);
    assert!(s.on_text(t0, r#"{"event":"custom","x":1}"#).is_empty());
    assert!(matches!(s.on_text(t0, "{").as_slice(), [AiEvent::Error(_)]));
    assert!(matches!(
        s.on_protocol_error(t0, ProtocolError::Binary).as_slice(),
        [AiEvent::Error(_)]
    ));
    let stats = s.stats();
    assert_eq!((stats.unknown_in, stats.errors_in, stats.frames_in), (1, 3, 3));
    assert_eq!(s.send_dtmf('#'), Ok(()));
}

// ---------------------------------------------------------------- OpenAI

#[test]
fn openai_opening_sequence_and_ready_on_session_updated() {
    let t0 = Instant::now();
    let mut s = openai_open(t0, OpenAiFormat::G711Ulaw, None);
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["type"], "session.update");
    assert_eq!(out[0]["session"]["type"], "realtime");
    assert_eq!(out[0]["session"]["instructions"], "Be brief.");
    assert_eq!(out[0]["session"]["audio"]["input"]["format"], json!({"type": "audio/pcmu"}));
    assert_eq!(out[0]["session"]["audio"]["output"]["format"], json!({"type": "audio/pcmu"}));
    assert_eq!(out[0]["session"]["audio"]["input"]["turn_detection"]["type"], "server_vad");
    assert_eq!(out[0]["session"]["audio"]["input"]["transcription"]["model"], "whisper-1");
    assert!(!s.is_ready());
    assert!(s.on_text(t0, r#"{"type":"session.created","session":{}}"#).is_empty());
    assert_eq!(s.on_text(t0, r#"{"type":"session.updated","session":{}}"#), vec![AiEvent::Ready]);
    assert!(s.on_text(t0, r#"{"type":"session.updated","session":{}}"#).is_empty());
    assert_eq!(s.send_dtmf('1'), Err(SessionError::Unsupported));

    let mut p = openai_open(t0, OpenAiFormat::Pcm24k, None);
    let out = drain(&mut p);
    assert_eq!(
        out[0]["session"]["audio"]["output"]["format"],
        json!({"type": "audio/pcm", "rate": 24000})
    );
}

#[test]
fn openai_resume_replays_transcript_as_items() {
    let t0 = Instant::now();
    let mut first = openai_open(t0, OpenAiFormat::G711Ulaw, None);
    first.on_text(
        t0,
        r#"{"type":"conversation.item.input_audio_transcription.completed","item_id":"u1","content_index":0,"transcript":"I need a taxi."}"#,
    );
    first.on_text(
        t0,
        r#"{"type":"response.output_audio_transcript.delta","item_id":"a1","delta":"Where "}"#,
    );
    first.on_text(
        t0,
        r#"{"type":"response.output_audio_transcript.delta","item_id":"a1","delta":"to?"}"#,
    );
    let carried = first.into_transcript();
    assert_eq!(carried.len(), 2);

    let mut s = openai_open(t0, OpenAiFormat::G711Ulaw, Some(carried));
    let out = drain(&mut s);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["type"], "session.update");
    assert_eq!(
        out[1],
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
               "content": [{"type": "input_text", "text": "I need a taxi."}]}})
    );
    assert_eq!(
        out[2],
        json!({"type": "conversation.item.create", "item": {"type": "message",
               "role": "assistant", "content": [{"type": "output_text", "text": "Where to?"}]}})
    );
}

#[test]
fn openai_caller_audio_in_both_formats() {
    let t0 = Instant::now();
    let mut s = openai_open(t0, OpenAiFormat::G711Ulaw, None);
    drain(&mut s);
    s.send_caller_audio(t0, &[0xFF, 0x7F]).unwrap();
    assert_eq!(s.send_caller_pcm24k(t0, &[1]), Err(SessionError::WrongFormat));
    assert_eq!(drain(&mut s), vec![json!({"type": "input_audio_buffer.append", "audio": "/38="})]);

    let mut p = openai_open(t0, OpenAiFormat::Pcm24k, None);
    drain(&mut p);
    assert_eq!(p.send_caller_audio(t0, &[0xFF]), Err(SessionError::WrongFormat));
    p.send_caller_pcm24k(t0, &[1, -2]).unwrap();
    let frame = p.poll_text().unwrap();
    let ClientEvent::InputAudioBufferAppend { audio } = openai::parse_client_event(&frame).unwrap()
    else {
        panic!("{frame}");
    };
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(audio).unwrap();
    assert_eq!(bytes, vec![1, 0, 0xFE, 0xFF]);
}

#[test]
fn openai_audio_in_both_formats() {
    let t0 = Instant::now();
    let mut s = openai_open(t0, OpenAiFormat::G711Ulaw, None);
    assert_eq!(
        s.on_text(t0, &delta("item_1", &[5; 160])),
        vec![AiEvent::Audio(AiAudio::Ulaw8k(vec![5; 160]))]
    );
    let beta =
        r#"{"type":"response.audio.delta","response_id":"r","item_id":"item_1","delta":"/38="}"#;
    assert_eq!(s.on_text(t0, beta), vec![AiEvent::Audio(AiAudio::Ulaw8k(vec![0xFF, 0x7F]))]);
    assert_eq!(s.unplayed(), 162);

    let mut p = openai_open(t0, OpenAiFormat::Pcm24k, None);
    assert_eq!(
        p.on_text(t0, &delta("item_1", &[1, 0, 0xFE, 0xFF])),
        vec![AiEvent::Audio(AiAudio::Pcm24k(vec![1, -2]))]
    );
    assert!(matches!(p.on_text(t0, &delta("item_1", &[1, 2, 3])).as_slice(), [AiEvent::Error(_)]));
    assert_eq!(p.unplayed(), 2);
}

fn truncate_of(frame: &Value) -> (String, u64) {
    assert_eq!(frame["type"], "conversation.item.truncate", "{frame}");
    assert_eq!(frame["content_index"], 0);
    (frame["item_id"].as_str().unwrap().to_string(), frame["audio_end_ms"].as_u64().unwrap())
}

#[test]
fn speech_started_flushes_and_truncates_to_what_was_heard_ulaw() {
    let t0 = Instant::now();
    let mut s = openai_open(t0, OpenAiFormat::G711Ulaw, None);
    drain(&mut s);
    // Item 1: 0.5 s, fully played. Item 2: 1 s, of which 200 ms played.
    s.on_text(t0, &delta("item_1", &[1; 4000]));
    s.on_played(t0, 4000);
    s.on_text(t0, &delta("item_2", &[2; 4000]));
    s.on_text(t0, &delta("item_2", &[2; 4000]));
    s.on_played(t0 + MS(200), 1600);
    let ev = s.on_text(t0 + MS(700), SPEECH_STARTED);
    assert_eq!(ev, vec![AiEvent::Clear, AiEvent::SpeechStarted]);
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    assert_eq!(truncate_of(&out[0]), ("item_2".into(), 200));
    assert_eq!(s.unplayed(), 0);
    // Late deltas of the truncated item are dropped.
    assert!(s.on_text(t0 + MS(710), &delta("item_2", &[2; 160])).is_empty());
    assert_eq!(s.unplayed(), 0);
    // A new response plays normally.
    assert_eq!(s.on_text(t0 + MS(800), &delta("item_3", &[3; 160])).len(), 1);
    assert_eq!(s.stats().truncates, 1);
}

#[test]
fn speech_started_truncates_in_pcm24k_units() {
    let t0 = Instant::now();
    let mut s = openai_open(t0, OpenAiFormat::Pcm24k, None);
    drain(&mut s);
    s.on_text(t0, &delta("item_1", &vec![0u8; 24000 * 2]));
    s.on_played(t0 + MS(350), 8400);
    let ev = s.on_text(t0 + MS(350), SPEECH_STARTED);
    assert_eq!(ev, vec![AiEvent::Clear, AiEvent::SpeechStarted]);
    assert_eq!(truncate_of(&drain(&mut s)[0]), ("item_1".into(), 350));
}

#[test]
fn speech_started_after_playout_finished_sends_nothing() {
    let t0 = Instant::now();
    let mut s = openai_open(t0, OpenAiFormat::G711Ulaw, None);
    drain(&mut s);
    s.on_text(t0, &delta("item_1", &[1; 800]));
    s.on_played(t0 + MS(100), 800);
    assert_eq!(s.on_text(t0 + MS(500), SPEECH_STARTED), vec![AiEvent::SpeechStarted]);
    assert!(drain(&mut s).is_empty());
    // Nothing played yet of a fresh item: truncate at 0 ms.
    s.on_text(t0 + MS(600), &delta("item_2", &[1; 800]));
    s.on_text(t0 + MS(601), SPEECH_STARTED);
    assert_eq!(truncate_of(&drain(&mut s)[0]), ("item_2".into(), 0));
}

#[test]
fn transcript_is_kept_marked_on_interruption_and_bounded() {
    let t0 = Instant::now();
    let mut s = openai_open(t0, OpenAiFormat::G711Ulaw, None);
    let ev = s.on_text(
        t0,
        r#"{"type":"conversation.item.input_audio_transcription.completed","item_id":"u1","content_index":0,"transcript":"Hello"}"#,
    );
    assert_eq!(
        ev,
        vec![AiEvent::Transcript(TranscriptEntry { role: Role::User, text: "Hello".into() })]
    );
    s.on_text(t0, r#"{"type":"response.audio_transcript.delta","item_id":"a1","delta":"Hi, how"}"#);
    let ev = s.on_text(
        t0,
        r#"{"type":"response.output_audio_transcript.done","item_id":"a1","transcript":"Hi, how can I help?"}"#,
    );
    assert_eq!(
        ev,
        vec![AiEvent::Transcript(TranscriptEntry {
            role: Role::Assistant,
            text: "Hi, how can I help?".into()
        })]
    );
    s.on_text(t0, &delta("a2", &[1; 800]));
    s.on_text(
        t0,
        r#"{"type":"response.output_audio_transcript.delta","item_id":"a2","delta":"Let me"}"#,
    );
    let ev = s.on_text(t0, SPEECH_STARTED);
    assert!(ev.contains(&AiEvent::Transcript(TranscriptEntry {
        role: Role::Assistant,
        text: "Let me…".into()
    })));
    // The done of the truncated item does not overwrite what was recorded.
    s.on_text(
        t0,
        r#"{"type":"response.output_audio_transcript.done","item_id":"a2","transcript":"Let me check that."}"#,
    );
    let texts: Vec<_> = s.transcript().entries().map(|e| e.text.clone()).collect();
    assert_eq!(texts, vec!["Hello", "Hi, how can I help?", "Let me…"]);

    let mut t = Transcript::new(3, 12);
    for w in ["one", "two", "three", "four"] {
        t.push(Role::User, w);
    }
    let kept: Vec<_> = t.entries().map(|e| e.text.as_str()).collect();
    assert_eq!(kept, vec!["two", "three", "four"]);
    t.push(Role::Assistant, "abcdefghijklmnop");
    let kept: Vec<_> = t.entries().map(|e| e.text.as_str()).collect();
    assert_eq!(kept, vec!["efghijklmnop"]);
    t.push(Role::User, "   ");
    assert_eq!(t.len(), 1);
}

#[test]
fn openai_error_event_is_reported() {
    let t0 = Instant::now();
    let mut s = openai_open(t0, OpenAiFormat::G711Ulaw, None);
    let ev = s.on_text(
        t0,
        r#"{"type":"error","event_id":"e","error":{"type":"invalid_request_error","code":"bad","message":"nope"}}"#,
    );
    assert_eq!(ev, vec![AiEvent::Error("agent error bad: nope".into())]);
    assert!(s.on_text(t0, r#"{"type":"response.created","response":{}}"#).is_empty());
    assert!(s.on_text(t0, r#"{"type":"mystery"}"#).is_empty());
    let stats = s.stats();
    assert_eq!((stats.agent_errors, stats.unknown_in, stats.errors_in), (1, 1, 0));
}

// ---------------------------------------------------------------- stall detection

fn talk(s: &mut AiSession, t0: Instant, from_ms: u64, to_ms: u64) -> Vec<(u64, AiEvent)> {
    let mut events = Vec::new();
    let mut ms = from_ms;
    while ms < to_ms {
        let now = t0 + MS(ms);
        while s.poll_timeout().is_some_and(|t| t <= now) {
            let at = s.poll_timeout().unwrap();
            for e in s.handle_timeout(at) {
                events.push(((at - t0).as_millis() as u64, e));
            }
        }
        s.send_caller_audio(now, &[0xFF; 160]).unwrap();
        drain(s);
        ms += 20;
    }
    events
}

/// The stall tests' config: the first-audio timeout far away.
fn no_mute() -> SessionConfig {
    SessionConfig { first_audio_timeout: Duration::from_secs(3600), ..SessionConfig::default() }
}

#[test]
fn stall_raised_after_500ms_without_frames_while_caller_talks() {
    for protocol in [AiProtocol::Twilio, openai(OpenAiFormat::G711Ulaw)] {
        let t0 = Instant::now();
        let mut s = AiSession::new(no_mute(), protocol, call(), None, t0);
        s.on_open(t0);
        assert_eq!(s.poll_timeout(), Some(t0 + MS(3_600_000)), "no stall clock before talk");
        // Caller talks from 1000 ms; the agent answered last at 1200 ms.
        let mut events = talk(&mut s, t0, 1000, 1200);
        s.on_text(t0 + MS(1200), r#"{"type":"session.updated","event":"x"}"#);
        assert_eq!(s.poll_timeout(), Some(t0 + MS(1450)), "ping after 250 ms");
        events.extend(talk(&mut s, t0, 1200, 1449));
        assert!(!s.poll_ping());
        events.extend(talk(&mut s, t0, 1449, 1699));
        assert!(s.poll_ping(), "ping due at 1450");
        assert!(!s.poll_ping());
        assert!(events.is_empty(), "{events:?}");
        events.extend(talk(&mut s, t0, 1699, 3000));
        assert_eq!(events, vec![(1700, AiEvent::Stalled)], "exactly once, at 1200 + 500");
        assert_eq!(s.stats().stalls, 1);
        // A frame (or pong) ends the stall; the clock restarts.
        s.on_activity(t0 + MS(3000));
        let events = talk(&mut s, t0, 3000, 3600);
        assert_eq!(events, vec![(3500, AiEvent::Stalled)]);
    }
}

#[test]
fn no_stall_while_caller_is_silent() {
    let t0 = Instant::now();
    let mut s = AiSession::new(no_mute(), openai(OpenAiFormat::G711Ulaw), call(), None, t0);
    s.on_open(t0);
    // One burst of 100 ms at 0 ms, then silence: the agent owes nothing.
    let mut events = talk(&mut s, t0, 0, 100);
    for ms in [300, 500, 700, 2000] {
        events.extend(s.handle_timeout(t0 + MS(ms)).into_iter().map(|e| (ms, e)));
    }
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(s.poll_timeout(), Some(t0 + MS(3_600_000)), "only the far first-audio clock");
    // Talking resumes at 3000 ms: a fresh 500 ms window.
    let events = talk(&mut s, t0, 3000, 3600);
    assert_eq!(events, vec![(3500, AiEvent::Stalled)]);
}

#[test]
fn frames_while_talking_keep_the_stall_away() {
    let t0 = Instant::now();
    let mut s = openai_open(t0, OpenAiFormat::G711Ulaw, None);
    for step in 0..100u64 {
        let now = t0 + MS(step * 20);
        let events = s.handle_timeout(now);
        assert!(events.is_empty(), "at {} ms: {events:?}", step * 20);
        s.send_caller_audio(now, &[0xFF; 160]).unwrap();
        if step % 20 == 0 {
            s.on_text(now, r#"{"type":"rate_limits.updated","rate_limits":[]}"#);
        }
    }
    assert_eq!(s.stats().stalls, 0);
}

// ---------------------------------------------------------------- robustness

#[test]
fn random_frames_never_panic_and_keep_accounting_sane() {
    let mut rng = SmallRng::seed_from_u64(0xA1);
    let t0 = Instant::now();
    let frames = [
        delta("i1", &[1; 320]),
        delta("i2", &[1, 2, 3]),
        SPEECH_STARTED.to_string(),
        encode_agent_media("MZ1", &[1; 160]),
        encode_agent_mark("MZ1", "m"),
        encode_clear("MZ1"),
        r#"{"type":"response.output_audio_transcript.delta","item_id":"i1","delta":"x"}"#.into(),
    ];
    for protocol in
        [AiProtocol::Twilio, openai(OpenAiFormat::G711Ulaw), openai(OpenAiFormat::Pcm24k)]
    {
        let mut s = AiSession::new(SessionConfig::default(), protocol, call(), None, t0);
        s.on_open(t0);
        for i in 0..3000u64 {
            let now = t0 + MS(i);
            let mut bytes = frames[rng.gen_range(0..frames.len())].clone().into_bytes();
            if rng.gen_bool(0.3) && !bytes.is_empty() {
                let pos = rng.gen_range(0..bytes.len());
                bytes[pos] = rng.gen();
            }
            s.on_text(now, &String::from_utf8_lossy(&bytes));
            s.on_played(now, rng.gen_range(0..400));
            s.handle_timeout(now);
            assert!(s.unplayed() <= 1_000_000);
            drain(&mut s);
        }
    }
}

// ---------------------------------------------------------------- mute detection

/// Runs the session's timers from `from_ms` to `to_ms` (ms after `t0`), with `pong` answered
/// every 100 ms, and returns the events with their times.
fn idle(s: &mut AiSession, t0: Instant, from_ms: u64, to_ms: u64) -> Vec<(u64, AiEvent)> {
    let mut events = Vec::new();
    for ms in (from_ms..to_ms).step_by(10) {
        let now = t0 + MS(ms);
        if ms % 100 == 0 {
            s.on_activity(now); // a pong: not life
        }
        while s.poll_timeout().is_some_and(|t| t <= now) {
            let at = s.poll_timeout().unwrap();
            for e in s.handle_timeout(at) {
                events.push(((at - t0).as_millis() as u64, e));
            }
        }
    }
    events
}

#[test]
fn a_connected_agent_that_only_answers_pings_is_mute_after_the_first_audio_timeout() {
    for protocol in [AiProtocol::Twilio, openai(OpenAiFormat::G711Ulaw)] {
        let t0 = Instant::now();
        let config = SessionConfig { first_audio_timeout: MS(1500), ..SessionConfig::default() };
        let mut s = AiSession::new(config, protocol, call(), None, t0);
        s.on_open(t0);
        // frames that are not speech (session.updated, marks, unknown) are not life either
        s.on_text(t0 + MS(50), r#"{"type":"session.updated","event":"x"}"#);
        let events = idle(&mut s, t0, 0, 5000);
        assert_eq!(events, vec![(1500, AiEvent::Mute)], "once, at the timeout");
        assert_eq!(s.stats().mutes, 1);
    }
}

#[test]
fn audio_or_a_sign_of_speech_within_the_timeout_is_life() {
    let config = SessionConfig { first_audio_timeout: MS(1500), ..SessionConfig::default() };
    // Twilio media
    let t0 = Instant::now();
    let mut s = AiSession::new(config, AiProtocol::Twilio, call(), None, t0);
    s.on_open(t0);
    s.on_text(t0 + MS(1400), &encode_agent_media("MZ1", &[0xFF; 160]));
    assert!(idle(&mut s, t0, 0, 6000).is_empty());
    // OpenAI: the agent heard the caller start speaking
    let mut s = AiSession::new(config, openai(OpenAiFormat::G711Ulaw), call(), None, t0);
    s.on_open(t0);
    s.on_text(t0 + MS(1000), SPEECH_STARTED);
    assert!(idle(&mut s, t0, 0, 6000).is_empty());
    // OpenAI: a response under way (its audio still to come)
    let mut s = AiSession::new(config, openai(OpenAiFormat::G711Ulaw), call(), None, t0);
    s.on_open(t0);
    s.on_text(t0 + MS(1000), r#"{"type":"response.created","response":{}}"#);
    assert!(idle(&mut s, t0, 0, 6000).is_empty());
    // ... but limits and session events are not speech
    let mut s = AiSession::new(config, openai(OpenAiFormat::G711Ulaw), call(), None, t0);
    s.on_open(t0);
    s.on_text(t0 + MS(1000), r#"{"type":"rate_limits.updated","rate_limits":[]}"#);
    assert_eq!(idle(&mut s, t0, 0, 6000), vec![(1500, AiEvent::Mute)]);
    // OpenAI: audio
    let mut s = AiSession::new(config, openai(OpenAiFormat::G711Ulaw), call(), None, t0);
    s.on_open(t0);
    s.on_text(t0 + MS(1499), &delta("item_1", &[0xFF; 160]));
    assert!(idle(&mut s, t0, 0, 6000).is_empty());
    assert_eq!(s.stats().mutes, 0);
}

#[test]
fn the_default_first_audio_timeout_is_four_seconds() {
    let t0 = Instant::now();
    let mut s = twilio_open(t0, None);
    assert_eq!(s.poll_timeout(), Some(t0 + MS(4000)));
    assert_eq!(s.handle_timeout(t0 + MS(3999)), vec![]);
    assert_eq!(s.handle_timeout(t0 + MS(4000)), vec![AiEvent::Mute]);
}

// ---------------------------------------------------------------- bounds (guard)

fn media(sid: &str, n: usize) -> String {
    encode_agent_media(sid, &vec![0x2a; n])
}

fn violations(events: &[AiEvent]) -> usize {
    events.iter().filter(|e| matches!(e, AiEvent::Violation(_))).count()
}

#[test]
fn a_mark_flood_is_a_violation_at_the_cap_and_the_session_ends() {
    let t0 = Instant::now();
    let mut s = twilio_open(t0, None);
    drain(&mut s);
    // Audio queued and unplayed: every mark waits for it.
    assert!(violations(&s.on_text(t0, &media("MZ1", 800))).eq(&0));
    let max = SessionConfig::default().guard.max_marks;
    let mut at = None;
    for i in 0..max + 10 {
        // spread over time so that the rate bound is not what stops it
        let now = t0 + MS(i as u64 * 2);
        let ev = s.on_text(now, &encode_agent_mark("MZ1", &format!("m{i}")));
        if violations(&ev) > 0 {
            at = Some(i);
            break;
        }
    }
    assert_eq!(at, Some(max), "the mark beyond {max} breaks the bound");
    assert_eq!(s.stats().violations, 1);
    // Over: nothing more is taken, no marks are echoed, nothing queued.
    assert!(s.on_text(t0 + MS(3000), &media("MZ1", 160)).is_empty());
    assert!(s.on_played(t0 + MS(3000), 800).is_empty());
    assert!(drain(&mut s).is_empty());
}

#[test]
fn a_long_mark_name_is_a_violation() {
    let t0 = Instant::now();
    let mut s = twilio_open(t0, None);
    s.on_text(t0, &media("MZ1", 800));
    let name = "x".repeat(SessionConfig::default().guard.max_mark_name + 1);
    let ev = s.on_text(t0, &encode_agent_mark("MZ1", &name));
    assert_eq!(violations(&ev), 1, "{ev:?}");
}

#[test]
fn audio_far_ahead_of_the_caller_is_a_violation() {
    let t0 = Instant::now();
    let mut s = twilio_open(t0, None);
    // 120 s may be queued (60 frames of 2 s), the next 20 ms is too much...
    for i in 0..60u64 {
        let ev = s.on_text(t0 + MS(i * 20), &media("MZ1", 16_000));
        assert_eq!(violations(&ev), 0, "frame {i}");
    }
    // ...unless the caller has heard some of it.
    s.on_played(t0 + MS(1300), 160);
    assert_eq!(violations(&s.on_text(t0 + MS(1300), &media("MZ1", 160))), 0);
    let ev = s.on_text(t0 + MS(1320), &media("MZ1", 160));
    assert_eq!(
        ev,
        vec![AiEvent::Violation(super::super::guard::Violation::Unplayed { max_ms: 120_000 })]
    );
}

#[test]
fn openai_deltas_far_ahead_are_a_violation_at_24_khz() {
    let t0 = Instant::now();
    let mut s = openai_open(t0, OpenAiFormat::Pcm24k, None);
    // 2 s of 24 kHz PCM16 per delta: 96 000 bytes
    let chunk = vec![0u8; 96_000];
    let mut broke = None;
    for i in 0..70u64 {
        if violations(&s.on_text(t0 + MS(i * 20), &delta("item_1", &chunk))) > 0 {
            broke = Some(i);
            break;
        }
    }
    assert_eq!(broke, Some(60), "120 s of audio ahead is the bound");
}

#[test]
fn a_frame_flood_and_garbage_are_violations_on_the_fake_clock() {
    let t0 = Instant::now();
    let max = SessionConfig::default().guard.max_frames_per_s as usize;
    // Unknown but well-formed frames: cheap for the agent, a flood for us.
    let mut s = twilio_open(t0, None);
    let mut broke = None;
    for i in 0..max + 5 {
        let ev = s.on_text(t0 + Duration::from_micros(i as u64 * 100), r#"{"event":"noise"}"#);
        if violations(&ev) > 0 {
            broke = Some(i);
            break;
        }
    }
    assert_eq!(broke, Some(max));
    // The same number of frames spread over two seconds is fine.
    let mut s = twilio_open(t0, None);
    for i in 0..max {
        let ev = s.on_text(t0 + MS(i as u64 * 2), r#"{"event":"noise"}"#);
        assert_eq!(violations(&ev), 0, "frame {i}");
    }
    // Garbage: a handful is tolerated (errors), a stream of it is a violation.
    let mut s = twilio_open(t0, None);
    let bad = SessionConfig::default().guard.max_bad_frames_per_s as usize;
    for i in 0..bad {
        let ev = s.on_text(t0 + MS(i as u64), "not json");
        assert!(matches!(ev.as_slice(), [AiEvent::Error(_)]), "{ev:?}");
    }
    assert_eq!(violations(&s.on_text(t0 + MS(30), "not json")), 1);
    // Binary frames count as garbage too.
    let mut s = twilio_open(t0, None);
    let mut n = 0;
    while violations(&s.on_protocol_error(t0, ProtocolError::Binary)) == 0 {
        n += 1;
        assert!(n <= bad, "binary frames never broke the bound");
    }
}

#[test]
fn a_byte_flood_of_big_frames_is_a_violation() {
    let t0 = Instant::now();
    let mut s = twilio_open(t0, None);
    // 200 KiB frames of well-formed but unknown events, 50 in a second: 10 MB/s.
    let big = format!(r#"{{"event":"noise","pad":"{}"}}"#, "a".repeat(200 * 1024));
    let mut broke = None;
    for i in 0..50u64 {
        if violations(&s.on_text(t0 + MS(i * 20), &big)) > 0 {
            broke = Some(i);
            break;
        }
    }
    let at = broke.expect("a byte flood breaks the bound");
    assert!((39..=41).contains(&at), "8 MiB per second: broke at frame {at}");
}
