//! Operator actions over HTTP: POST JSON, behind [`auth::require_admin`] (session or local
//! access, plus CSRF token), run in the drive loop through [`Shared::command`].
//!
//! | Route | Body | Command |
//! |---|---|---|
//! | `POST /api/admin/drain` | `{"on": bool}` | drain on/off |
//! | `POST /api/admin/carrier` | `{"name": str, "in_service": bool}` | carrier in/out of service |
//! | `POST /api/admin/ai-endpoint` | `{"name": str, "in_service": bool}` | AI endpoint in/out of service |
//! | `POST /api/admin/drill` | any | 501: drills are not available yet |
//!
//! Answers: 200 `{"ok": true}`; 404 `{"error"}` for an unknown carrier or endpoint; 400 for a
//! bad body; 503 when the drive loop is not taking commands.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, json_error};
use super::Shared;
use crate::core::endpoint::AdminCommand;

/// The action routes (authenticated) and the login routes of [`auth::routes`].
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/admin/drain", post(drain))
        .route("/api/admin/carrier", post(carrier))
        .route("/api/admin/ai-endpoint", post(ai_endpoint))
        .route("/api/admin/drill", post(drill))
        .route_layer(middleware::from_fn(auth::require_admin))
        .merge(auth::routes())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    on: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InServiceBody {
    name: String,
    in_service: bool,
}

async fn drain(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<DrainBody>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => run(&shared, AdminCommand::Drain(b.on)).await,
        Err(e) => bad_body(e),
    }
}

async fn carrier(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<InServiceBody>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => {
            run(&shared, AdminCommand::CarrierInService { name: b.name, in_service: b.in_service })
                .await
        }
        Err(e) => bad_body(e),
    }
}

async fn ai_endpoint(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<InServiceBody>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => {
            run(
                &shared,
                AdminCommand::AiEndpointInService { name: b.name, in_service: b.in_service },
            )
            .await
        }
        Err(e) => bad_body(e),
    }
}

async fn drill() -> Response {
    json_error(StatusCode::NOT_IMPLEMENTED, "drills are not available yet")
}

