//! The `--audio` modes over a real loopback WebSocket, with a Twilio Media Streams client
//! written here from the protocol's messages: `burst` delivers seconds of greeting at once and
//! a barge-in then `clear`s what the far end still holds, `odd-size` sizes every message,
//! `mute` sends no audio but pings. Every wait is bounded.

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use trunkguard_agent_sim::{
    ulaw, AudioMode, SimConfig, SimHandle, SimMode, SimProtocol, SimServer,
};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

async fn start(audio: AudioMode) -> SimHandle {
    let mut cfg = SimConfig::new("127.0.0.1:0".parse().unwrap(), SimProtocol::TwilioMediaStreams);
    cfg.mode = SimMode::Prompt;
    cfg.audio = audio;
    SimServer::bind(cfg).await.unwrap().spawn().unwrap()
}

/// Connects and sends `connected` and `start` as Twilio does.
async fn open(sim: &SimHandle) -> Client {
    let url = format!("ws://{}/media", sim.addr);
    let (mut ws, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await.unwrap().unwrap();
    let connected = json!({"event": "connected", "protocol": "Call", "version": "1.0.0"});
    let start = json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
        "start": {"accountSid": "AC1", "streamSid": "MZ1", "callSid": "CA1",
                  "tracks": ["inbound"], "customParameters": {},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}});
    for m in [connected, start] {
        ws.send(Message::text(m.to_string())).await.unwrap();
    }
    ws
}

/// What arrived within `within`: (arrival, event) for text frames, and the pings.
async fn collect(ws: &mut Client, within: Duration) -> (Vec<(Instant, Value)>, usize) {
    let deadline = tokio::time::Instant::now() + within;
    let (mut texts, mut pings) = (Vec::new(), 0);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        match msg {
            Message::Text(t) => texts.push((Instant::now(), serde_json::from_str(&t).unwrap())),
            Message::Ping(_) => pings += 1,
            _ => {}
        }
    }
    (texts, pings)
}

fn payload_len(event: &Value) -> Option<usize> {
    (event["event"] == "media")
        .then(|| B64.decode(event["media"]["payload"].as_str().unwrap()).unwrap().len())
}

#[tokio::test]
async fn burst_sends_seconds_at_once_and_clear_reports_what_the_far_end_holds() {
    let sim = start(AudioMode::Burst(Duration::from_secs(5))).await;
    let mut ws = open(&sim).await;
    let (texts, _) = collect(&mut ws, Duration::from_millis(1500)).await;
    let bytes: usize = texts.iter().filter_map(|(_, e)| payload_len(e)).sum();
    // the whole 4.2 s greeting in 1.5 s: paced it would take 4.2 s
    assert!(bytes >= 4 * 8000, "only {bytes} bytes of greeting in 1.5 s");
    assert!(texts.iter().all(|(_, e)| e["streamSid"] == "MZ1"));

    // the caller talks over it: 200 ms of a loud tone in 20 ms messages
    let tone: Vec<u8> =
        (0..1600).map(|i| ulaw::encode((8000.0 * (i as f64 * 0.3).sin()) as i16)).collect();
    for chunk in tone.chunks(160) {
        let media = json!({"event": "media", "streamSid": "MZ1",
                           "media": {"track": "inbound", "payload": B64.encode(chunk)}});
        ws.send(Message::text(media.to_string())).await.unwrap();
    }
    let (texts, _) = collect(&mut ws, Duration::from_millis(500)).await;
    assert!(texts.iter().any(|(_, e)| e == &json!({"event": "clear", "streamSid": "MZ1"})));
    let stats = sim.stats.snapshot();
    assert_eq!(stats.clears_sent, 1);
    let ahead = stats.barge_ins[0].ahead;
    assert!(ahead >= Duration::from_millis(2000), "the far end held only {ahead:?}");
    drop(ws);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn odd_size_messages_carry_that_many_bytes() {
    let sim = start(AudioMode::OddSize(333)).await;
    let mut ws = open(&sim).await;
    let (texts, _) = collect(&mut ws, Duration::from_millis(800)).await;
    let sizes: Vec<usize> = texts.iter().filter_map(|(_, e)| payload_len(e)).collect();
    assert!(sizes.len() >= 10, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n == 333), "{sizes:?}");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn mute_sends_no_audio_only_pings() {
    let sim = start(AudioMode::Mute).await;
    let mut ws = open(&sim).await;
    let (texts, pings) = collect(&mut ws, Duration::from_millis(2500)).await;
    assert!(texts.is_empty(), "{texts:?}");
    assert!(pings >= 2, "{pings} pings in 2.5 s");
    let stats = sim.stats.snapshot();
    assert_eq!((stats.starts, stats.media_out), (1, 0));
    sim.shutdown().await.unwrap();
}
