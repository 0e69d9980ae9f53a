//! Shared harness for the appliance image tests (tests/image_x86_64.rs, tests/image_aarch64.rs):
//! builds the image with images/build.sh when none exists, boots it under QEMU (software
//! emulation) with user networking forwarding a loopback port to the guest's SIP port, waits
//! (bounded) for the box to answer OPTIONS, places a SIPp call through the forward and waits for
//! the `/livez` 200 line the image prints on its serial console. QEMU is killed on drop.
//!
//! Knobs: `TRUNKGUARD_IMAGE_DIR` (default target/image-build/ARCH/out),
//! `TRUNKGUARD_IMAGE_REBUILD=1` (build even if an image exists), `TRUNKGUARD_IMAGE_KVM=1`
//! (hardware acceleration), `TRUNKGUARD_IMAGE_BOOT=disk` (boot the disk image through its
//! firmware and GRUB instead of the kernel directly).
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One image architecture: how to build it and how QEMU runs it.
pub struct Arch {
    /// `images/build.sh` argument and target/image-build/ subdirectory.
    pub name: &'static str,
    pub qemu: &'static str,
    pub apt_hint: &'static str,
    /// Machine, CPU, memory (software emulation).
    pub machine: &'static [&'static str],
    /// Machine, CPU with `TRUNKGUARD_IMAGE_KVM=1`.
    pub machine_kvm: &'static [&'static str],
    /// The kernel's serial console for direct kernel boot.
    pub console: &'static str,
    /// Firmware for booting disk.raw (None: QEMU's default, SeaBIOS).
    pub disk_firmware: Option<&'static str>,
    /// How long the box may take from QEMU's start to its first SIP answer.
    pub boot_budget: Duration,
    /// The release binary is built by the host's cargo (else build.sh cross-compiles it).
    pub host_build: bool,
}

pub const X86_64: Arch = Arch {
    name: "x86_64",
    qemu: "qemu-system-x86_64",
    apt_hint: "debootstrap e2fsprogs qemu-utils fdisk xz-utils sip-tester qemu-system-x86",
    machine: &["-machine", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "512"],
    machine_kvm: &["-machine", "q35", "-accel", "kvm", "-cpu", "host", "-smp", "2", "-m", "512"],
    console: "ttyS0",
    disk_firmware: None,
    boot_budget: Duration::from_secs(180),
    host_build: true,
};

pub const AARCH64: Arch = Arch {
    name: "aarch64",
    qemu: "qemu-system-aarch64",
    apt_hint: "debootstrap e2fsprogs qemu-utils fdisk xz-utils sip-tester qemu-system-arm \
               qemu-efi-aarch64 qemu-user-static binfmt-support dosfstools mtools",
    machine: &[
        "-machine",
        "virt",
        "-accel",
        "tcg",
        "-cpu",
        "cortex-a57",
        "-smp",
        "2",
        "-m",
        "1024",
    ],
    machine_kvm: &["-machine", "virt", "-accel", "kvm", "-cpu", "host", "-smp", "2", "-m", "1024"],
    console: "ttyAMA0",
    disk_firmware: Some("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"),
    boot_budget: Duration::from_secs(600),
    host_build: false,
};

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `TRUNKGUARD_IMAGE_TESTS=0` skips the default-on image test (with a loud line); anything
/// else runs it.
pub fn skipped_by_env() -> bool {
    std::env::var("TRUNKGUARD_IMAGE_TESTS").as_deref() == Ok("0")
}

/// Default-on tests: true unless `TRUNKGUARD_IMAGE_TESTS=0`. A missing tool is a failure that
/// names it (README's install step installs them all): a fresh machine that cannot build the
/// image fails here rather than reporting a skipped test as "ok".
pub fn by_default(arch: &Arch, what: &str) -> bool {
    if skipped_by_env() {
        // Straight to stderr: libtest captures println! of passing tests, not this.
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {what} (TRUNKGUARD_IMAGE_TESTS=0).\n");
        return false;
    }
    require_tools(arch);
    true
}

/// Fails, naming the tool and how to install it, when the image build or boot lacks one.
pub fn require_tools(arch: &Arch) {
    if let Some(missing) = missing_tool(arch) {
        panic!(
            "{missing}.\nInstall the tools with scripts/install-deps (README.md), or set \
             TRUNKGUARD_IMAGE_TESTS=0 to skip the image test."
        );
    }
}

/// The first thing an image build and boot lacks here, if any.
pub fn missing_tool(arch: &Arch) -> Option<String> {
    if !is_root() && !Command::new("sudo").args(["-n", "true"]).status().is_ok_and(|s| s.success())
    {
        return Some("not root and no password-less sudo (images/build.sh needs root)".into());
    }
    let tools = ["debootstrap", "mkfs.ext4", "qemu-img", "sfdisk", "xz", "sipp", arch.qemu];
    tools
        .iter()
        .find(|tool| !on_path(tool))
        .map(|tool| format!("{tool} not found (Debian packages: {})", arch.apt_hint))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut dirs: Vec<&str> = path.split(':').collect();
    dirs.extend(["/usr/sbin", "/sbin"]);
    dirs.iter().any(|dir| Path::new(dir).join(tool).is_file())
}

