//! `trunkguard set-password`: the argon2 hash lands in the state directory (mode 0600) and
//! verifies; short passwords are refused; a non-loopback `status.listen` without a password
//! refuses to start.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;

fn trunkguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trunkguard"))
}

fn set_password(state_dir: &Path, stdin: &str) -> Output {
    let mut child = trunkguard()
        .args(["set-password", "--state-dir"])
        .arg(state_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn verifies(phc: &str, password: &str) -> bool {
    let parsed = PasswordHash::new(phc.trim()).unwrap();
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

#[test]
fn stores_a_private_argon2_hash() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = set_password(&state, "correct horse battery\n");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let file = state.join("admin-password.argon2");
    let phc = std::fs::read_to_string(&file).unwrap();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(verifies(&phc, "correct horse battery"));
    assert!(!verifies(&phc, "correct horse batter"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(!phc.contains("correct horse"), "the password itself is not stored");

    // setting it again replaces it
    let pw_file = dir.path().join("pw.txt");
    std::fs::write(&pw_file, "another long password\n").unwrap();
    let out = trunkguard()
        .args(["set-password", "--state-dir"])
        .arg(&state)
        .arg("--password-file")
        .arg(&pw_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let phc = std::fs::read_to_string(&file).unwrap();
    assert!(verifies(&phc, "another long password"));
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1, "no temporary file left");
}

#[test]
fn short_or_missing_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for input in ["eleven char\n", "", "\n"] {
        let out = set_password(dir.path(), input);
        assert_eq!(out.status.code(), Some(2), "input {input:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error:"), "{stderr}");
    }
    let out = set_password(dir.path(), "eleven char\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12 characters"));
    assert!(!dir.path().join("admin-password.argon2").exists());
}

#[test]
fn non_loopback_listen_without_password_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trunkguard.toml");
    std::fs::write(
        &config,
        "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n[status]\nlisten = \"0.0.0.0:0\"\n\
         [[carrier]]\nname = \"local\"\ninbound_from = [\"127.0.0.1/32\"]\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let out = trunkguard()
        .args(["run", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("status.listen = \"0.0.0.0:0\" is not a loopback address"), "{stderr}");
    assert!(stderr.contains("trunkguard set-password"), "{stderr}");
}
