//! The status page in a real browser: the real binary with a probed carrier (SIPp answering
//! OPTIONS), an inbound-only carrier, an AI endpoint (the agent simulator, in-process) and a call in
//! progress whose caller display name is markup. Headless Chromium loads `/`, runs the page's
//! script, and the test checks what a person would see in the DOM it dumps: the readiness
//! banner, both carriers, the agent, and the caller's name shown as literal text (no element
//! made from it). Screenshots (desktop and phone) are kept under `target/test-artifacts/`.
//!
//! The Operator card: on loopback without a password the page shows the drain switch and the
//! service buttons. With a password (second test) the page shows the login form, and the flow
//! the card drives is run over plain HTTP against the real binary (headless `--dump-dom` cannot
//! click): login, CSRF token, drain, an INVITE refused with 503, carrier out of service, logout.
//!
//! Needs Debian's `chromium` (CI installs it); without it the test fails, it does not skip.
//! `TRUNKGUARD_CHROMIUM=/path/to/chrome` picks another browser binary.

mod common;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PORTS: Ports = Ports::new(27400);
const CARRIER_A_IP: &str = "127.0.0.41";
const CARRIER_B_IP: &str = "127.0.0.42";
/// How long the caller stays in the call: long enough for three browser runs.
const HOLD_MS: u64 = 15_000;
const BROWSER_TIMEOUT: Duration = Duration::from_secs(45);

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("TRUNKGUARD_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "chromium not found on PATH: the status-page test needs a real browser. \
         Install it with `sudo apt-get install -y chromium` (CI does, via .ci/run), \
         or set TRUNKGUARD_CHROMIUM to a Chrome/Chromium binary."
    );
}