/// QEMU, killed and reaped when dropped.
pub struct Qemu {
    child: Child,
    serial: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Qemu {
    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("qemu exited ({status}); serial console:\n{}", tail(&self.serial(), 60));
        }
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A loopback port free for both UDP and TCP (the forward uses both).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port for UDP and TCP");
}

pub fn image_dir(arch: &Arch) -> PathBuf {
    std::env::var_os("TRUNKGUARD_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo(&format!("target/image-build/{}/out", arch.name)))
}

/// Tests of one binary run in parallel: the first one to need the image builds it, once.
static BUILT: Mutex<bool> = Mutex::new(false);

/// The file beside the image that says which software it carries (see [`software_stamp`]).
const STAMP: &str = "software.stamp";

/// Builds the image unless `dir` holds one carrying exactly the software this checkout builds:
/// the host's release binaries (rebuilt first, a no-op when up to date) by their SHA-256, or,
/// for a cross-built architecture, the source tree (commit and uncommitted changes). An image
/// left from another version is rebuilt, never booted as if it were this one.
pub fn ensure_image(arch: &Arch, dir: &Path) {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let t0 = Instant::now();
    let bin = arch.host_build.then(build_release);
    let stamp = software_stamp(bin.as_deref());
    let present =
        ["vmlinuz", "initrd.img", "rootfs.raw", "disk.raw"].iter().all(|f| dir.join(f).is_file());
    let current = std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s.trim() == stamp);
    let rebuild = std::env::var("TRUNKGUARD_IMAGE_REBUILD").as_deref() == Ok("1");
    if present && current && !rebuild {
        println!("using the image in {} (software {stamp})", dir.display());
        *built = true;
        return;
    }
    if present && !current {
        println!("the image in {} carries other software: rebuilding", dir.display());
    }
    run_build_sh(arch, bin.as_deref());
    write_stamp(dir, &stamp);
    *built = true;
    println!("image_build_s: {:.0}", t0.elapsed().as_secs_f64());
}

/// `cargo build --release` of the binaries the image installs, as the user running the tests
/// (under sudo, cargo and its toolchain may not be on PATH).
fn build_release() -> PathBuf {
    let t0 = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--bin",
            "trunkguard",
            "--bin",
            "trunkguard-update",
        ])
        .current_dir(repo(""))
        .status()
        .expect("run cargo build --release");
    assert!(status.success(), "cargo build --release --locked failed ({status})");
    println!("image_release_build_s: {:.0}", t0.elapsed().as_secs_f64());
    repo("target/release/trunkguard")
}

/// What identifies the image's software: the release binaries' SHA-256, else the source tree.
pub fn software_stamp(bin: Option<&Path>) -> String {
    match bin {
        Some(bin) => {
            let update = bin.with_file_name("trunkguard-update");
            format!("bin:{}:{}", sha256_file(bin), sha256_file(&update))
        }
        None => {
            let head = git(&["rev-parse", "HEAD"]);
            let diff = git(&["diff", "HEAD", "--", "src", "Cargo.toml", "Cargo.lock", "firmware"]);
            format!("src:{}:{}", head.trim(), sha256_text(&diff))
        }
    }
}

fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}: {out:?}", path.display());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

fn sha256_text(text: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

fn git(args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(repo("")).output().expect("git");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_build_sh(arch: &Arch, bin: Option<&Path>) {
    let mut cmd = if is_root() {
        Command::new("env")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "env"]);
        sudo
    };
    if let Some(bin) = bin {
        cmd.arg(format!("TRUNKGUARD_BIN={}", bin.display()));
    }
    cmd.arg(repo("images/build.sh"));
    let status = cmd.arg(arch.name).status().expect("run images/build.sh");
    assert!(
        status.success(),
        "images/build.sh {} failed ({status}); it needs root and debootstrap",
        arch.name
    );
}

/// Records which software the image in `dir` carries (the directory may belong to root).
fn write_stamp(dir: &Path, stamp: &str) {
    let path = dir.join(STAMP);
    if std::fs::write(&path, format!("{stamp}\n")).is_ok() {
        return;
    }
    let mut tee = if is_root() { Command::new("tee") } else { sudo_tee() };
    tee.arg(&path).stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = tee.spawn().expect("tee");
    child.stdin.take().unwrap().write_all(format!("{stamp}\n").as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "write {}", path.display());
}

fn sudo_tee() -> Command {
    let mut cmd = Command::new("sudo");
    cmd.args(["-n", "tee"]);
    cmd
}

