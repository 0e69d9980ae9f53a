//! The `trunkguard-agent-sim` binary as a subprocess: prints where it listens, serves a
//! WebSocket client, closes its connections with 1001 and exits 0 on SIGTERM; rejects bad
//! `--audio` and `--fault` values with a usage error. Every wait is bounded.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

/// Kills the child if a test fails half way.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trunkguard-agent-sim"))
}

#[tokio::test]
async fn prints_listening_serves_and_exits_on_sigterm() {
    let child = sim()
        .args(["--listen", "127.0.0.1:0", "--protocol", "openai-realtime"])
        .args(["--fault", "slow-first-audio:10", "--echo-delay-ms", "50"])
        .args(["--audio", "jitter:5", "--seed", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("no listening line");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("agent-sim listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .parse()
        .unwrap();
    let url = format!("ws://{addr}/v1/realtime");
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect failed");
    let first = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    let Message::Text(first) = first else { panic!("not text: {first:?}") };
    let event: serde_json::Value = serde_json::from_str(first.as_str()).unwrap();
    assert_eq!(event["type"], "session.created", "{event}");

    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let code = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("no close") {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(code, Some(CloseCode::Away));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_audio_and_fault_values_are_usage_errors() {
    for bad in [["--audio", "burst:5"], ["--audio", "loud"], ["--fault", "close-after"]] {
        let out = sim()
            .args(["--listen", "127.0.0.1:0", "--protocol", "twilio"])
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(bad[1].split(':').next().unwrap()), "{bad:?}: {err}");
    }
}
