//! `trunkguard first-boot`: the password from a file or typed twice (a pipe, and a real
//! terminal through `script`'s pty where the password is never echoed), the rules enforced,
//! the certificate generated, the status page's address printed, and a second run changes
//! nothing.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;

const CONFIG: &str = "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n[status]\nlisten = \"127.0.0.1:18443\"\ntls = \"self-signed\"\n\
                      [[carrier]]\nname = \"local\"\ninbound_from = [\"127.0.0.1/32\"]\n";

fn first_boot(dir: &Path, extra: &[&str], stdin: &str) -> Output {
    std::fs::write(dir.join("tg.toml"), CONFIG).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trunkguard"))
        .arg("first-boot")
        .arg("--config")
        .arg(dir.join("tg.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn verifies(state: &Path, password: &str) -> bool {
    let phc = std::fs::read_to_string(state.join("admin-password.argon2")).unwrap();
    Argon2::default()
        .verify_password(password.as_bytes(), &PasswordHash::new(phc.trim()).unwrap())
        .is_ok()
}

fn text(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn password_file_sets_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(dir.path().join("pw"), "a long first password\n").unwrap();
    let pw = dir.path().join("pw").display().to_string();
    let out = first_boot(dir.path(), &["--password-file", &pw], "");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Admin password set."), "{stdout}");
    assert!(stdout.contains("Management certificate generated"), "{stdout}");
    assert!(stdout.contains("Status page: https://127.0.0.1:18443/"), "{stdout}");
    assert!(stdout.contains("listens on this box only"), "{stdout}");
    assert!(verifies(&state, "a long first password"));
    let cert = std::fs::read_to_string(state.join("cert.pem")).unwrap();
    assert!(cert.contains("BEGIN CERTIFICATE"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["admin-password.argon2", "key.pem"] {
            assert_eq!(
                std::fs::metadata(state.join(f)).unwrap().permissions().mode() & 0o777,
                0o600,
                "{f}"
            );
        }
    }

    // again, with another password: nothing changes
    std::fs::write(dir.path().join("pw"), "another long password\n").unwrap();
    let out = first_boot(dir.path(), &["--password-file", &pw], "");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("Admin password set."), "{stdout}");
    assert!(stdout.contains("Management certificate kept"), "{stdout}");
    assert!(verifies(&state, "a long first password"));
    assert_eq!(std::fs::read_to_string(state.join("cert.pem")).unwrap(), cert);

    // a short password in a fresh state directory is refused
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "too short\n").unwrap();
    let pw = dir.path().join("pw").display().to_string();
    let out = first_boot(dir.path(), &["--password-file", &pw], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12 characters"));
    assert!(!dir.path().join("state/admin-password.argon2").exists());
}

#[test]
fn typed_twice_with_the_rules_enforced() {
    let dir = tempfile::tempdir().unwrap();
    // too short; then a mismatch; then a match
    let input = "short\ncorrect horse battery\ncorrect horse batterY\ncorrect horse battery\ncorrect horse battery\n";
    let out = first_boot(dir.path(), &[], input);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Rules: at least 12 characters"), "{stdout}");
    assert!(stdout.contains("the password must have at least 12 characters."), "{stdout}");
    assert!(stdout.contains("The two passwords do not match. Try again."), "{stdout}");
    assert_eq!(stdout.matches("New admin password: ").count(), 3, "{stdout}");
    assert!(verifies(&dir.path().join("state"), "correct horse battery"));

    // three mismatches: nothing stored
    let dir = tempfile::tempdir().unwrap();
    let input = "correct horse battery\nwrong one here\n".repeat(3);
    let out = first_boot(dir.path(), &[], &input);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not match 3 times"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join("state/admin-password.argon2").exists());

    // the console closed halfway
    let out = first_boot(dir.path(), &[], "correct horse battery\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("end of input"), "{}", text(&out));
}

/// Output of a child collected by a thread, to wait for prompts.
fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 1024];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

fn wait_for(buf: &Arc<Mutex<Vec<u8>>>, needle: &str, count: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if String::from_utf8_lossy(&buf.lock().unwrap()).matches(needle).count() >= count {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn on_a_terminal_the_password_is_not_echoed() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("`script` (util-linux) is needed for the pty test");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tg.toml"), CONFIG).unwrap();
    let cmd = format!(
        "'{}' first-boot --config '{}' --state-dir '{}'",
        env!("CARGO_BIN_EXE_trunkguard"),
        dir.path().join("tg.toml").display(),
        dir.path().join("state").display()
    );
    let mut child = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = collect(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut ok = wait_for(&out, "New admin password: ", 1);
    if ok {
        stdin.write_all(b"secret typed on tty\r").unwrap();
        ok = wait_for(&out, "Type it again: ", 1);
    }
    if ok {
        stdin.write_all(b"secret typed on tty\r").unwrap();
        ok = wait_for(&out, "Status page: ", 1);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match child.try_wait().unwrap() {
            Some(s) => break Some(s),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let screen = String::from_utf8_lossy(&out.lock().unwrap()).to_string();
    assert!(ok, "prompts not seen: {screen}");
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {screen}");
    assert!(!screen.contains("secret typed"), "the password was echoed: {screen}");
    assert!(verifies(&dir.path().join("state"), "secret typed on tty"));
}
