//! What goes on the box: the systemd unit passes `systemd-analyze verify` and keeps a low
//! exposure score, the binary speaks sd_notify (ready, watchdog, stopping), and the sysctl and
//! journald drop-ins are well formed.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The unit with ExecStart pointing at the binary under test (verify checks that it exists).
fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(repo("firmware/systemd/trunkguard.service")).unwrap();
    let unit = unit.replace("/usr/bin/trunkguard", env!("CARGO_BIN_EXE_trunkguard"));
    let path = dir.join("trunkguard.service");
    std::fs::write(&path, unit).unwrap();
    path
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze is needed (Debian package systemd; .ci/run installs it)")
}

#[test]
fn the_unit_verifies_and_its_exposure_is_low() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let unit = unit.to_str().unwrap();
    let verify = systemd_analyze(&["verify", unit]);
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify: {stderr}");
    assert!(!stderr.contains("trunkguard.service:"), "warnings about the unit: {stderr}");
    let security = systemd_analyze(&["security", "--offline=true", "--no-pager", unit]);
    let out = String::from_utf8_lossy(&security.stdout).to_string()
        + &String::from_utf8_lossy(&security.stderr);
    let score: f64 = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for").nth(1))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in: {out}"));
    println!("systemd_exposure_score: {score}");
    assert!(score <= 2.0, "exposure {score} (documented as 1.6)");
}

#[test]
fn the_binary_notifies_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let config = dir.path().join("tg.toml");
    std::fs::write(
        &config,
        "[sip]\nlisten = [\"udp:127.0.0.1:33060\"]\n[media]\nrtp_ports = \"33100-33199\"\n[status]\nlisten = \"127.0.0.1:33080\"\n\
         [[carrier]]\nname = \"local\"\ninbound_from = [\"127.0.0.0/8\"]\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trunkguard"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    while Instant::now() < deadline && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() < 3
    {
        match sock.recv(&mut buf) {
            Ok(n) => seen.push(String::from_utf8_lossy(&buf[..n]).to_string()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    // SIGTERM: the service says it is stopping
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let stop_deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < stop_deadline && !seen.iter().any(|m| m.contains("STOPPING=1")) {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.first().is_some_and(|m| m.contains("READY=1")), "{seen:?}");
    assert!(seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3, "{seen:?}");
    assert!(seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");
}

#[test]
fn drop_ins_are_key_value_files() {
    let sysctl = std::fs::read_to_string(repo("firmware/sysctl.d/90-trunkguard.conf")).unwrap();
    for line in sysctl.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key = value: {line}"));
        assert!(k.trim().starts_with("net."), "{line}");
        assert!(!v.trim().is_empty(), "{line}");
    }
    let journald =
        std::fs::read_to_string(repo("firmware/journald.conf.d/trunkguard.conf")).unwrap();
    assert!(journald.contains("[Journal]") && journald.contains("SystemMaxUse="));
}
