//! A/B updates with real processes on loopback, a temporary directory as the box's root:
//! a good bundle (the real trunkguard) becomes ready and is confirmed; a release that never
//! becomes ready is switched back after the timeout, the old version serves ready again and
//! the log says why; a reboot in the middle is settled by `confirm`; a checksum mismatch, a
//! path-traversal bundle, a missing checksum and an unsigned bundle (key configured) are
//! refused without touching the slots.
//!
//! The "service manager" is a restart script: it stops the process in `service.pid` and starts
//! `<root>/opt/trunkguard/current/bin/trunkguard` in the background. Every process it started
//! is killed when the test's `Site` is dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ARCH: &str = std::env::consts::ARCH;

fn updater() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trunkguard-update"));
    c.stdin(Stdio::null());
    c
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A box under a temporary root, with its service on loopback ports from `base`.
struct Site {
    dir: tempfile::TempDir,
    http_port: u16,
}

impl Site {
    fn new(base: u16) -> Site {
        Site::with_status(base, "")
    }

    /// `status_extra`: more lines of `[status]`.
    fn with_status(base: u16, status_extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let site = Site { dir, http_port: base + 80 };
        let etc = site.root().join("etc/trunkguard");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("trunkguard.toml"),
            format!(
                "[sip]\nlisten = [\"udp:127.0.0.1:{base}\"]\n[media]\nrtp_ports = \"{}-{}\"\n[status]\nlisten = \"127.0.0.1:{}\"\n{status_extra}\
                 [[carrier]]\nname = \"local\"\ninbound_from = [\"127.0.0.0/8\"]\n",
                base + 100,
                base + 149,
                base + 80
            ),
        )
        .unwrap();
        let d = site.dir.path().display();
        let root = site.root().display().to_string();
        let script = format!(
            "#!/bin/sh\n\
             # the test's `systemctl restart trunkguard`\n\
             D='{d}'\n\
             if [ -f \"$D/service.pid\" ]; then\n\
               pid=$(cat \"$D/service.pid\")\n\
               kill \"$pid\" 2>/dev/null\n\
               i=0\n\
               while [ $i -lt 100 ] && kill -0 \"$pid\" 2>/dev/null && [ \"$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)\" != Z ]; do sleep 0.1; i=$((i+1)); done\n\
               kill -9 \"$pid\" 2>/dev/null\n\
             fi\n\
             '{root}/opt/trunkguard/current/bin/trunkguard' run --config '{root}/etc/trunkguard/trunkguard.toml' \
               --state-dir \"$D/state\" >>\"$D/service.log\" 2>&1 </dev/null &\n\
             echo $! >\"$D/service.pid\"\n"
        );
        std::fs::write(site.restart_script(), script).unwrap();
        site
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn restart_script(&self) -> PathBuf {
        self.dir.path().join("restart.sh")
    }

    fn restart_cmd(&self) -> String {
        format!("sh '{}'", self.restart_script().display())
    }

    fn ready_url(&self) -> String {
        format!("http://127.0.0.1:{}/readyz", self.http_port)
    }