async fn run(shared: &Shared, command: AdminCommand) -> Response {
    match shared.command(command).await {
        Ok(Ok(())) => Json(json!({ "ok": true })).into_response(),
        Ok(Err(e)) => json_error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn bad_body(e: JsonRejection) -> Response {
    json_error(StatusCode::BAD_REQUEST, &e.body_text())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{header, Request};
    use tokio::sync::mpsc;
    use tower::ServiceExt;

    use super::*;
    use crate::core::endpoint::AdminError;
    use crate::io::http::auth::{Auth, Clock, LOGIN_FAILED};
    use crate::io::http::CommandRequest;
    use crate::io::mgmt::lockout::{self, LOCKOUT};
    use crate::io::mgmt::{sessions, AdminPassword};

    const PASSWORD: &str = "correct horse battery";
    const HOST: &str = "10.0.0.5:8080";

    /// A drive loop that records commands; carrier "nope" does not exist.
    fn fake_drive_loop() -> (Arc<Shared>, Arc<Mutex<Vec<AdminCommand>>>) {
        let (tx, mut rx) = mpsc::channel::<CommandRequest>(4);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some((command, reply)) = rx.recv().await {
                let outcome = match &command {
                    AdminCommand::CarrierInService { name, .. } if name == "nope" => {
                        Err(AdminError::NoSuchCarrier(name.clone()))
                    }
                    _ => Ok(()),
                };
                log.lock().unwrap().push(command);
                let _ = reply.send(outcome);
            }
        });
        (Shared::with_commands(Instant::now(), tx), seen)
    }

    struct Harness {
        shared: Arc<Shared>,
        seen: Arc<Mutex<Vec<AdminCommand>>>,
        auth: Arc<Auth>,
        now: Arc<Mutex<Instant>>,
    }

    impl Harness {
        fn new(password: Option<&str>, tls: bool) -> Harness {
            let (shared, seen) = fake_drive_loop();
            let now = Arc::new(Mutex::new(Instant::now()));
            let clock_now = now.clone();
            let clock: Clock = Arc::new(move || *clock_now.lock().unwrap());
            let auth = Auth::with_clock(password.map(AdminPassword::hash_for_tests), tls, clock);
            Harness { shared, seen, auth, now }
        }

        fn advance(&self, by: Duration) {
            *self.now.lock().unwrap() += by;
        }

        async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderBag, serde_json::Value) {
            let app = auth::with_auth(crate::io::http::app(self.shared.clone()), self.auth.clone());
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let cookie =
                resp.headers().get(header::SET_COOKIE).map(|v| v.to_str().unwrap().to_owned());
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
            let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            (status, HeaderBag { set_cookie: cookie }, json)
        }

        async fn login(&self, password: &str) -> (StatusCode, HeaderBag, serde_json::Value) {
            self.login_from("192.0.2.10", password).await
        }

        async fn login_from(
            &self,
            ip: &str,
            password: &str,
        ) -> (StatusCode, HeaderBag, serde_json::Value) {
            let body = form_urlencoded::Serializer::new(String::new())
                .append_pair("password", password)
                .finish();
            let mut req = Request::post("/login")
                .header(header::HOST, HOST)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap();
            let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
            req.extensions_mut().insert(ConnectInfo(addr));
            self.send(req).await
        }

        /// Logs in; returns (cookie header value, CSRF token).
        async fn session(&self) -> (String, String) {
            let (status, headers, body) = self.login(PASSWORD).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let set = headers.set_cookie.unwrap();
            let pair = set.split(';').next().unwrap().to_owned();
            (pair, body["csrf_token"].as_str().unwrap().to_owned())
        }

        async fn post(
            &self,
            path: &str,
            cookie: Option<&str>,
            csrf: Option<&str>,
            body: &str,
        ) -> (StatusCode, serde_json::Value) {
            let mut req = Request::post(path)
                .header(header::HOST, HOST)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(c) = cookie {
                req = req.header(header::COOKIE, c);
            }
            if let Some(t) = csrf {
                req = req.header("x-csrf-token", t);
            }
            let (status, _, json) = self.send(req.body(Body::from(body.to_owned())).unwrap()).await;
            (status, json)
        }

        async fn get_session(
            &self,
            host: &str,
            cookie: Option<&str>,
        ) -> (StatusCode, serde_json::Value) {
            let mut req = Request::get("/api/session").header(header::HOST, host);
            if let Some(c) = cookie {
                req = req.header(header::COOKIE, c);
            }
            let (status, _, json) = self.send(req.body(Body::empty()).unwrap()).await;
            (status, json)
        }
    }

    struct HeaderBag {
        set_cookie: Option<String>,
    }

    #[tokio::test]
    async fn login_sets_a_hardened_cookie() {
        for tls in [true, false] {
            let h = Harness::new(Some(PASSWORD), tls);
            let (status, headers, body) = h.login(PASSWORD).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let cookie = headers.set_cookie.unwrap();
            let token = cookie.strip_prefix("tg_session=").unwrap().split(';').next().unwrap();
            assert_eq!(token.len(), 64);
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
            for attr in ["; HttpOnly", "; SameSite=Strict", "; Path=/", "; Max-Age=28800"] {
                assert!(cookie.contains(attr), "{attr} missing from {cookie}");
            }
            assert_eq!(cookie.contains("; Secure"), tls, "{cookie}");
            assert_eq!(body["csrf_token"].as_str().unwrap().len(), 64);
            assert_eq!(body["idle_timeout_s"], 1800);
        }
    }

    #[tokio::test]
    async fn five_wrong_passwords_lock_out_even_the_right_one() {
        let h = Harness::new(Some(PASSWORD), false);
        for i in 1..=5u32 {
            let (status, headers, body) = h.login("wrong password!").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
            assert_eq!(body["error"], LOGIN_FAILED);
            assert!(headers.set_cookie.is_none());
            if i == 1 {
                // slowed down: even the right password is refused right after a failure
                let (status, _, body) = h.login(PASSWORD).await;
                assert_eq!(
                    (status, body["error"].as_str()),
                    (StatusCode::UNAUTHORIZED, Some(LOGIN_FAILED))
                );
            }
            h.advance(lockout::PER_CLIENT.delay(i).min(Duration::from_secs(8)));
        }
        // locked: the right password gets the very same answer
        let (status, headers, body) = h.login(PASSWORD).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], LOGIN_FAILED);
        assert!(headers.set_cookie.is_none());
        // another client is not locked out by this one
        let (status, _, _) = h.login_from("192.0.2.99", PASSWORD).await;
        assert_eq!(status, StatusCode::OK);
        h.advance(LOCKOUT);
        let (status, _, _) = h.login(PASSWORD).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn actions_need_a_session_and_the_csrf_token() {
        let h = Harness::new(Some(PASSWORD), false);
        let drain = r#"{"on": true}"#;
        let (status, body) = h.post("/api/admin/drain", None, None, drain).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (cookie, csrf) = h.session().await;
        let (status, body) = h.post("/api/admin/drain", Some(&cookie), None, drain).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, _) =
            h.post("/api/admin/drain", Some(&cookie), Some(&"0".repeat(64)), drain).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(h.seen.lock().unwrap().is_empty(), "nothing reached the drive loop");
        // the token is also what GET /api/session hands out
        let (status, session) = h.get_session(HOST, Some(&cookie)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(session["authenticated"], true);
        assert_eq!(session["csrf_token"], csrf.as_str());
        let (status, body) = h.post("/api/admin/drain", Some(&cookie), Some(&csrf), drain).await;
        assert_eq!((status, &body), (StatusCode::OK, &json!({"ok": true})));
        let carrier = r#"{"name": "carrier-a", "in_service": false}"#;
        let (status, _) = h.post("/api/admin/carrier", Some(&cookie), Some(&csrf), carrier).await;
        assert_eq!(status, StatusCode::OK);
        let ai = r#"{"name": "primary", "in_service": true}"#;
        let (status, _) = h.post("/api/admin/ai-endpoint", Some(&cookie), Some(&csrf), ai).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            *h.seen.lock().unwrap(),
            vec![
                AdminCommand::Drain(true),
                AdminCommand::CarrierInService { name: "carrier-a".into(), in_service: false },
                AdminCommand::AiEndpointInService { name: "primary".into(), in_service: true },
            ]
        );
        // errors
        let (status, body) = h
            .post(
                "/api/admin/carrier",
                Some(&cookie),
                Some(&csrf),
                r#"{"name":"nope","in_service":true}"#,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "no carrier named \"nope\"");
        let (status, body) =
            h.post("/api/admin/drain", Some(&cookie), Some(&csrf), r#"{"of": 1}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = h.post("/api/admin/drill", Some(&cookie), Some(&csrf), "{}").await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(body["error"], "drills are not available yet");
    }

    #[tokio::test]
    async fn logout_and_idle_end_the_session() {
        let h = Harness::new(Some(PASSWORD), false);
        let (cookie, csrf) = h.session().await;
        let (status, _) = h.post("/logout", Some(&cookie), None, "").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "logout is a POST: CSRF token required");
        let req = Request::post("/logout")
            .header(header::HOST, HOST)
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf_token={csrf}")))
            .unwrap();
        let (status, headers, _) = h.send(req).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.set_cookie.unwrap().contains("Max-Age=0"));
        let (status, _) =
            h.post("/api/admin/drain", Some(&cookie), Some(&csrf), r#"{"on": false}"#).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (_, session) = h.get_session(HOST, Some(&cookie)).await;
        assert_eq!(session, json!({"authenticated": false, "password_required": true}));

        let (cookie, csrf) = h.session().await;
        h.advance(sessions::IDLE);
        let (status, _) =
            h.post("/api/admin/drain", Some(&cookie), Some(&csrf), r#"{"on": false}"#).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "idle for 30 min");
        assert!(h.seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn login_refuses_other_origins() {
        let h = Harness::new(Some(PASSWORD), false);
        let req = Request::post("/login")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, "http://evil.example")
            .body(Body::from(format!("password={}", PASSWORD.replace(' ', "+"))))
            .unwrap();
        let (status, headers, _) = h.send(req).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(headers.set_cookie.is_none());
        let req = Request::post("/login")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, format!("http://{HOST}"))
            .body(Body::from(format!("password={}", PASSWORD.replace(' ', "+"))))
            .unwrap();
        let (status, _, _) = h.send(req).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn without_a_password_localhost_acts_with_the_csrf_token() {
        let h = Harness::new(None, false);
        let (status, _) = h.get_session("evil.example:8080", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "DNS rebinding: Host is not local");
        let (status, session) = h.get_session("127.0.0.1:8080", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(session["password_required"], false);
        let csrf = session["csrf_token"].as_str().unwrap().to_owned();
        let post = |host: &'static str, token: Option<String>| {
            let mut req = Request::post("/api/admin/drain")
                .header(header::HOST, host)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(t) = token {
                req = req.header("x-csrf-token", t);
            }
            req.body(Body::from(r#"{"on": true}"#)).unwrap()
        };
        assert_eq!(h.send(post("localhost:8080", None)).await.0, StatusCode::FORBIDDEN);
        assert_eq!(
            h.send(post("evil.example:8080", Some(csrf.clone()))).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(h.send(post("localhost:8080", Some(csrf))).await.0, StatusCode::OK);
        assert_eq!(*h.seen.lock().unwrap(), vec![AdminCommand::Drain(true)]);
        let (status, _, _) = h.login(PASSWORD).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "nothing to log in to");
    }

    #[tokio::test]
    async fn fails_closed_without_auth_and_reports_a_stopped_loop() {
        let (shared, _) = fake_drive_loop();
        let req = Request::post("/api/admin/drain")
            .header(header::HOST, "localhost")
            .body(Body::from("{}"))
            .unwrap();
        let resp = crate::io::http::app(shared).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "no Auth extension: refuse");

        let h = Harness::new(None, false);
        let stopped = Shared::new(Instant::now());
        let app = auth::with_auth(crate::io::http::app(stopped), h.auth.clone());
        let (_, session) = h.get_session("localhost", None).await;
        let req = Request::post("/api/admin/drain")
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-csrf-token", session["csrf_token"].as_str().unwrap())
            .body(Body::from(r#"{"on": true}"#))
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