pub fn boot(arch: &Arch, dir: &Path, sip_port: u16, serial: &Path) -> Qemu {
    let net = format!(
        "user,id=n0,hostfwd=udp:127.0.0.1:{sip_port}-:5060,hostfwd=tcp:127.0.0.1:{sip_port}-:5060"
    );
    let kvm = std::env::var("TRUNKGUARD_IMAGE_KVM").as_deref() == Ok("1");
    let mut cmd = Command::new(arch.qemu);
    cmd.args(if kvm { arch.machine_kvm } else { arch.machine })
        .args(["-display", "none", "-monitor", "none", "-no-reboot", "-snapshot"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-netdev", &net, "-device", "virtio-net-pci,netdev=n0"]);
    if std::env::var("TRUNKGUARD_IMAGE_BOOT").as_deref() == Ok("disk") {
        if let Some(firmware) = arch.disk_firmware {
            cmd.arg("-bios").arg(firmware);
        }
        cmd.arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", dir.join("disk.raw").display()));
    } else {
        cmd.arg("-kernel").arg(dir.join("vmlinuz")).arg("-initrd").arg(dir.join("initrd.img"));
        cmd.arg("-append").arg(format!(
            "root=/dev/vda ro console={} panic=-1 trunkguard.first_boot=skip",
            arch.console
        ));
        cmd.arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", dir.join("rootfs.raw").display()));
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (apt-get install {})", arch.qemu, arch.apt_hint));
    Qemu { child, serial: serial.to_path_buf() }
}

/// One raw OPTIONS over UDP from 127.0.0.1; the first line of the answer, if any.
pub fn options(sip_port: u16, seq: u32) -> Option<String> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let local = sock.local_addr().ok()?;
    let msg = format!(
        "OPTIONS sip:probe@127.0.0.1:{sip_port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-image-{seq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:image-test@127.0.0.1>;tag=image{seq}\r\n\
         To: <sip:probe@127.0.0.1>\r\n\
         Call-ID: image-test-{seq}@127.0.0.1\r\n\
         CSeq: {seq} OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), ("127.0.0.1", sip_port)).ok()?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n]).lines().next().map(str::to_string)
}

pub fn sipp_call(sip_port: u16, dir: &Path) -> (bool, String) {
    let local = free_port().to_string();
    let control = free_port().to_string();
    let target = format!("127.0.0.1:{sip_port}");
    let out = Command::new("sipp")
        .args(["-sn", "uac", &target, "-m", "1", "-i", "127.0.0.1", "-p", &local, "-cp", &control])
        .args(["-timeout", "60s", "-timeout_error", "-nostdin", "-trace_err", "-trace_msg"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("sipp-stdout.log")).unwrap())
        .stderr(Stdio::piped())
        .output()
        .expect("sipp (apt-get install sip-tester)");
    let mut logs = String::from_utf8_lossy(&out.stderr).into_owned();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains("errors") || name.contains("messages") {
            logs += &format!(
                "--- {name}\n{}",
                std::fs::read_to_string(entry.path()).unwrap_or_default()
            );
        }
    }
    (out.status.code() == Some(0), logs)
}

/// Boots the image, waits for the first SIP answer, places a SIPp call, waits for the console's
/// `/livez` 200 line. Prints `image_boot_to_sip_answer_s` and `image_boot_total_s`.
pub fn boot_and_call(arch: &Arch) {
    let dir = image_dir(arch);
    ensure_image(arch, &dir);
    let work = tempfile::tempdir().unwrap();
    let serial = work.path().join("serial.log");
    let sip_port = free_port();
    let t0 = Instant::now();
    let mut qemu = boot(arch, &dir, sip_port, &serial);

    let mut seq = 0;
    let answer = loop {
        qemu.assert_running();
        seq += 1;
        if let Some(line) = options(sip_port, seq) {
            break line;
        }
        assert!(
            t0.elapsed() < arch.boot_budget,
            "no SIP answer within {:?}; serial console:\n{}",
            arch.boot_budget,
            tail(&qemu.serial(), 60)
        );
    };
    let boot_to_answer = t0.elapsed();
    assert!(answer.starts_with("SIP/2.0 200"), "OPTIONS answered with {answer:?}");
    println!("image_boot_to_sip_answer_s: {:.1}", boot_to_answer.as_secs_f64());

    let (ok, logs) = sipp_call(sip_port, work.path());
    assert!(
        ok,
        "SIPp call through the forward failed:\n{logs}\nserial:\n{}",
        tail(&qemu.serial(), 40)
    );

    // The console helper reports /livez from inside the box (the status page stays on loopback).
    let deadline = Instant::now() + Duration::from_secs(120);
    while !qemu.serial().contains("trunkguard-image: livez 200") {
        qemu.assert_running();
        assert!(
            Instant::now() < deadline,
            "no livez line on the console:\n{}",
            tail(&qemu.serial(), 60)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("image_boot_total_s: {:.1}", t0.elapsed().as_secs_f64());
}
