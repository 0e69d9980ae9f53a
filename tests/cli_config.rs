//! Runs the `trunkguard` binary's `check-config` on good and broken files.

use std::process::Command;

const EXAMPLE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/firmware/etc/trunkguard/trunkguard.toml");

fn check_config(path: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trunkguard"))
        .arg("check-config")
        .arg(path)
        .env("RUST_LOG", "off")
        .output()
        .expect("run trunkguard");
    let code = out.status.code().expect("exit code");
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn good_file_exits_zero_with_summary() {
    let (code, stdout, stderr) = check_config(std::path::Path::new(EXAMPLE));
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(
        stdout.trim(),
        format!("ok: {EXAMPLE}: 2 carriers, listen udp:127.0.0.1:5060, tcp:127.0.0.1:5060")
    );
}

#[test]
fn broken_file_exits_two_naming_each_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trunkguard.toml");
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("down_after = 2,", "down_after = 0,")
        .replace("udp:127.0.0.1:5060\", \"tcp", "udpx:127.0.0.1:5060\", \"tcp");
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let (listen_line, probe_line) = (line_of("udpx:"), line_of("down_after = 0"));
    std::fs::write(&path, &text).unwrap();
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 2, "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let p = path.display();
    assert!(
        stderr.contains(&format!(
            "{p}:{listen_line}: sip.listen[0]: \"udpx:127.0.0.1:5060\": unknown transport"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{p}:{probe_line}: carrier[0].probe.down_after: must be at least 1"
        )),
        "{stderr}"
    );
}

#[test]
fn unknown_key_and_missing_file_exit_two() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, "[status]\nlisten = \"127.0.0.1:8080\"\nport = 1\n").unwrap();
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains(":3: status.port: unknown field `port`"), "{stderr}");
    let (code, _, stderr) = check_config(&dir.path().join("missing.toml"));
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read configuration"), "{stderr}");
}

/// The example file, edited.
fn example_with(dir: &std::path::Path, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let path = dir.join("trunkguard.toml");
    std::fs::write(&path, edit(std::fs::read_to_string(EXAMPLE).unwrap())).unwrap();
    path
}

#[test]
fn a_duration_beyond_the_clock_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_with(dir.path(), |t| {
        t.replace("max_duration_s = 3600", "max_duration_s = 9223372036854775807")
    });
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 2, "stdout: {stdout} stderr: {stderr}");
    assert!(stderr.contains("call.max_duration_s: must be at most 86400"), "{stderr}");
    let path = example_with(dir.path(), |t| {
        t.replace("max_duration_s = 3600", "max_duration_s = 92233720368547758070")
    });
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains("call.max_duration_s: number too large"), "{stderr}");
}

#[test]
fn token_file_dev_zero_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_with(dir.path(), |t| {
        format!(
            "{t}\n[[ai_endpoint]]\nname = \"p\"\nrole = \"primary\"\nprotocol = \"openai-realtime\"\n\
             url = \"wss://agent.example/v1\"\ntoken_file = \"/dev/zero\"\n"
        )
    });
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ai_endpoint[0].token_file: \"/dev/zero\": cannot read: larger than"));
}

#[test]
fn a_50_mb_user_agent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ua = "a".repeat(50 * 1024 * 1024);
    let path = example_with(dir.path(), |t| {
        t.replace("user_agent = \"trunkguard\"", &format!("user_agent = \"{ua}\""))
    });
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "{}", &stderr[..stderr.len().min(400)]);
    assert!(stderr.contains("cannot read configuration: larger than 1048576 bytes"), "{stderr}");
    let ua = "a".repeat(300);
    let path = example_with(dir.path(), |t| {
        t.replace("user_agent = \"trunkguard\"", &format!("user_agent = \"{ua}\""))
    });
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains("sip.user_agent: is 300 bytes long; at most 256"), "{stderr}");
}