    fn service_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("service.pid")).ok()?.trim().parse().ok()
    }

    fn service_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    /// A bundle of `binary` as `version` (with the repository's firmware files).
    fn bundle(&self, name: &str, binary: &Path, version: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        let made = updater()
            .args(["bundle", "--out"])
            .arg(&out)
            .arg("--binary")
            .arg(binary)
            .arg("--firmware")
            .arg(repo("firmware"))
            .args(["--version", version])
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", text(&made));
        out
    }

    /// A binary that starts and serves nothing, ever.
    fn never_ready_binary(&self) -> PathBuf {
        let path = self.dir.path().join("never-ready.sh");
        std::fs::write(&path, "#!/bin/sh\nexec sleep 600\n").unwrap();
        path
    }

    fn init(&self, bundle: &Path) {
        let out =
            updater().arg("init").arg(bundle).arg("--root").arg(self.root()).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }

    fn start_service(&self) {
        let st = Command::new("sh").arg(self.restart_script()).status().unwrap();
        assert!(st.success());
    }

    fn readyz(&self) -> Option<u16> {
        let mut s = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.http_port).into(),
            Duration::from_secs(1),
        )
        .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        buf.split_whitespace().nth(1)?.parse().ok()
    }

    fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.readyz() == Some(200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn update(&self, args: &[&str]) -> Command {
        let mut c = self.update_from_config(args);
        c.args(["--ready-url", &self.ready_url()]);
        c
    }

    /// The readiness URL left to the updater (from the configuration's `[status]`).
    fn update_from_config(&self, args: &[&str]) -> Command {
        let mut c = updater();
        c.args(args)
            .arg("--root")
            .arg(self.root())
            .args(["--restart-cmd", &self.restart_cmd()])
            .args(["--probe-interval-ms", "200", "--ready-streak", "2"]);
        c
    }

    fn current(&self) -> String {
        std::fs::read_link(self.root().join("opt/trunkguard/current"))
            .unwrap()
            .display()
            .to_string()
    }

    fn log_lines(&self) -> Vec<serde_json::Value> {
        let log =
            std::fs::read_to_string(self.root().join("var/lib/trunkguard-update/updates.log"))
                .unwrap_or_default();
        log.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn status(&self) -> serde_json::Value {
        let out = updater().args(["status", "--json", "--root"]).arg(self.root()).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Every file under the slots with its content, and where `current` points.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            let mut entries: Vec<_> =
                std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
            entries.sort();
            for p in entries {
                let meta = std::fs::symlink_metadata(&p).unwrap();
                if meta.file_type().is_symlink() {
                    out.push((
                        p.clone(),
                        std::fs::read_link(&p).unwrap().display().to_string().into_bytes(),
                    ));
                } else if meta.is_dir() {
                    walk(&p, out);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root().join("opt"), &mut out);
        out
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(pid) = self.service_pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

#[test]
fn a_ready_release_is_confirmed_and_one_that_never_gets_ready_rolls_back() {
    let site = Site::new(34400);
    let v1 = site.bundle("v1.tgu", Path::new(env!("CARGO_BIN_EXE_trunkguard")), "1.0.0");
    site.init(&v1);
    assert_eq!(site.current(), "slots/a");
    site.start_service();
    assert!(site.wait_ready(Duration::from_secs(30)), "v1 never ready: {}", site.service_log());
    let pid_v1 = site.service_pid();

    // a good release: switched, restarted, ready, confirmed
    let v2 = site.bundle("v2.tgu", Path::new(env!("CARGO_BIN_EXE_trunkguard")), "1.1.0");
    let t = Instant::now();
    let out = site.update(&["install", v2.to_str().unwrap(), "--timeout", "60"]).output().unwrap();
    assert!(out.status.success(), "{}\nservice: {}", text(&out), site.service_log());
    println!("update_confirm_s: {:.2}", t.elapsed().as_secs_f64());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1.1.0 in slot b is ready"),
        "{}",
        text(&out)
    );
    assert_eq!(site.current(), "slots/b");
    assert_ne!(site.service_pid(), pid_v1, "the service was restarted");
    assert_eq!(site.readyz(), Some(200));
    let last = site.log_lines().pop().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["result"].as_str()),
        (Some("install"), Some("confirmed")),
        "{last}"
    );
    assert_eq!(last["version"], "1.1.0");
    assert!(!site.root().join("var/lib/trunkguard-update/pending.json").exists());
    assert!(site.root().join("opt/trunkguard/slots/b/share/prompts/one-moment.wav").is_file());

    // a release that never becomes ready: after the timeout, back to slot b and 1.1.0
    let broken = site.bundle("v3.tgu", &site.never_ready_binary(), "3.0.0-broken");
    let t = Instant::now();
    let out =
        site.update(&["install", broken.to_str().unwrap(), "--timeout", "4"]).output().unwrap();
    let rollback_s = t.elapsed().as_secs_f64();
    println!("update_rollback_s: {rollback_s:.2}");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rolled back: the new version was not ready within 4 s"), "{stderr}");
    assert!(stderr.contains("previous version is ready again"), "{stderr}");
    assert!(rollback_s >= 4.0, "the timeout was waited for: {rollback_s}");
    assert_eq!(site.current(), "slots/b");
    assert_eq!(site.readyz(), Some(200), "1.1.0 serves again: {}", site.service_log());
    let last = site.log_lines().pop().unwrap();
    assert_eq!(last["result"], "rolled_back", "{last}");
    assert_eq!(last["version"], "3.0.0-broken");
    assert_eq!((last["from"].as_str(), last["to"].as_str()), (Some("b"), Some("a")));
    let reason = last["reason"].as_str().unwrap();
    assert!(
        reason.contains("not ready within 4 s") && reason.contains("connection refused"),
        "{reason}"
    );

    let status = site.status();
    assert_eq!(status["active"], "b");
    assert_eq!(status["slots"][0]["version"], "3.0.0-broken");
    assert_eq!(status["slots"][1]["version"], "1.1.0");
    assert_eq!(status["last"]["result"], "rolled_back");
    assert!(status["pending"].is_null());
    let plain = updater().args(["status", "--root"]).arg(site.root()).output().unwrap();
    let plain = String::from_utf8_lossy(&plain.stdout);
    assert!(
        plain.contains("slot b: 1.1.0  (active)")
            && plain.contains("install rolled_back 3.0.0-broken (b -> a)"),
        "{plain}"
    );

    // a manual rollback goes back to the other slot's version (here the broken one) and can be undone
    let out = site.update(&["rollback"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(site.current(), "slots/a");
    let out = site.update(&["rollback"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(site.current(), "slots/b");
    assert!(site.wait_ready(Duration::from_secs(30)), "{}", site.service_log());
}

#[test]
fn an_https_status_server_is_probed_at_the_address_the_configuration_names() {
    let site = Site::with_status(35000, "tls = \"self-signed\"\n");
    let v1 = site.bundle("v1.tgu", Path::new(env!("CARGO_BIN_EXE_trunkguard")), "1.0.0");
    site.init(&v1);
    site.start_service();
    let v2 = site.bundle("v2.tgu", Path::new(env!("CARGO_BIN_EXE_trunkguard")), "1.1.0");
    let out = site
        .update_from_config(&["install", v2.to_str().unwrap(), "--timeout", "60"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\nservice: {}", text(&out), site.service_log());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("waiting for https://127.0.0.1:35080/readyz"), "{stderr}");
    assert_eq!(site.current(), "slots/b");
    // and a never-ready release over the same path rolls back
    let broken = site.bundle("v3.tgu", &site.never_ready_binary(), "3.0.0-broken");
    let out = site
        .update_from_config(&["install", broken.to_str().unwrap(), "--timeout", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(site.current(), "slots/b");
}

#[test]
fn a_reboot_in_the_middle_is_settled_at_boot_by_confirm() {
    let site = Site::new(34600);
    let v1 = site.bundle("v1.tgu", Path::new(env!("CARGO_BIN_EXE_trunkguard")), "1.0.0");
    site.init(&v1);
    site.start_service();
    assert!(site.wait_ready(Duration::from_secs(30)), "{}", site.service_log());
    let broken = site.bundle("v2.tgu", &site.never_ready_binary(), "2.0.0-broken");
    // the updater dies (power cut) while it waits for the new version
    let mut child = site
        .update(&["install", broken.to_str().unwrap(), "--timeout", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pending = site.root().join("var/lib/trunkguard-update/pending.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !(pending.exists() && site.current() == "slots/b") {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(site.current(), "slots/b");
    assert!(pending.exists());
    assert_eq!(site.status()["pending"]["version"], "2.0.0-broken");
    // a second install is refused while one is pending
    let out = site.update(&["install", v1.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("waiting for confirmation"),
        "{}",
        text(&out)
    );

    // "boot": the service manager starts current (the broken one), then the confirm oneshot runs
    site.start_service();
    let out = site.update(&["confirm", "--timeout", "3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(site.current(), "slots/a");
    assert!(site.wait_ready(Duration::from_secs(30)), "{}", site.service_log());
    let last = site.log_lines().pop().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["result"].as_str()),
        (Some("confirm"), Some("rolled_back")),
        "{last}"
    );
    assert!(!pending.exists());
    // the next boot has nothing to do
    let out = site.update(&["confirm"]).output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("nothing pending"),
        "{}",
        text(&out)
    );
}

/// A tar entry with any name (the tar crate refuses to build `..` paths itself).
fn raw_entry(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn sha256_hex(path: &Path) -> String {
    trunkguard::update::bundle::sha256_file(path).unwrap()
}

#[test]
fn bad_bundles_are_refused_without_touching_the_slots() {
    let site = Site::new(34800);
    let fake = site.dir.path().join("fake-trunkguard");
    std::fs::write(&fake, "#!/bin/sh\necho fake\n").unwrap();
    let v1 = site.bundle("v1.tgu", &fake, "1.0.0");
    site.init(&v1);
    let before = site.snapshot();
    // no service: any attempt to switch would show in the snapshot; restarts would fail loudly
    let install = |bundle: &Path| {
        site.update(&["install", bundle.to_str().unwrap(), "--timeout", "2"]).output().unwrap()
    };

    // 1. checksum mismatch: one byte of the bundle changed after its .sha256 was written
    let v2 = site.bundle("v2.tgu", &fake, "2.0.0");
    let mut bytes = std::fs::read(&v2).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&v2, bytes).unwrap();
    let out = install(&v2);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"), "{}", text(&out));
    assert_eq!(site.snapshot(), before);
    let last = site.log_lines().pop().unwrap();
    assert_eq!(last["result"], "refused");
    assert!(last["reason"].as_str().unwrap().contains("checksum mismatch"));

    // 2. path traversal, with a correct checksum
    let bin = b"#!/bin/sh\n";
    let manifest = serde_json::json!({
        "format": 1, "version": "6.6.6", "arch": ARCH,
        "files": [{"path": "bin/trunkguard", "size": bin.len(), "mode": 0o755, "sha256": trunkguard::update::bundle::sha256_file(&{
            let p = site.dir.path().join("bin-payload"); std::fs::write(&p, bin).unwrap(); p
        }).unwrap()}]
    });
    for (name, escape) in
        [("traversal.tgu", "../../../escaped"), ("absolute.tgu", "/tmp/trunkguard-update-escaped")]
    {
        let mut tar = Vec::new();
        raw_entry(&mut tar, "manifest.json", manifest.to_string().as_bytes());
        raw_entry(&mut tar, escape, b"owned\n");
        raw_entry(&mut tar, "bin/trunkguard", bin);
        tar.extend_from_slice(&[0u8; 1024]);
        let path = site.dir.path().join(name);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        std::fs::write(
            site.dir.path().join(format!("{name}.sha256")),
            format!("{}  {name}\n", sha256_hex(&path)),
        )
        .unwrap();
        let out = install(&path);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("unsafe entry"), "{}", text(&out));
        assert_eq!(site.snapshot(), before, "{name}");
    }
    assert!(!site.dir.path().join("escaped").exists() && !site.root().join("escaped").exists());
    assert!(!Path::new("/tmp/trunkguard-update-escaped").exists());

    // 3. no checksum at all
    let v3 = site.bundle("v3.tgu", &fake, "3.0.0");
    std::fs::remove_file(site.dir.path().join("v3.tgu.sha256")).unwrap();
    let out = install(&v3);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no checksum"), "{}", text(&out));

    // 4. a public key configured: unsigned refused, signed verified
    let key = site.dir.path().join("update.key");
    let out = updater().args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    std::fs::copy(
        site.dir.path().join("update.key.pub"),
        site.root().join("etc/trunkguard/update.pub"),
    )
    .unwrap();
    let unsigned = site.bundle("v4.tgu", &fake, "4.0.0");
    let out = install(&unsigned);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signature: a public key is configured"),
        "{}",
        text(&out)
    );
    let signed = site.dir.path().join("v5.tgu");
    let out = updater()
        .args(["bundle", "--out"])
        .arg(&signed)
        .arg("--binary")
        .arg(&fake)
        .args(["--version", "5.0.0", "--sign"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = updater().arg("verify").arg(&signed).arg("--root").arg(site.root()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("signature verified"), "{}", text(&out));
    assert_eq!(site.snapshot(), before);
    assert!(!site.root().join("opt/trunkguard/slots/.b.new").exists());
}
