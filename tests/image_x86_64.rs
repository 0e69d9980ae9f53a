//! The x86-64 appliance image (images/build.sh, docs/images.md).
//!
//! Cheap checks always run: the image's configuration validates and keeps the management plane
//! on loopback, and the build script parses. The boot test is opt-in (it needs root,
//! debootstrap, qemu-system-x86_64 and SIPp, and takes minutes): with
//! `TRUNKGUARD_IMAGE_TESTS=1` it builds the image when none exists (or when
//! `TRUNKGUARD_IMAGE_REBUILD=1`), boots it under software emulation with QEMU user networking
//! forwarding a loopback port to the guest's SIP port, waits for the box to answer OPTIONS,
//! places a SIPp call through the forward, and checks the box printed `/livez` 200 on its
//! serial console. QEMU is always killed (drop guard).
//!
//! Knobs: `TRUNKGUARD_IMAGE_DIR` (default target/image-build/x86_64/out),
//! `TRUNKGUARD_IMAGE_KVM=1` (hardware acceleration), `TRUNKGUARD_IMAGE_BOOT=disk` (boot the
//! GRUB disk image instead of the kernel directly).

use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the box may take from QEMU's start to its first SIP answer (software emulation).
const BOOT_BUDGET: Duration = Duration::from_secs(180);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

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
    let out = Command::new(env!("CARGO_BIN_EXE_trunkguard")).arg("check-config").arg(&path).output().unwrap();
    assert!(out.status.success(), "check-config: {}", String::from_utf8_lossy(&out.stderr));

    let config = image_config();
    let status: SocketAddr = config["status"]["listen"].as_str().unwrap().parse().unwrap();
    assert!(status.ip().is_loopback(), "the management plane must stay on loopback: {status}");
    let listen = config["sip"]["listen"].as_array().unwrap();
    assert!(listen.iter().any(|l| l.as_str() == Some("udp:0.0.0.0:5060")), "SIP on every NIC: {listen:?}");
    // QEMU's user network shows the host as 10.0.2.2: the boot test calls from there.
    let carriers = config["carrier"].as_array().unwrap();
    let from_qemu_host = carriers.iter().any(|c| {
        c["inbound_from"].as_array().is_some_and(|nets| nets.iter().any(|n| n.as_str() == Some("10.0.2.2/32")))
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

/// QEMU, killed and reaped when dropped.
struct Qemu {
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
    fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("qemu exited ({status}); serial console:\n{}", tail(&self.serial(), 60));
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A loopback port free for both UDP and TCP (the forward uses both).
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port for UDP and TCP");
}

fn image_dir() -> PathBuf {
    std::env::var_os("TRUNKGUARD_IMAGE_DIR").map(PathBuf::from).unwrap_or_else(|| repo("target/image-build/x86_64/out"))
}

fn ensure_image(dir: &Path) {
    let present = ["vmlinuz", "initrd.img", "rootfs.raw", "disk.raw"].iter().all(|f| dir.join(f).is_file());
    if present && std::env::var("TRUNKGUARD_IMAGE_REBUILD").as_deref() != Ok("1") {
        println!("using the image in {}", dir.display());
        return;
    }
    let t0 = Instant::now();
    let status = Command::new(repo("images/build.sh")).arg("x86_64").status().expect("run images/build.sh");
    assert!(status.success(), "images/build.sh x86_64 failed ({status}); it needs root and debootstrap");
    println!("image_build_s: {:.0}", t0.elapsed().as_secs_f64());
}

fn boot(dir: &Path, sip_port: u16, serial: &Path) -> Qemu {
    let net = format!("user,id=n0,hostfwd=udp:127.0.0.1:{sip_port}-:5060,hostfwd=tcp:127.0.0.1:{sip_port}-:5060");
    let kvm = std::env::var("TRUNKGUARD_IMAGE_KVM").as_deref() == Ok("1");
    let mut cmd = Command::new("qemu-system-x86_64");
    let (accel, cpu) = if kvm { ("kvm", "host") } else { ("tcg", "max") };
    cmd.args(["-machine", "q35", "-accel", accel, "-cpu", cpu, "-smp", "2", "-m", "512"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot", "-snapshot"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-netdev", &net, "-device", "virtio-net-pci,netdev=n0"]);
    if std::env::var("TRUNKGUARD_IMAGE_BOOT").as_deref() == Ok("disk") {
        cmd.arg("-drive").arg(format!("file={},format=raw,if=virtio", dir.join("disk.raw").display()));
    } else {
        cmd.arg("-kernel").arg(dir.join("vmlinuz")).arg("-initrd").arg(dir.join("initrd.img"));
        cmd.args(["-append", "root=/dev/vda ro console=ttyS0 panic=-1"]);
        cmd.arg("-drive").arg(format!("file={},format=raw,if=virtio", dir.join("rootfs.raw").display()));
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 (apt-get install qemu-system-x86)");
    Qemu { child, serial: serial.to_path_buf() }
}

/// One raw OPTIONS over UDP from 127.0.0.1; the first line of the answer, if any.
fn options(sip_port: u16, seq: u32) -> Option<String> {
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

fn sipp_call(sip_port: u16, dir: &Path) -> (bool, String) {
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
            logs += &format!("--- {name}\n{}", std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    (out.status.code() == Some(0), logs)
}

#[test]
fn the_image_boots_under_qemu_and_answers_sip() {
    if std::env::var("TRUNKGUARD_IMAGE_TESTS").as_deref() != Ok("1") {
        println!("skipped: set TRUNKGUARD_IMAGE_TESTS=1 to build and boot the x86-64 image under QEMU");
        return;
    }
    let dir = image_dir();
    ensure_image(&dir);
    let work = tempfile::tempdir().unwrap();
    let serial = work.path().join("serial.log");
    let sip_port = free_port();
    let t0 = Instant::now();
    let mut qemu = boot(&dir, sip_port, &serial);

    let mut seq = 0;
    let answer = loop {
        qemu.assert_running();
        seq += 1;
        if let Some(line) = options(sip_port, seq) {
            break line;
        }
        assert!(
            t0.elapsed() < BOOT_BUDGET,
            "no SIP answer within {BOOT_BUDGET:?}; serial console:\n{}",
            tail(&qemu.serial(), 60)
        );
    };
    let boot_to_answer = t0.elapsed();
    assert!(answer.starts_with("SIP/2.0 200"), "OPTIONS answered with {answer:?}");
    println!("image_boot_to_sip_answer_s: {:.1}", boot_to_answer.as_secs_f64());

    let (ok, logs) = sipp_call(sip_port, work.path());
    assert!(ok, "SIPp call through the forward failed:\n{logs}\nserial:\n{}", tail(&qemu.serial(), 40));

    // The console helper reports /livez from inside the box (the status page stays on loopback).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !qemu.serial().contains("trunkguard-image: livez 200") {
        assert!(Instant::now() < deadline, "no livez line on the console:\n{}", tail(&qemu.serial(), 60));
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("image_boot_total_s: {:.1}", t0.elapsed().as_secs_f64());
}
