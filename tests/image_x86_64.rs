//! The x86-64 appliance image (images/build.sh, docs/images.md).
//!
//! Cheap checks always run: the image's configuration validates and keeps the management plane
//! on loopback, and the build script parses. The boot test runs by default (it needs root or
//! password-less sudo, debootstrap, qemu-system-x86_64 and SIPp, which `scripts/install-deps`
//! installs, and takes minutes; a missing tool fails it, `TRUNKGUARD_IMAGE_TESTS=0` skips it
//! with a loud line): it builds the release binaries, builds the image when none carries
//! exactly those binaries (or when `TRUNKGUARD_IMAGE_REBUILD=1`), boots it under software
//! emulation with QEMU user networking forwarding a loopback port to the guest's SIP port,
//! waits for the box to answer OPTIONS, places a SIPp call through the forward, and checks the
//! box printed `/livez` 200 on its serial console. QEMU is always killed (drop guard).
//!
//! Knobs (tests/image_boot/mod.rs): `TRUNKGUARD_IMAGE_DIR` (default
//! target/image-build/x86_64/out), `TRUNKGUARD_IMAGE_REBUILD=1`, `TRUNKGUARD_IMAGE_KVM=1`
//! (hardware acceleration), `TRUNKGUARD_IMAGE_BOOT=disk` (boot the GRUB disk image instead of
//! the kernel directly).

mod image_boot;

use image_boot::repo;
use std::net::SocketAddr;
use std::process::Command;

fn image_config() -> toml::Table {
    let text = std::fs::read_to_string(repo("images/config/trunkguard.toml")).unwrap();
    text.parse::<toml::Table>().unwrap()
}

#[test]
fn the_image_config_validates_and_keeps_status_on_loopback() {
    // The image installs the prompts under /usr/share; check against the repository's copy.
    let text = std::fs::read_to_string(repo("images/config/trunkguard.toml")).unwrap();
    let prompts = repo("firmware/prompts");
    let text = text.replace("/usr/share/trunkguard/prompts", prompts.to_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trunkguard.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trunkguard"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "check-config: {}", String::from_utf8_lossy(&out.stderr));

    let config = image_config();
    let status: SocketAddr = config["status"]["listen"].as_str().unwrap().parse().unwrap();
    assert!(status.ip().is_loopback(), "the management plane must stay on loopback: {status}");
    let listen = config["sip"]["listen"].as_array().unwrap();
    assert!(
        listen.iter().any(|l| l.as_str() == Some("udp:0.0.0.0:5060")),
        "SIP on every NIC: {listen:?}"
    );
    // QEMU's user network shows the host as 10.0.2.2: the boot test calls from there.
    let carriers = config["carrier"].as_array().unwrap();
    let from_qemu_host = carriers.iter().any(|c| {
        c["inbound_from"]
            .as_array()
            .is_some_and(|nets| nets.iter().any(|n| n.as_str() == Some("10.0.2.2/32")))
    });
    assert!(from_qemu_host, "a carrier must accept 10.0.2.2/32");
}

#[test]
fn the_build_script_parses_and_refuses_unknown_arches() {
    let script = repo("images/build.sh");
    let syntax = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(syntax.status.success(), "bash -n: {}", String::from_utf8_lossy(&syntax.stderr));
    let wrong = Command::new("bash").arg(&script).arg("sparc").output().unwrap();
    assert_eq!(wrong.status.code(), Some(2), "unknown arch must exit 2");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("usage"));
}

#[test]
fn the_image_boots_under_qemu_and_answers_sip() {
    if image_boot::by_default(
        &image_boot::X86_64,
        "building and booting the x86-64 image under QEMU",
    ) {
        image_boot::boot_and_call(&image_boot::X86_64);
    }
}
