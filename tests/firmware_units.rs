//! The update and first-boot units pass `systemd-analyze verify` (with the binaries under
//! test in place of /usr/bin), keep their ordering around trunkguard.service, and the bundle
//! carries every unit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `name` from firmware/systemd/ with the binaries under test, written to `dir`.
fn unit_for_test(dir: &Path, name: &str) -> (PathBuf, String) {
    let text = std::fs::read_to_string(repo(&format!("firmware/systemd/{name}"))).unwrap();
    let text = text
        .replace("/usr/bin/trunkguard-update", env!("CARGO_BIN_EXE_trunkguard-update"))
        .replace("/usr/bin/trunkguard ", &format!("{} ", env!("CARGO_BIN_EXE_trunkguard")));
    let path = dir.join(name);
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

fn verify(units: &[&Path]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .output()
        .expect("systemd-analyze is needed (Debian package systemd; .ci/run installs it)");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn update_and_first_boot_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    // trunkguard.service beside them, as on the box (they name it in After=/Before=)
    let main = std::fs::read_to_string(repo("firmware/systemd/trunkguard.service"))
        .unwrap()
        .replace("/usr/bin/trunkguard", env!("CARGO_BIN_EXE_trunkguard"));
    std::fs::write(dir.path().join("trunkguard.service"), main).unwrap();
    let (confirm, confirm_text) = unit_for_test(dir.path(), "trunkguard-update-confirm.service");
    let (first, first_text) = unit_for_test(dir.path(), "trunkguard-first-boot.service");
    for unit in [&confirm, &first] {
        let (ok, stderr) = verify(&[unit]);
        let name = unit.file_name().unwrap().to_string_lossy().to_string();
        assert!(ok, "systemd-analyze verify {name}: {stderr}");
        assert!(!stderr.contains(&format!("{name}:")), "warnings about {name}: {stderr}");
    }
    assert!(
        confirm_text.contains("After=trunkguard.service") && confirm_text.contains("Type=oneshot")
    );
    assert!(confirm_text.contains("ConditionPathExists=/var/lib/trunkguard-update/pending.json"));
    // calls are never held up by the first-boot questions: trunkguard does not wait for it
    assert!(
        !first_text.contains("Before=trunkguard.service") && first_text.contains("Type=oneshot")
    );
    assert!(first_text.contains("ExecStartPost=+/bin/systemctl restart trunkguard.service"));
    assert!(first_text.contains("ConditionPathExists=!/var/lib/trunkguard/admin-password.argon2"));
    assert!(first_text.contains("StandardInput=tty"));
}

#[test]
fn a_bundle_carries_every_unit_prompt_and_the_example_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.tgu");
    let made = Command::new(env!("CARGO_BIN_EXE_trunkguard-update"))
        .args(["bundle", "--version", "0.0.1", "--out"])
        .arg(&out)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_trunkguard-update"))
        .arg("--firmware")
        .arg(repo("firmware"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let opts = trunkguard::update::run::Options::new(dir.path());
    let checked = trunkguard::update::run::verify(&opts, &out).unwrap();
    let paths: Vec<&str> = checked.manifest.files.iter().map(|f| f.path.as_str()).collect();
    for unit in std::fs::read_dir(repo("firmware/systemd")).unwrap() {
        let name = unit.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            paths.contains(&format!("share/systemd/{name}").as_str()),
            "{name} missing from {paths:?}"
        );
    }
    for p in [
        "bin/trunkguard",
        "share/prompts/high-demand.wav",
        "share/prompts/one-moment.wav",
        "share/trunkguard.toml.example",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
}
