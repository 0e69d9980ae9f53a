//! The agent simulator (`trunkguard-agent-sim`, a crate written from the protocols' documents,
//! independent of the appliance) over real loopback WebSockets: Twilio echo round trip, OpenAI
//! session and echo, fault modes, prompt mode, and the appliance's own protocol code (the
//! `core::ai` sessions) interoperating with it. The binary's command line is tested in
//! `tools/agent-sim/tests/cli.rs`. Every wait is bounded by a timeout.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use trunkguard::core::ai::openai::{self, AudioFormat, Inbound as OaIn};
use trunkguard::core::ai::twilio::{self, Inbound as TwIn, StartInfo};
use trunkguard::core::ai::{
    AiAudio, AiEvent, AiProtocol, AiSession, CallInfo, OpenAiFormat, OpenAiSettings, Role,
    SessionConfig, Transcript,
};
use trunkguard::core::media::g711::linear_to_ulaw;
use trunkguard::core::media::prompt::Prompt;
use trunkguard_agent_sim::{
    CreatedItem, Fault, SimConfig, SimHandle, SimMode, SimProtocol, Truncate,
};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

async fn start_sim(protocol: SimProtocol, tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig::new("127.0.0.1:0".parse().unwrap(), protocol);
    tweak(&mut cfg);
    let server = trunkguard_agent_sim::SimServer::bind(cfg).await.unwrap();
    server.spawn().unwrap()
}

async fn connect(addr: SocketAddr) -> Client {
    let url = format!("ws://{addr}/agent");
    let (ws, _) = timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect failed");
    ws
}

async fn send(ws: &mut Client, text: String) {
    timeout(WAIT, ws.send(Message::text(text))).await.unwrap().unwrap();
}

/// The next text frame within `within`, skipping control frames; panics on close or error.
async fn next_text(ws: &mut Client, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("stream ended")
            .expect("websocket error");
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// The close frame's code, waiting at most `within`.
async fn close_code(ws: &mut Client, within: Duration) -> Option<CloseCode> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no close within {within:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return None,
        }
    }
}

/// Polls the stats until `check` holds (bounded).
async fn eventually(sim: &SimHandle, check: impl Fn(&trunkguard_agent_sim::SimCounters) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check(&sim.stats.snapshot()) {
        assert!(Instant::now() < deadline, "stats never matched: {:?}", sim.stats.snapshot());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sine(rate: u32, ms: u64) -> Vec<i16> {
    let n = rate as u64 * ms / 1000;
    (0..n)
        .map(|i| {
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(rate)).sin())
                as i16
        })
        .collect()
}

fn ulaw(samples: &[i16]) -> Vec<u8> {
    samples.iter().map(|&s| linear_to_ulaw(s)).collect()
}

fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn start_info(resumed: bool) -> StartInfo {
    let mut custom_parameters = BTreeMap::new();
    if resumed {
        custom_parameters.insert("resumed".to_string(), "true".to_string());
    }
    StartInfo {
        stream_sid: "MZsim".into(),
        account_sid: "ACsim".into(),
        call_sid: "CA1".into(),
        custom_parameters,
    }
}

fn session(format: AudioFormat) -> openai::RealtimeSession {
    openai::RealtimeSession {
        kind: "realtime".into(),
        model: None,
        instructions: None,
        output_modalities: vec!["audio".into()],
        audio: openai::SessionAudio {
            input: openai::AudioInput { format, transcription: None, turn_detection: None },
            output: openai::AudioOutput { format, voice: None },
        },
    }
}

