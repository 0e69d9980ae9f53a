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
//! Layout (third test): the page at 1280x800 and at 390x844 (a phone), driven over the
//! DevTools protocol so the test can measure what the browser laid out: no element outside a
//! scroll container wider than the viewport, the page itself never scrolls sideways, the calls
//! table wholly visible at 1280 px and on the phone visible or scrollable inside its own
//! container (which fits the screen). Screenshots of both go to `target/test-artifacts/`.
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
fn named_call(ports: Ports, target: SocketAddr) -> (Sipp, RtpSink) {
    let sink = RtpSink::bind_talking(CARRIER_B_IP, ports.audio(0));
    let (target, peer, media, audio, hold) = (
        target.to_string(),
        ports.peer(1).to_string(),
        ports.sipp_media(1).to_string(),
        ports.audio(0).to_string(),
        HOLD_MS.to_string(),
    );
    let sipp = Sipp::spawn_with_timeout(
        "uac_named_caller",
        ports.sipp_control(1),
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

    let (mut caller, _sink) = named_call(PORTS, sip_addr(PORTS));
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
        calls.contains("<td>carrier-b</td><td>agent-sim</td><td class=\"opt\">PCMU</td>"),
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

// ---------------------------------------------------------------------------
// Layout at 1280 px and on a phone, measured in the browser
// ---------------------------------------------------------------------------

const LAYOUT_PORTS: Ports = Ports::new(39200);

/// carrier B (inbound, the named caller) and the agent simulator.
fn layout_config(sim_port: u16) -> String {
    format!(
        "{base}{carrier}\
         [[ai_endpoint]]\n\
         name = \"agent-sim\"\n\
         role = \"primary\"\n\
         protocol = \"twilio-media-streams\"\n\
         url = \"ws://127.0.0.1:{sim_port}/media\"\n",
        base = base_config(LAYOUT_PORTS),
        carrier = inbound_carrier("carrier-b", CARRIER_B_IP),
    )
}

/// A headless Chromium driven over the DevTools protocol (one page, one WebSocket).
struct DevTools {
    _browser: Reap,
    ws: tokio_tungstenite::tungstenite::WebSocket<TcpStream>,
    next_id: u64,
}

impl DevTools {
    fn launch(profile: &Path, port: u16) -> DevTools {
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--remote-debugging-port={port}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let browser = Reap(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut page = None;
        let found = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            let Some(body) = devtools_list(addr) else { return false };
            let targets: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            page = targets.as_array().into_iter().flatten().find_map(|t| {
                (t["type"] == "page")
                    .then(|| t["webSocketDebuggerUrl"].as_str().map(String::from))?
            });
            page.is_some()
        });
        assert!(found, "chromium's DevTools did not come up on port {port}");
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (ws, _) = tokio_tungstenite::tungstenite::client(page.unwrap().as_str(), stream)
            .expect("DevTools WebSocket");
        DevTools { _browser: browser, ws, next_id: 0 }
    }

    /// One DevTools command; its `result` (events in between are skipped, at most 1000).
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use tokio_tungstenite::tungstenite::Message;
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(msg.to_string())).expect("send to DevTools");
        for _ in 0..1000 {
            let reply = self.ws.read().expect("DevTools answer");
            let Message::Text(text) = reply else { continue };
            let v: serde_json::Value = serde_json::from_str(text.as_str()).expect("JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
        }
        panic!("no answer to {method}");
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }
}

/// DevTools' target list (its HTTP server keeps the connection open: read by Content-Length).
fn devtools_list(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET /json/list HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..1000 {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
            })?;
            if body.len() >= length {
                return Some(body.to_string());
            }
        }
    }
    None
}

