//! Readiness means something: `/readyz` is 200 only while an AI endpoint really answers its
//! health probes, flips to 503 (naming the `ai` check) when agent-sim is stopped, and back to
//! 200 when it returns; `/livez` stays 200 throughout (liveness and readiness never mixed), and
//! calls are still answered while not ready (with the canned prompt).

mod common;

use std::time::Duration;

use common::*;

const SIM_PORT: u16 = 32190;

fn readyz(app: &Appliance) -> (u16, serde_json::Value) {
    match http_get(app.http, "/readyz") {
        Ok((code, body)) => {
            (code, serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::Null))
        }
        Err(e) => panic!("/readyz: {e}"),
    }
}

#[test]
fn readiness_follows_the_ai_endpoint_and_liveness_does_not() {
    let ports = Ports::new(32000);
    let config = format!(
        "{}{}[[ai_endpoint]]\nname = \"sim\"\nrole = \"primary\"\nprotocol = \"twilio-media-streams\"\n\
         url = \"ws://127.0.0.1:{SIM_PORT}/media\"\n",
        base_config(ports),
        inbound_carrier("carrier-a", "127.0.0.2"),
    );
    let sim = spawn_agent_sim(SIM_PORT);
    let mut app = Appliance::start(&config);
    let ready =
        wait_until(Duration::from_secs(15), Duration::from_millis(200), || readyz(&app).0 == 200);
    assert!(ready, "never ready with the agent up: {:?}", readyz(&app));

    drop(sim); // the agent goes away
               // probes every 5 s, a 10 s window: not ready within ~15 s
    let flipped =
        wait_until(Duration::from_secs(25), Duration::from_millis(250), || readyz(&app).0 == 503);
    let (code, body) = readyz(&app);
    assert!(flipped, "still ready without the agent: {code} {body}");
    assert_eq!(body["checks"]["ai"]["ok"], false, "{body}");
    assert_eq!(body["checks"]["carriers"]["ok"], true, "only the agent failed: {body}");
    assert_eq!(
        http_get(app.http, "/livez").map(|r| r.0).ok(),
        Some(200),
        "liveness is not readiness"
    );
    // not ready, yet a call is still answered (the canned prompt takes it)
    let (target, peer, media) = (
        format!("127.0.0.1:{}", ports.sip()),
        ports.peer(0).to_string(),
        ports.sipp_media(0).to_string(),
    );
    let mut sipp = Sipp::spawn(
        "uac-not-ready",
        ports.sipp_control(0),
        &[
            "-sn",
            "uac",
            &target,
            "-i",
            "127.0.0.2",
            "-p",
            &peer,
            "-mi",
            "127.0.0.2",
            "-mp",
            &media,
            "-m",
            "1",
        ],
    );
    assert!(sipp.wait_success(Duration::from_secs(20)), "a call while not ready was not answered");

    let _sim = spawn_agent_sim(SIM_PORT); // it comes back
    let back =
        wait_until(Duration::from_secs(15), Duration::from_millis(250), || readyz(&app).0 == 200);
    assert!(back, "not ready again after the agent returned: {:?}", readyz(&app));
    app.assert_alive();
}