/// Receives Twilio media until a mark: (μ-law bytes, first and last media arrival, mark).
async fn twilio_until_mark(ws: &mut Client) -> (Vec<u8>, Option<Instant>, Option<Instant>, String) {
    let (mut audio, mut first, mut last) = (Vec::new(), None, None);
    loop {
        match twilio::decode(&next_text(ws, WAIT).await).unwrap() {
            TwIn::Media { stream_sid, ulaw } => {
                assert_eq!(stream_sid.as_deref(), Some("MZsim"));
                assert!(ulaw.len() <= 160, "frames are at most 20 ms");
                first.get_or_insert_with(Instant::now);
                last = Some(Instant::now());
                audio.extend(ulaw);
            }
            TwIn::Mark { name, .. } => return (audio, first, last, name),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn twilio_echo_round_trip_paced_with_marks_and_dtmf() {
    let sim = start_sim(SimProtocol::TwilioMediaStreams, |_| {}).await;
    let mut ws = connect(sim.addr).await;
    send(&mut ws, twilio::encode_connected()).await;
    send(&mut ws, twilio::encode_start(1, &start_info(true))).await;
    let speech = ulaw(&sine(8000, 1000));
    let sent_at = Instant::now();
    for (i, chunk) in speech.chunks(160).enumerate() {
        let i = i as u64;
        send(&mut ws, twilio::encode_media(i + 2, "MZsim", i + 1, i * 20, chunk)).await;
    }

    let (audio, first, last, mark) = twilio_until_mark(&mut ws).await;
    assert_eq!(audio, speech, "the echo is the caller's audio");
    let (first, last) = (first.unwrap(), last.unwrap());
    assert!(first - sent_at >= Duration::from_millis(150), "echo delay: {:?}", first - sent_at);
    // 50 frames: no faster than real time (80% of 980 ms between first and last frame).
    assert!(last - first >= Duration::from_millis(784), "too fast: {:?}", last - first);
    assert!(mark.starts_with("burst-"), "{mark}");

    send(&mut ws, twilio::encode_dtmf(60, "MZsim", '5')).await;
    let (beep, _, _, mark) = twilio_until_mark(&mut ws).await;
    assert_eq!(beep.len(), 1600, "200 ms beep");
    assert!(mark.starts_with("dtmf-5-"), "{mark}");

    send(&mut ws, twilio::encode_mark(61, "MZsim", "burst-1")).await;
    send(&mut ws, twilio::encode_stop(62, "MZsim", "ACsim", "CA1")).await;
    eventually(&sim, |s| s.stops == 1).await;
    let s = sim.stats.snapshot();
    assert_eq!((s.connections, s.starts, s.resumed), (1, 1, 1));
    assert_eq!(s.call_sids, vec!["CA1".to_string()]);
    assert_eq!(s.media_in, 50);
    assert_eq!(s.media_out, 60);
    assert_eq!(s.dtmf, vec!['5']);
    assert_eq!(s.marks, vec!["burst-1".to_string()]);
    assert_eq!(s.marks_sent, 2);
    assert_eq!(s.protocol_errors, 0);

    // Shutdown closes open sessions with 1001 Going Away.
    let (code, stopped) = tokio::join!(close_code(&mut ws, WAIT), timeout(WAIT, sim.shutdown()));
    stopped.unwrap().unwrap();
    assert_eq!(code, Some(CloseCode::Away));
}

#[tokio::test]
async fn twilio_utterance_end_sends_a_mark_after_its_echo() {
    let sim =
        start_sim(SimProtocol::TwilioMediaStreams, |c| c.echo_delay = Duration::from_millis(20))
            .await;
    let mut ws = connect(sim.addr).await;
    send(&mut ws, twilio::encode_start(1, &start_info(false))).await;
    let mut caller = sine(8000, 200);
    caller.extend(vec![0i16; 8000 * 400 / 1000]);
    let caller = ulaw(&caller);
    for (i, chunk) in caller.chunks(160).enumerate() {
        send(&mut ws, twilio::encode_media(i as u64 + 2, "MZsim", 1, 0, chunk)).await;
    }
    let (audio, _, _, mark) = twilio_until_mark(&mut ws).await;
    assert!(mark.starts_with("utterance-"), "{mark}");
    // The mark follows the audio of the utterance end (200 ms speech + 300 ms silence).
    assert!(audio.len() >= 4000, "{}", audio.len());
    drop(ws);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn openai_session_echo_and_speech_started() {
    let sim = start_sim(SimProtocol::OpenAiRealtime, |_| {}).await;
    let mut ws = connect(sim.addr).await;
    assert_eq!(openai::decode(&next_text(&mut ws, WAIT).await).unwrap(), OaIn::SessionCreated);
    send(&mut ws, openai::encode_session_update(session(AudioFormat::Pcm { rate: 24000 }))).await;
    assert_eq!(openai::decode(&next_text(&mut ws, WAIT).await).unwrap(), OaIn::SessionUpdated);

    let mut caller = vec![0i16; 24000 * 300 / 1000];
    caller.extend(sine(24000, 500));
    for chunk in caller.chunks(480) {
        send(&mut ws, openai::encode_append(&pcm_bytes(chunk))).await;
    }
    let (mut audio, mut ids, mut speech_at) = (Vec::new(), None, None);
    loop {
        match openai::decode(&next_text(&mut ws, WAIT).await).unwrap() {
            OaIn::SpeechStarted { item_id, audio_start_ms } => {
                assert!(item_id.is_some_and(|i| !i.is_empty()));
                speech_at = audio_start_ms;
            }
            OaIn::AudioDelta { response_id, item_id, audio: a } => {
                assert!(!response_id.is_empty() && !item_id.is_empty());
                let pair = ids.get_or_insert((response_id.clone(), item_id.clone()));
                assert_eq!(pair, &(response_id, item_id), "one response for the burst");
                assert!(a.len() <= 960, "frames are at most 20 ms");
                audio.extend(a);
            }
            OaIn::Ignored(kind) if kind == "response.done" => break,
            OaIn::Ignored(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(speech_at, Some(300), "speech detected after 300 ms of silence");
    assert_eq!(audio, pcm_bytes(&caller), "the echo is the caller's audio");

    // Speech after silence starts a new utterance.
    let mut again = vec![0i16; 24000 * 400 / 1000];
    again.extend(sine(24000, 100));
    for chunk in again.chunks(480) {
        send(&mut ws, openai::encode_append(&pcm_bytes(chunk))).await;
    }
    send(&mut ws, openai::encode_truncate("item_x", 123)).await;
    send(&mut ws, openai::encode_text_item(false, "hello")).await;
    eventually(&sim, |s| s.items_created.len() == 1 && s.speech_started == 2).await;
    let s = sim.stats.snapshot();
    assert_eq!(s.truncates, vec![Truncate { item_id: "item_x".into(), audio_end_ms: 123 }]);
    assert_eq!(s.items_created, vec![CreatedItem { role: "user".into(), text: "hello".into() }]);
    assert_eq!((s.starts, s.media_in, s.protocol_errors), (1, 65, 0));
    drop(ws);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn openai_ulaw_session_echoes_ulaw() {
    let sim = start_sim(SimProtocol::OpenAiRealtime, |c| c.echo_delay = Duration::ZERO).await;
    let mut ws = connect(sim.addr).await;
    next_text(&mut ws, WAIT).await;
    send(&mut ws, openai::encode_session_update(session(AudioFormat::Pcmu))).await;
    let updated: serde_json::Value = serde_json::from_str(&next_text(&mut ws, WAIT).await).unwrap();
    assert_eq!(updated["type"], "session.updated");
    assert_eq!(updated["session"]["audio"]["output"]["format"]["type"], "audio/pcmu");
    let caller = ulaw(&sine(8000, 200));
    send(&mut ws, openai::encode_append(&caller)).await;
    let mut audio = Vec::new();
    while audio.len() < caller.len() {
        if let OaIn::AudioDelta { audio: a, .. } =
            openai::decode(&next_text(&mut ws, WAIT).await).unwrap()
        {
            assert_eq!(a.len(), 160);
            audio.extend(a);
        }
    }
    assert_eq!(audio, caller);
    // Bad input is answered with an error event, and the session goes on.
    send(&mut ws, "{not json".to_string()).await;
    let err = openai::decode(&next_text(&mut ws, WAIT).await).unwrap();
    assert!(matches!(err, OaIn::Error { code: Some(c), .. } if c == "invalid_json"));
    drop(ws);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn fault_refuse_closes_before_the_upgrade() {
    let sim = start_sim(SimProtocol::OpenAiRealtime, |c| c.faults = vec![Fault::Refuse]).await;
    let url = format!("ws://{}/", sim.addr);
    let result = timeout(WAIT, tokio_tungstenite::connect_async(url)).await.unwrap();
    match result {
        Err(WsError::Http(resp)) => panic!("got an HTTP answer {}", resp.status()),
        Err(_) => {}
        Ok(_) => panic!("upgrade succeeded"),
    }
    eventually(&sim, |s| s.rejected == 1 && s.connections == 0).await;
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn fault_http503_answers_the_upgrade_with_503() {
    let sim = start_sim(SimProtocol::TwilioMediaStreams, |c| c.faults = vec![Fault::Http503]).await;
    let url = format!("ws://{}/media", sim.addr);
    match timeout(WAIT, tokio_tungstenite::connect_async(url)).await.unwrap() {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        Err(e) => panic!("expected HTTP 503, got {e}"),
        Ok(_) => panic!("upgrade succeeded"),
    }
    eventually(&sim, |s| s.rejected == 1 && s.connections == 0).await;
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn fault_close_after_sends_1011() {
    let sim = start_sim(SimProtocol::OpenAiRealtime, |c| {
        c.faults = vec!["close-after:1".parse().unwrap()]
    })
    .await;
    let t0 = Instant::now();
    let mut ws = connect(sim.addr).await;
    assert_eq!(close_code(&mut ws, Duration::from_secs(3)).await, Some(CloseCode::Error));
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(2500),
        "{elapsed:?}"
    );
    eventually(&sim, |s| s.fault_closes == 1).await;
    drop(ws);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn fault_stall_after_answers_nothing() {
    let sim = start_sim(SimProtocol::OpenAiRealtime, |c| {
        c.faults = vec![Fault::StallAfter(Duration::from_millis(500))];
        c.echo_delay = Duration::ZERO;
    })
    .await;
    let mut ws = connect(sim.addr).await;
    assert_eq!(openai::decode(&next_text(&mut ws, WAIT).await).unwrap(), OaIn::SessionCreated);
    eventually(&sim, |s| s.fault_stalls == 1).await;
    send(&mut ws, openai::encode_session_update(session(AudioFormat::Pcmu))).await;
    send(&mut ws, openai::encode_append(&ulaw(&sine(8000, 100)))).await;
    timeout(WAIT, ws.send(Message::Ping(vec![1, 2, 3].into()))).await.unwrap().unwrap();
    // Nothing at all comes back: no session.updated, no audio, no pong, no close.
    assert!(timeout(Duration::from_secs(1), ws.next()).await.is_err(), "the agent answered");
    assert_eq!(sim.stats.snapshot().starts, 0);
    drop(ws);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn fault_slow_first_audio_delays_the_first_frame() {
    let sim = start_sim(SimProtocol::TwilioMediaStreams, |c| {
        c.faults = vec!["slow-first-audio:600".parse().unwrap()];
        c.echo_delay = Duration::ZERO;
    })
    .await;
    let mut ws = connect(sim.addr).await;
    send(&mut ws, twilio::encode_start(1, &start_info(false))).await;
    let sent_at = Instant::now();
    send(&mut ws, twilio::encode_media(2, "MZsim", 1, 0, &ulaw(&sine(8000, 100)))).await;
    let (audio, first, _, _) = twilio_until_mark(&mut ws).await;
    let delay = first.unwrap() - sent_at;
    assert!(delay >= Duration::from_millis(550) && delay < Duration::from_secs(3), "{delay:?}");
    assert_eq!(audio.len(), 800);
    drop(ws);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversize_and_binary_frames_close_the_connection() {
    let sim = start_sim(SimProtocol::TwilioMediaStreams, |_| {}).await;
    let mut ws = connect(sim.addr).await;
    send(&mut ws, "x".repeat(300 * 1024)).await;
    let code = close_code(&mut ws, WAIT).await;
    assert!(matches!(code, None | Some(CloseCode::Size)), "{code:?}");
    let mut ws = connect(sim.addr).await;
    timeout(WAIT, ws.send(Message::Binary(vec![1, 2].into()))).await.unwrap().unwrap();
    assert_eq!(close_code(&mut ws, WAIT).await, Some(CloseCode::Unsupported));
    eventually(&sim, |s| s.protocol_errors == 2).await;
    drop(ws);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn twilio_prompt_mode_greets_and_clears_on_barge_in() {
    let sim = start_sim(SimProtocol::TwilioMediaStreams, |c| c.mode = SimMode::Prompt).await;
    let mut ws = connect(sim.addr).await;
    send(&mut ws, twilio::encode_start(1, &start_info(false))).await;
    let greeting = ulaw(Prompt::high_demand().unwrap().samples());
    let mut audio = Vec::new();
    while audio.len() < 1600 {
        match twilio::decode(&next_text(&mut ws, WAIT).await).unwrap() {
            TwIn::Media { ulaw, .. } => audio.extend(ulaw),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(audio[..], greeting[..audio.len()], "the greeting, in order");
    // The caller talks over the greeting: the agent flushes it.
    send(&mut ws, twilio::encode_media(2, "MZsim", 1, 0, &ulaw(&sine(8000, 100)))).await;
    loop {
        match twilio::decode(&next_text(&mut ws, WAIT).await).unwrap() {
            TwIn::Clear { stream_sid } => {
                assert_eq!(stream_sid.as_deref(), Some("MZsim"));
                break;
            }
            TwIn::Media { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    eventually(&sim, |s| s.clears_sent == 1).await;
    drop(ws);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn openai_prompt_mode_speaks_pcm24k_after_session_update() {
    let sim = start_sim(SimProtocol::OpenAiRealtime, |c| c.mode = SimMode::Prompt).await;
    let mut ws = connect(sim.addr).await;
    next_text(&mut ws, WAIT).await;
    send(&mut ws, openai::encode_session_update(session(AudioFormat::Pcm { rate: 24000 }))).await;
    let mut deltas = 0;
    while deltas < 5 {
        if let OaIn::AudioDelta { audio, .. } =
            openai::decode(&next_text(&mut ws, WAIT).await).unwrap()
        {
            assert_eq!(audio.len(), 960, "20 ms of PCM16 at 24 kHz");
            deltas += 1;
        }
    }
    drop(ws);
    sim.shutdown().await.unwrap();
}

/// Sends everything the core session queued.
async fn flush_session(ws: &mut Client, session: &mut AiSession) {
    while let Some(text) = session.poll_text() {
        send(ws, text).await;
    }
}

/// Feeds agent frames to the core session for `within`, "playing" audio at once; returns
/// the events seen.
async fn drive(ws: &mut Client, session: &mut AiSession, within: Duration) -> Vec<AiEvent> {
    let deadline = tokio::time::Instant::now() + within;
    let mut events = Vec::new();
    loop {
        flush_session(ws, session).await;
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return events,
            Ok(msg) => msg.expect("stream ended").expect("websocket error"),
        };
        let Message::Text(text) = msg else { continue };
        for event in session.on_text(Instant::now(), text.as_str()) {
            if let AiEvent::Audio(audio) = &event {
                let played = session.on_played(Instant::now(), audio.samples() as u64);
                events.extend(played);
            }
            events.push(event);
        }
    }
}

#[tokio::test]
async fn core_twilio_session_interoperates_with_the_sim() {
    let sim =
        start_sim(SimProtocol::TwilioMediaStreams, |c| c.echo_delay = Duration::from_millis(20))
            .await;
    let mut ws = connect(sim.addr).await;
    let call = CallInfo {
        call_sid: "CA9".into(),
        stream_sid: "MZ9".into(),
        account_sid: "AC9".into(),
        custom_parameters: BTreeMap::new(),
    };
    let resume = Some(Transcript::new(8, 1000));
    let now = Instant::now();
    let mut session =
        AiSession::new(SessionConfig::default(), AiProtocol::Twilio, call, resume, now);
    assert_eq!(session.on_open(now), vec![AiEvent::Ready]);
    for chunk in ulaw(&sine(8000, 300)).chunks(160) {
        session.send_caller_audio(Instant::now(), chunk).unwrap();
    }
    session.send_dtmf('#').unwrap();
    let events = drive(&mut ws, &mut session, Duration::from_millis(1200)).await;
    let audio: usize = events
        .iter()
        .map(|e| match e {
            AiEvent::Audio(a) => a.samples(),
            _ => 0,
        })
        .sum();
    assert_eq!(audio, 2400 + 1600, "echo of 300 ms plus a 200 ms beep");
    // The beep follows the echo in the same burst: one mark, after both.
    let marks: Vec<_> = events.iter().filter(|e| matches!(e, AiEvent::Mark(_))).collect();
    assert!(matches!(marks[..], [AiEvent::Mark(ref m)] if m.starts_with("dtmf-#")), "{marks:?}");
    assert!(matches!(events.last(), Some(AiEvent::Mark(_))));
    let stats = session.stats();
    assert_eq!((stats.unknown_in, stats.errors_in, stats.marks_echoed), (0, 0, 1));
    session.close(Instant::now());
    flush_session(&mut ws, &mut session).await;
    eventually(&sim, |s| s.stops == 1 && s.marks.len() == 1).await;
    let s = sim.stats.snapshot();
    assert_eq!(
        (s.resumed, s.dtmf.clone(), s.call_sids.clone()),
        (1, vec!['#'], vec!["CA9".to_string()])
    );
    drop(ws);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn core_openai_session_interoperates_with_the_sim() {
    let sim =
        start_sim(SimProtocol::OpenAiRealtime, |c| c.echo_delay = Duration::from_millis(20)).await;
    let mut ws = connect(sim.addr).await;
    let settings = OpenAiSettings { format: OpenAiFormat::Pcm24k, ..OpenAiSettings::default() };
    let now = Instant::now();
    let mut resume = Transcript::new(8, 1000);
    resume.push(Role::User, "I need a plumber");
    let mut session = AiSession::new(
        SessionConfig::default(),
        AiProtocol::OpenAi(settings),
        CallInfo::default(),
        Some(resume),
        now,
    );
    session.on_open(now);
    let events = drive(&mut ws, &mut session, Duration::from_millis(300)).await;
    assert!(events.contains(&AiEvent::Ready));
    let mut caller = vec![0i16; 24000 * 200 / 1000];
    caller.extend(sine(24000, 300));
    for chunk in caller.chunks(480) {
        session.send_caller_pcm24k(Instant::now(), chunk).unwrap();
    }
    let events = drive(&mut ws, &mut session, Duration::from_millis(1200)).await;
    assert!(events.contains(&AiEvent::SpeechStarted));
    let audio: usize = events
        .iter()
        .map(|e| match e {
            AiEvent::Audio(AiAudio::Pcm24k(s)) => s.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(audio, caller.len());
    let stats = session.stats();
    assert_eq!((stats.unknown_in, stats.errors_in, stats.agent_errors), (0, 0, 0));
    let s = sim.stats.snapshot();
    assert_eq!(s.items_created.len(), 1);
    assert_eq!(s.items_created[0].text, "I need a plumber");
    drop(ws);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn serves_wss_with_tls() {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let sim =
        start_sim(SimProtocol::OpenAiRealtime, |c| c.tls = Some(std::sync::Arc::new(server_tls)))
            .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("wss://localhost:{}/v1/realtime", sim.addr.port());
    let connector = tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(client_tls));
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector));
    let (mut ws, _) = timeout(WAIT, connecting).await.unwrap().unwrap();
    assert_eq!(openai::decode(&next_text(&mut ws, WAIT).await).unwrap(), OaIn::SessionCreated);
    drop(ws);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_trunkguard_probe_stream_is_counted_as_a_probe_and_gets_no_greeting() {
    let sim = start_sim(SimProtocol::TwilioMediaStreams, |c| c.mode = SimMode::Prompt).await;
    let mut ws = connect(sim.addr).await;
    let mut info = start_info(false);
    info.custom_parameters.insert("trunkguard_probe".into(), "1".into());
    send(&mut ws, twilio::encode_connected()).await;
    send(&mut ws, twilio::encode_start(1, &info)).await;
    send(&mut ws, twilio::encode_stop(2, "MZsim", "ACsim", "CA1")).await;
    eventually(&sim, |s| s.probes == 1).await;
    timeout(WAIT, ws.close(None)).await.unwrap().unwrap();
    let s = sim.stats.snapshot();
    assert_eq!((s.starts, s.stops, s.media_out), (0, 0, 0), "a probe is not a call: {s:?}");
    sim.shutdown().await.unwrap();
}