fn options_responder() -> Sipp {
    let (port, media) = (PORTS.peer(0).to_string(), PORTS.sipp_media(0).to_string());
    let mut sipp = Sipp::spawn_with_timeout(
        "uas_options",
        PORTS.sipp_control(0),
        90,
        &["-sf", &scenario("uas_options.xml"), "-i", CARRIER_A_IP, "-p", &port, "-mp", &media],
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(sipp.is_running(), "uas_options did not start (diagnostics below)");
    sipp
}

fn config(sim_port: u16) -> String {
    format!(
        "{base}[[carrier]]\n\
         name = \"carrier-a\"\n\
         proxy = \"udp:{CARRIER_A_IP}:{proxy}\"\n\
         inbound_from = [\"{CARRIER_A_IP}/32\"]\n\
         probe = {{ interval_ms = 1000, timeout_ms = 500, down_after = 2, up_after = 1 }}\n\n\
         [[carrier]]\n\
         name = \"carrier-b\"\n\
         inbound_from = [\"{CARRIER_B_IP}/32\"]\n\n\
         [[ai_endpoint]]\n\
         name = \"agent-sim\"\n\
         role = \"primary\"\n\
         protocol = \"twilio-media-streams\"\n\
         url = \"ws://127.0.0.1:{sim_port}/media\"\n",
        base = base_config(PORTS),
        proxy = PORTS.peer(0),
    )
}

/// The call from carrier B whose display name is markup (tests/sipp/uac_named_caller.xml).
fn named_call(target: SocketAddr) -> (Sipp, RtpSink) {
    let sink = RtpSink::bind_talking(CARRIER_B_IP, PORTS.audio(0));
    let (target, peer, media, audio, hold) = (
        target.to_string(),
        PORTS.peer(1).to_string(),
        PORTS.sipp_media(1).to_string(),
        PORTS.audio(0).to_string(),
        HOLD_MS.to_string(),
    );
    let sipp = Sipp::spawn_with_timeout(
        "uac_named_caller",
        PORTS.sipp_control(1),
        60,
        &[
            "-sf",
            &scenario("uac_named_caller.xml"),
            &target,
            "-i",
            CARRIER_B_IP,
            "-p",
            &peer,
            "-mi",
            CARRIER_B_IP,
            "-mp",
            &media,
            "-key",
            "audio_port",
            &audio,
            "-d",
            &hold,
            "-m",
            "1",
        ],
    );
    (sipp, sink)
}

/// Runs headless Chromium on `url` with `extra` arguments; its stdout, bounded in time.
fn browser(profile: &Path, extra: &[&str], url: &str) -> String {
    let out_path = profile.with_extension("stdout");
    let err_path = profile.with_extension("stderr");
    let child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--virtual-time-budget=3000")
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::from(File::create(&out_path).expect("browser stdout file")))
        .stderr(Stdio::from(File::create(&err_path).expect("browser stderr file")))
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start chromium ({e}); install it with `apt-get install -y chromium`")
        });
    let mut child = Reap(child);
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait chromium") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not finish within {BROWSER_TIMEOUT:?}; stderr:\n{}",
            fs::read_to_string(&err_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "chromium failed ({status}); stderr:\n{}",
        fs::read_to_string(&err_path).unwrap_or_default()
    );
    fs::read_to_string(&out_path).expect("browser stdout")
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    let dir = target.join("test-artifacts");
    fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// The inner text of the element with `id` (first match) in serialized HTML, tags included.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let start =
        dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[start..];
    let end = rest.find("</table>").or_else(|| rest.find("</section>")).unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn status_page_shows_readiness_carriers_agent_and_a_hostile_caller_as_text() {
    let browser_bin = chromium(); // fail first, and clearly, when there is no browser
    let sim_port = PORTS.base + 95;
    let _sim = spawn_agent_sim(sim_port);
    let mut proxy = options_responder();
    let mut app = Appliance::start(&config(sim_port));
    let url = format!("http://{}/", app.http);

    // ready: carrier A answers probes, the agent passes its health probe, the database writes
    let ready = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        matches!(http_get(app.http, "/readyz"), Ok((200, _)))
    });
    assert!(ready, "never ready: {:?}\n{}", http_get(app.http, "/readyz"), app.log());

    let (mut caller, _sink) = named_call(sip_addr(PORTS));
    let in_call = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let s = app.status_json();
        s["active_calls"].as_array().is_some_and(|calls| {
            calls.iter().any(|c| {
                c["caller_name"].as_str().is_some_and(|n| n.contains("<img"))
                    && c["state"] == "Confirmed"
            })
        })
    });
    assert!(
        in_call,
        "the named call never came up: {}\n{}",
        app.status_json(),
        caller.diagnostics()
    );

    let work = tempfile::Builder::new().prefix("trunkguard-chromium-").tempdir().expect("tempdir");
    let dom = browser(&work.path().join("dom"), &["--dump-dom"], &url);
    eprintln!("browser: {}", browser_bin.display());

    // the banner says ready, in green, with no failing check listed
    let banner = section(&dom, "banner");
    assert!(
        banner.contains("class=\"banner ready\"") && banner.contains("Ready: taking calls"),
        "banner: {banner}"
    );
    assert!(
        section(&dom, "banner-checks").starts_with("id=\"banner-checks\"></ul>"),
        "failing checks listed: {banner}"
    );
    // both carriers: A probed and up, B inbound-only
    let carriers = section(&dom, "carriers");
    assert!(
        carriers.contains("<td>carrier-a</td><td><span class=\"pill good\">up</span></td>"),
        "carriers: {carriers}"
    );
    assert!(
        carriers.contains("<td>carrier-b</td>") && carriers.contains("not probed (no proxy)"),
        "carriers: {carriers}"
    );
    // the agent: breaker closed
    let ai = section(&dom, "ai");
    assert!(ai.contains("<td>agent-sim (primary)</td>") && ai.contains(">closed<"), "ai: {ai}");
    // the call row: caller name and number as literal text, carrier, codec
    let calls = section(&dom, "calls");
    assert!(
        calls.contains(
            "<strong>&lt;b&gt;x&lt;/b&gt;&lt;img src=x onerror=document.title=1&gt;</strong>"
        ),
        "the display name is not shown as text: {calls}"
    );
    assert!(calls.contains("sip:+15550100@127.0.0.42"), "caller number missing: {calls}");
    assert!(
        calls.contains("<td>carrier-b</td><td>agent-sim</td><td>PCMU</td>"),
        "call row (carrier, agent, codec): {calls}"
    );
    // nothing the caller sent became markup, and no handler ran
    assert!(!dom.contains("<img") && !dom.contains("<b>x"), "caller markup was parsed as HTML");
    assert!(dom.contains("<title>trunkguard status</title>"), "the page title changed");
    let counters = section(&dom, "counters");
    assert!(counters.contains("calls in progress"), "counters: {counters}");
    // the Operator card: localhost without a password may act; no login form, no logout
    let operator = section(&dom, "operator");
    assert!(operator.contains("No admin password is set"), "operator: {operator}");
    assert!(
        operator.contains(r#"<form id="login" class="op-login" hidden="">"#),
        "login form shown: {operator}"
    );
    assert!(operator.contains(r#"<div id="actions">"#), "actions hidden: {operator}");
    assert!(
        operator.contains("Not draining: taking new calls")
            && operator.contains(r#">Drain</button>"#),
        "{operator}"
    );
    let targets = section(&dom, "op-targets");
    for name in ["carrier carrier-a", "carrier carrier-b", "AI agent-sim"] {
        let row = format!("<td>{name}</td><td><span class=\"pill good\">In service</span></td><td><button type=\"button\">Take out of service</button></td>");
        assert!(targets.contains(&row), "{name} row missing: {targets}");
    }
    assert!(
        dom.contains(r#"id="drain-banner" class="banner draining" hidden="""#),
        "drain banner shown while not draining"
    );
    assert!(
        dom.contains(r#"id="logout" type="button" hidden="""#),
        "logout shown without a session"
    );

    // screenshots for people: desktop and phone
    let dir = artifacts_dir();
    for (name, size) in [("status-page.png", "1280,900"), ("status-page-phone.png", "390,844")] {
        let png = dir.join(name);
        let _ = fs::remove_file(&png);
        let profile = work.path().join(name.trim_end_matches(".png"));
        browser(
            &profile,
            &[&format!("--screenshot={}", png.display()), &format!("--window-size={size}")],
            &url,
        );
        let bytes =
            fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{} is not a real screenshot",
            png.display()
        );
        println!("status page screenshot: {}", png.display());
    }

    assert!(
        caller.wait_success(Duration::from_secs(40)),
        "the call failed (sipp diagnostics below)\n{}",
        caller.diagnostics()
    );
    proxy.kill();
    app.assert_alive();
}

// ---------------------------------------------------------------------------
// Operator actions with a password
// ---------------------------------------------------------------------------

const ADMIN_PORTS: Ports = Ports::new(27600);
const CARRIER_C_IP: &str = "127.0.0.43";
const PASSWORD: &str = "correct horse battery";

/// One HTTP/1.1 request over a std TcpStream (`Connection: close`): status, head, body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .expect("connect to the status server");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response {head:?}"));
    // axum answers small bodies with Content-Length; a chunked body would not parse as JSON below
    (code, head.to_owned(), body.to_owned())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// POSTs a JSON action with the session cookie and CSRF token: status and JSON answer.
fn act(
    addr: SocketAddr,
    cookie: &str,
    csrf: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (code, _, answer) = http(
        addr,
        "POST",
        path,
        &[("Cookie", cookie), ("X-CSRF-Token", csrf), ("Content-Type", "application/json")],
        body,
    );
    (code, json(&answer))
}

fn set_password(state: &Path) {
    let mut set = Command::new(env!("CARGO_BIN_EXE_trunkguard"))
        .args(["set-password", "--state-dir"])
        .arg(state)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn trunkguard set-password");
    set.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    assert!(set.wait().unwrap().success(), "set-password failed");
}

#[test]
fn operator_logs_in_drains_and_new_calls_get_503() {
    chromium();
    let state = tempfile::Builder::new().prefix("trunkguard-state-").tempdir().expect("tempdir");
    set_password(state.path());
    let config = format!(
        "{base}[state]\ndir = \"{dir}\"\n\n{carrier}",
        base = base_config(ADMIN_PORTS),
        dir = state.path().display(),
        carrier = inbound_carrier("carrier-c", CARRIER_C_IP),
    );
    let mut app = Appliance::start(&config);
    let addr = app.http;
    let origin = format!("http://{addr}");

    // not logged in: the session says so and actions are refused
    let (code, _, body) = http(addr, "GET", "/api/session", &[], "");
    assert_eq!(
        (code, json(&body)),
        (200, serde_json::json!({"authenticated": false, "password_required": true}))
    );
    let (code, _, _) = http(
        addr,
        "POST",
        "/api/admin/drain",
        &[("Content-Type", "application/json")],
        r#"{"on": true}"#,
    );
    assert_eq!(code, 401);

    // the page's login: a form body, from this origin (as the browser's fetch sends it)
    let form = [("Content-Type", "application/x-www-form-urlencoded"), ("Origin", origin.as_str())];
    let (code, head, body) = http(addr, "POST", "/login", &form, "password=wrong+password+here");
    assert_eq!(code, 401);
    assert_eq!(json(&body)["error"], "invalid password or locked, try again later");
    assert!(!head.to_ascii_lowercase().contains("set-cookie"), "a failed login set a cookie");
    std::thread::sleep(Duration::from_millis(1100)); // one failure slows this client down for 1 s
    let (code, head, body) =
        http(addr, "POST", "/login", &form, &format!("password={}", PASSWORD.replace(' ', "+")));
    assert_eq!(code, 200, "{body}");
    let set_cookie = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .expect("no Set-Cookie on login");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("tg_session=") && set_cookie.contains("HttpOnly"), "{set_cookie}");
    let csrf = json(&body)["csrf_token"].as_str().expect("csrf_token").to_owned();
    let (_, _, body) = http(addr, "GET", "/api/session", &[("Cookie", &cookie)], "");
    assert_eq!(
        json(&body)["csrf_token"],
        csrf.as_str(),
        "the page reads the same token from /api/session"
    );

    // drain: needs the token, then the status shows it and new INVITEs get 503
    let (code, _, _) = http(
        addr,
        "POST",
        "/api/admin/drain",
        &[("Cookie", &cookie), ("Content-Type", "application/json")],
        r#"{"on": true}"#,
    );
    assert_eq!(code, 403, "no CSRF token");
    assert_eq!(
        act(addr, &cookie, &csrf, "/api/admin/drain", r#"{"on": true}"#),
        (200, serde_json::json!({"ok": true}))
    );
    assert_eq!(app.status_json()["admin"]["draining"], true);
    let sip = RawSip::bind(CARRIER_C_IP, ADMIN_PORTS.peer(0));
    let rtp: SocketAddr = format!("{CARRIER_C_IP}:{}", ADMIN_PORTS.audio(0)).parse().unwrap();
    sip.send(
        sip_addr(ADMIN_PORTS),
        invite_request("UDP", sip.local, sip_addr(ADMIN_PORTS), "drain-e2e-1", rtp).as_bytes(),
    );
    let (got, done) =
        sip.recv_until(Duration::from_secs(3), |m| status_code(m).is_some_and(|c| c >= 200));
    assert!(done, "no final answer to the INVITE: {got:?}\n{}", app.log());
    let last = got.last().unwrap();
    assert_eq!(status_code(last), Some(503), "{last}");
    assert!(header(last, "Retry-After", None).is_some(), "503 without Retry-After: {last}");

    // the page without a session: login form, no actions, the draining banner
    let url = format!("http://{addr}/");
    let work = tempfile::Builder::new().prefix("trunkguard-chromium-").tempdir().expect("tempdir");
    let dom = browser(&work.path().join("dom"), &["--dump-dom"], &url);
    let operator = section(&dom, "operator");
    assert!(
        operator.contains(r#"<form id="login" class="op-login">"#),
        "login form hidden: {operator}"
    );
    assert!(
        operator.contains(r#"<div id="actions" hidden="">"#),
        "actions shown without login: {operator}"
    );
    assert!(operator.contains("Log in to drain"), "{operator}");
    assert!(
        dom.contains(r#"id="drain-banner" class="banner draining">"#),
        "no drain banner while draining"
    );
    assert!(dom.contains("Draining: new calls get 503"));
    let png = artifacts_dir().join("status-page-login-draining-phone.png");
    let _ = fs::remove_file(&png);
    browser(
        &work.path().join("shot"),
        &[&format!("--screenshot={}", png.display()), "--window-size=390,1400"],
        &url,
    );
    assert!(
        fs::read(&png).is_ok_and(|b| b.starts_with(b"\x89PNG") && b.len() > 10_000),
        "no screenshot at {}",
        png.display()
    );
    println!("status page screenshot: {}", png.display());

    // carrier out of service and back, unknown names, end of drain, logout
    let out = r#"{"name": "carrier-c", "in_service": false}"#;
    assert_eq!(act(addr, &cookie, &csrf, "/api/admin/carrier", out).0, 200);
    assert_eq!(
        app.status_json()["admin"]["carriers_out_of_service"],
        serde_json::json!(["carrier-c"])
    );
    let (code, answer) =
        act(addr, &cookie, &csrf, "/api/admin/carrier", r#"{"name": "nope", "in_service": false}"#);
    assert_eq!((code, answer["error"].as_str()), (404, Some("no carrier named \"nope\"")));
    assert_eq!(
        act(
            addr,
            &cookie,
            &csrf,
            "/api/admin/carrier",
            r#"{"name": "carrier-c", "in_service": true}"#
        )
        .0,
        200
    );
    assert_eq!(act(addr, &cookie, &csrf, "/api/admin/drain", r#"{"on": false}"#).0, 200);
    let admin = app.status_json()["admin"].clone();
    assert_eq!(
        (admin["draining"].clone(), admin["carriers_out_of_service"].clone()),
        (serde_json::json!(false), serde_json::json!([]))
    );
    let (code, _, _) =
        http(addr, "POST", "/logout", &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)], "");
    assert_eq!(code, 200);
    assert_eq!(
        act(addr, &cookie, &csrf, "/api/admin/drain", r#"{"on": true}"#).0,
        401,
        "the session ended"
    );
    app.assert_alive();
}
