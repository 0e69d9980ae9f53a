//! The ARM64 appliance image (images/build.sh aarch64, docs/images.md). Ignored by default, so
//! `cargo test` counts them as ignored: the build cross-compiles trunkguard in a Debian build
//! root and configures an arm64 Debian under qemu-user, which takes about half an hour from
//! nothing. Run them with `scripts/install-deps arm64` and
//! `cargo test --test image_aarch64 -- --ignored` (a missing tool is then a failure).
//!
//! - The cross-built binary runs under `qemu-aarch64` (qemu-user) with the image's root
//!   filesystem as its library root and prints its version.
//! - The image boots under `qemu-system-aarch64 -M virt -cpu cortex-a57` (software emulation),
//!   answers SIP through a forwarded loopback port, takes a SIPp call and prints `/livez` 200 on
//!   its console (tests/image_boot/mod.rs, same as x86-64). `TRUNKGUARD_IMAGE_BOOT=disk` boots
//!   the GPT disk through UEFI firmware (qemu-efi-aarch64) and GRUB instead of the kernel directly.

mod image_boot;

use image_boot::{ensure_image, image_dir, AARCH64};
use std::process::Command;

/// qemu-user for aarch64: `qemu-aarch64` (qemu-user) or `qemu-aarch64-static`
/// (qemu-user-static, what scripts/install-deps installs).
fn qemu_user() -> &'static str {
    let found = |name: &str| Command::new(name).arg("--version").output().is_ok();
    ["qemu-aarch64", "qemu-aarch64-static"]
        .into_iter()
        .find(|name| found(name))
        .expect("qemu-aarch64 or qemu-aarch64-static (scripts/install-deps arm64)")
}

#[test]
#[ignore = "slow (ARM64 image build): cargo test --test image_aarch64 -- --ignored"]
fn the_arm64_binary_runs_under_qemu_user() {
    image_boot::require_tools(&AARCH64);
    let qemu = qemu_user();
    let dir = image_dir(&AARCH64);
    ensure_image(&AARCH64, &dir);
    let root = dir.parent().unwrap().join("rootfs");
    // /usr/bin/trunkguard points (absolutely) into the A/B slots: take the active slot's copy
    let bin = root.join("opt/trunkguard/current/bin/trunkguard");
    let file = Command::new("file").arg("-L").arg(&bin).output();
    if let Ok(file) = file {
        let kind = String::from_utf8_lossy(&file.stdout).into_owned();
        assert!(kind.contains("ARM aarch64"), "not an arm64 binary: {kind}");
    }
    // -L: the image's own dynamic loader, glibc and libopus (a binary needing a newer glibc
    // than the image's fails here)
    let version = |bin: &std::path::Path| {
        let out = Command::new(qemu)
            .arg("-L")
            .arg(&root)
            .arg(bin)
            .arg("--version")
            .output()
            .expect("run qemu-user");
        assert!(out.status.success(), "{} --version under qemu-aarch64: {out:?}", bin.display());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let stdout = version(&bin);
    assert_eq!(stdout, format!("trunkguard {}", env!("CARGO_PKG_VERSION")));
    let updater = version(&root.join("usr/bin/trunkguard-update"));
    assert!(updater.starts_with("trunkguard-update"), "{updater}");
    println!("arm64 binary: {stdout}; {updater}");
}

#[test]
#[ignore = "slow (ARM64 image build and boot): cargo test --test image_aarch64 -- --ignored"]
fn the_arm64_image_boots_under_qemu_and_answers_sip() {
    image_boot::require_tools(&AARCH64);
    image_boot::boot_and_call(&AARCH64);
}