/// What the browser laid out: page and viewport widths, elements poking out of the viewport
/// (outside scroll containers), and the calls table against its scroll container.
const MEASURE: &str = r##"(function () {
  var vw = document.documentElement.clientWidth;
  var outside = [];
  document.querySelectorAll("body *").forEach(function (e) {
    if (e.parentElement && e.parentElement.closest(".scroll")) return;
    var r = e.getBoundingClientRect();
    if (r.width > 0 && (r.right > vw + 0.5 || r.left < -0.5)) {
      outside.push(e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + " " +
        Math.round(r.left) + ".." + Math.round(r.right));
    }
  });
  var table = document.getElementById("calls");
  var box = table.parentElement;
  var b = box.getBoundingClientRect();
  var shown = [];
  table.querySelectorAll("thead th").forEach(function (th) {
    if (getComputedStyle(th).display !== "none") shown.push(th.textContent);
  });
  return JSON.stringify({
    viewport: vw,
    page_width: document.documentElement.scrollWidth,
    outside: outside,
    table_width: table.scrollWidth,
    box_width: box.clientWidth,
    box_left: b.left,
    box_right: b.right,
    box_overflow_x: getComputedStyle(box).overflowX,
    shown_columns: shown,
    rows: table.querySelectorAll("tbody td.caller").length
  });
})()"##;

#[test]
fn status_page_fits_1280_px_and_a_phone_with_the_calls_table_visible_or_scrollable() {
    let _ = chromium();
    let sim_port = LAYOUT_PORTS.base + 95;
    let _sim = spawn_agent_sim(sim_port);
    let mut app = Appliance::start(&layout_config(sim_port));
    let (mut caller, _sink) = named_call(LAYOUT_PORTS, sip_addr(LAYOUT_PORTS));
    let in_call = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let s = app.status_json();
        s["active_calls"].as_array().is_some_and(|c| c.iter().any(|c| c["state"] == "Confirmed"))
    });
    assert!(in_call, "no call in progress: {}\n{}", app.status_json(), caller.diagnostics());

    let work = tempfile::Builder::new().prefix("trunkguard-devtools-").tempdir().expect("tempdir");
    let mut chrome = DevTools::launch(&work.path().join("profile"), LAYOUT_PORTS.peer(5));
    let url = format!("http://{}/", app.http);
    let dir = artifacts_dir();
    for (width, height, mobile) in [(1280, 800, false), (390, 844, true)] {
        chrome.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile
            }),
        );
        chrome.call("Page.navigate", serde_json::json!({ "url": url }));
        let mut m = serde_json::Value::Null;
        let rendered = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
            let text = chrome.eval(MEASURE);
            m = serde_json::from_str(text.as_str().unwrap_or("null")).unwrap_or_default();
            m["rows"].as_u64() >= Some(1)
        });
        assert!(rendered, "{width}x{height}: the call never showed: {m}");
        println!("layout {width}x{height}: {m}");

        let shot = chrome.call("Page.captureScreenshot", serde_json::json!({ "format": "png" }));
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("base64 screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = dir.join(format!("status-page-{width}x{height}.png"));
        fs::write(&path, &png).expect("write screenshot");
        println!("status page screenshot: {}", path.display());

        let viewport = m["viewport"].as_f64().unwrap();
        // the layout width: the window less a vertical scrollbar, if the browser shows one
        let window = f64::from(width);
        assert!(viewport <= window && viewport >= window - 20.0, "{m}");
        assert!(m["page_width"].as_f64() <= Some(viewport), "the page scrolls sideways: {m}");
        assert_eq!(m["outside"], serde_json::json!([]), "elements wider than the viewport: {m}");
        let (table, boxw) = (m["table_width"].as_f64().unwrap(), m["box_width"].as_f64().unwrap());
        assert!(m["box_left"].as_f64() >= Some(0.0), "{m}");
        assert!(m["box_right"].as_f64() <= Some(viewport), "the table's container is cut: {m}");
        if mobile {
            let scrolls = matches!(m["box_overflow_x"].as_str(), Some("auto" | "scroll"));
            assert!(table <= boxw || scrolls, "table cut off, not scrollable: {m}");
            let shown = m["shown_columns"].as_array().unwrap();
            for column in ["Caller", "Agent", "Duration", "MOS"] {
                assert!(shown.iter().any(|c| c == column), "{column} hidden on a phone: {m}");
            }
        } else {
            assert!(table <= boxw, "the calls table is cut off at {width} px: {m}");
            assert_eq!(m["shown_columns"].as_array().map(Vec::len), Some(8), "{m}");
        }
    }
    drop(chrome);
    caller.kill();
    app.assert_alive();
}
