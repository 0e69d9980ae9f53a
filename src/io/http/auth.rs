//! Who may act on the appliance through the status server.
//!
//! - With an admin password set (`trunkguard set-password`), operators log in: `POST /login`
//!   (form field `password`) sets the `tg_session` cookie (random 256-bit token, HttpOnly,
//!   SameSite=Strict, Path=/, Secure over HTTPS); sessions live in memory (8 h, 30 min idle).
//!   `POST /logout` ends the session.
//! - Without a password (possible only on a loopback `status.listen`), management is open to
//!   requests whose `Host` is `localhost` or a loopback address (a browser on the box; the
//!   `Host` check defeats DNS rebinding).
//! - Every POST except `/login` carries the CSRF token of `GET /api/session` in the
//!   `X-CSRF-Token` header (or, for `/logout`, a `csrf_token` form field). `/login` instead
//!   requires `Origin` (or `Referer`) to be this server when the client sends one.
//! - Failed logins slow down and lock out per client, and only slow down globally; loopback is
//!   never locked out ([`Lockout`]); every refusal says the same [`LOGIN_FAILED`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{CACHE_CONTROL, COOKIE, HOST, ORIGIN, REFERER, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::io::mgmt::lockout::Lockout;
use crate::io::mgmt::sessions::{self, constant_time_eq, Sessions};
use crate::io::mgmt::AdminPassword;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "tg_session";
/// Header carrying the CSRF token on POSTs.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Form field carrying the CSRF token (for `/logout` from a plain HTML form).
pub const CSRF_FIELD: &str = "csrf_token";
/// The one answer to every failed login, whatever the reason.
pub const LOGIN_FAILED: &str = "invalid password or locked, try again later";
/// Password verifications (argon2: memory and CPU heavy) running at once.
const CONCURRENT_VERIFICATIONS: usize = 2;
/// Largest login or logout form body.
const FORM_LIMIT: usize = 4096;

/// Where the handlers read the time (a fake clock in tests).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Sessions, lockout and the password; shared by the handlers as an `Extension`.
pub struct Auth {
    password: Option<AdminPassword>,
    /// Served over TLS: cookies get `Secure`, same-origin checks expect `https://`.
    tls: bool,
    /// The CSRF token when no password is set (one per process).
    open_csrf: String,
    sessions: Mutex<Sessions>,
    lockout: Mutex<Lockout>,
    verifying: Semaphore,
    clock: Clock,
}

impl Auth {
    pub fn new(password: Option<AdminPassword>, tls: bool) -> Arc<Auth> {
        Auth::with_clock(password, tls, Arc::new(crate::io::clock::now))
    }

    pub fn with_clock(password: Option<AdminPassword>, tls: bool, clock: Clock) -> Arc<Auth> {
        Arc::new(Auth {
            password,
            tls,
            open_csrf: sessions::random_token(&mut rand::rngs::OsRng),
            sessions: Mutex::new(Sessions::new()),
            lockout: Mutex::new(Lockout::new()),
            verifying: Semaphore::new(CONCURRENT_VERIFICATIONS),
            clock,
        })
    }

    pub fn password_required(&self) -> bool {
        self.password.is_some()
    }

    fn now(&self) -> Instant {
        (self.clock)()
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lockout(&self) -> MutexGuard<'_, Lockout> {
        self.lockout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The CSRF token this request's sender holds: its session's, or the open one on localhost.
    fn expected_csrf(&self, headers: &HeaderMap) -> Result<String, Denied> {
        match &self.password {
            Some(_) => {
                let token = session_cookie(headers).ok_or(Denied::LoginRequired)?;
                self.sessions().touch(token, self.now()).ok_or(Denied::LoginRequired)
            }
            None if host_is_local(headers) => Ok(self.open_csrf.clone()),
            None => Err(Denied::NotLocal),
        }
    }

    /// May this POST act? Logged in (or local without a password) and the CSRF token matches.
    pub fn authorize(&self, headers: &HeaderMap, form_csrf: Option<&str>) -> Result<(), Denied> {
        let expected = self.expected_csrf(headers)?;
        let given = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .or(form_csrf)
            .ok_or(Denied::BadCsrf)?;
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(Denied::BadCsrf)
        }
    }

    fn cookie(&self, value: &str, max_age_s: u64) -> String {
        let secure = if self.tls { "; Secure" } else { "" };
        format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
    }
}

/// Why a request may not act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    LoginRequired,
    NotLocal,
    BadCsrf,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::LoginRequired => json_error(StatusCode::UNAUTHORIZED, "login required"),
            Denied::NotLocal => json_error(
                StatusCode::FORBIDDEN,
                "no admin password is set: management is only open to http://localhost on the appliance",
            ),
            Denied::BadCsrf => json_error(StatusCode::FORBIDDEN, "missing or invalid CSRF token"),
        }
    }
}

/// `{"error": message}` with `status`, never cached.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    (status, [(CACHE_CONTROL, "no-store")], Json(json!({ "error": message }))).into_response()
}

/// `/login`, `/logout`, `/api/session`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/api/session", get(session))
}

/// Gives the handlers `auth`; without it every management request fails closed (500).
pub fn with_auth(router: Router, auth: Arc<Auth>) -> Router {
    router.layer(Extension(auth))
}

/// Middleware for the routes that act: [`Auth::authorize`] with the CSRF header.
pub async fn require_admin(
    Extension(auth): Extension<Arc<Auth>>,
    request: Request,
    next: Next,
) -> Response {
    match auth.authorize(request.headers(), None) {
        Ok(()) => next.run(request).await,
        Err(denied) => denied.into_response(),
    }
}

async fn session(Extension(auth): Extension<Arc<Auth>>, headers: HeaderMap) -> Response {
    let body = match auth.expected_csrf(&headers) {
        Ok(csrf) => json!({
            "authenticated": true,
            "password_required": auth.password_required(),
            "csrf_token": csrf,
        }),
        Err(Denied::LoginRequired) => json!({ "authenticated": false, "password_required": true }),
        Err(denied) => return denied.into_response(),
    };
    ([(CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn login(Extension(auth): Extension<Arc<Auth>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if !same_origin(&parts.headers, auth.tls) {
        return json_error(StatusCode::FORBIDDEN, "cross-origin login refused");
    }
    let Some(password) = auth.password.clone() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "no admin password is set: management is open on localhost without login",
        );
    };
    let client = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let Some(candidate) = form_field(body, "password").await else {
        return json_error(StatusCode::BAD_REQUEST, "expected a form field `password`");
    };
    // everyone's recent failures slow every login down a little (never lock anyone out)
    let slowdown = auth.lockout().global_delay(client, auth.now());
    if !slowdown.is_zero() {
        tokio::time::sleep(slowdown).await;
    }
    // Held until the outcome is recorded, so concurrent guesses cannot outrun the lockout.
    let Ok(_permit) = auth.verifying.acquire().await else {
        return login_failed();
    };
    if !auth.lockout().allowed(client, auth.now()) {
        tracing::warn!(%client, "login refused: too many failed attempts");
        return login_failed();
    }
    let verified =
        tokio::task::spawn_blocking(move || password.verify(&candidate)).await.unwrap_or(false);
    let now = auth.now();
    if !verified {
        auth.lockout().failed(client, now);
        tracing::warn!(%client, "failed login");
        return login_failed();
    }
    auth.lockout().succeeded(client);
    let fresh = auth.sessions().create(now, &mut rand::rngs::OsRng);
    tracing::info!(%client, "operator logged in");
    let cookie = auth.cookie(&fresh.token, sessions::MAX_AGE.as_secs());
    let body = json!({
        "ok": true,
        "csrf_token": fresh.csrf,
        "max_age_s": sessions::MAX_AGE.as_secs(),
        "idle_timeout_s": sessions::IDLE.as_secs(),
    });
    ([(SET_COOKIE, cookie), (CACHE_CONTROL, "no-store".to_owned())], Json(body)).into_response()
}

fn login_failed() -> Response {
    json_error(StatusCode::UNAUTHORIZED, LOGIN_FAILED)
}

async fn logout(Extension(auth): Extension<Arc<Auth>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let form_csrf = form_field(body, CSRF_FIELD).await;
    if let Err(denied) = auth.authorize(&parts.headers, form_csrf.as_deref()) {
        return denied.into_response();
    }
    if let Some(token) = session_cookie(&parts.headers) {
        auth.sessions().remove(token);
    }
    let cookie = auth.cookie("", 0);
    ([(SET_COOKIE, cookie), (CACHE_CONTROL, "no-store".to_owned())], Json(json!({ "ok": true })))
        .into_response()
}

/// A field of an `application/x-www-form-urlencoded` body (at most [`FORM_LIMIT`] bytes).
async fn form_field(body: Body, name: &str) -> Option<String> {
    let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.ok()?;
    form_urlencoded::parse(&bytes).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The `tg_session` cookie's value, from any `Cookie` header.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

fn header(headers: &HeaderMap, name: axum::http::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Browsers send `Origin` (or at least `Referer`) on a POST; it must name this server.
/// Clients that send neither (curl, scripts) cannot be driven by another site, so pass.
fn same_origin(headers: &HeaderMap, tls: bool) -> bool {
    let scheme = if tls { "https" } else { "http" };
    let own = header(headers, HOST).map(|host| format!("{scheme}://{host}"));
    if let Some(origin) = header(headers, ORIGIN) {
        return own.is_some_and(|own| origin.eq_ignore_ascii_case(&own));
    }
    if let Some(referer) = header(headers, REFERER) {
        return own.is_some_and(|own| {
            let prefix = format!("{own}/");
            referer
                .as_bytes()
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
        });
    }
    true
}

/// `Host` is `localhost` or a loopback address (with or without a port).
fn host_is_local(headers: &HeaderMap) -> bool {
    let Some(host) = header(headers, HOST) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn local_hosts() {
        for local in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "127.0.0.2",
            "[::1]:8080",
            "[::1]",
            "LOCALHOST:1",
        ] {
            assert!(host_is_local(&headers(&[("host", local)])), "{local}");
        }
        for remote in
            ["evil.example:8080", "10.0.0.1:8080", "[2001:db8::1]:80", "localhost.evil.example", ""]
        {
            assert!(!host_is_local(&headers(&[("host", remote)])), "{remote}");
        }
        assert!(!host_is_local(&HeaderMap::new()));
    }

    #[test]
    fn origin_checks() {
        let h = |extra: &[(&'static str, &str)]| {
            let mut all = vec![("host", "10.0.0.5:8443")];
            all.extend_from_slice(extra);
            headers(&all)
        };
        assert!(same_origin(&h(&[]), true), "no Origin nor Referer: not a browser");
        assert!(same_origin(&h(&[("origin", "https://10.0.0.5:8443")]), true));
        assert!(!same_origin(&h(&[("origin", "http://10.0.0.5:8443")]), true), "scheme differs");
        assert!(!same_origin(&h(&[("origin", "https://evil.example")]), true));
        assert!(!same_origin(&h(&[("origin", "null")]), true));
        assert!(same_origin(&h(&[("referer", "https://10.0.0.5:8443/login?x")]), true));
        assert!(!same_origin(&h(&[("referer", "https://10.0.0.5:8443.evil.example/")]), true));
        assert!(!same_origin(&headers(&[("origin", "http://x")]), false), "Origin without Host");
    }

    #[test]
    fn cookie_parsing() {
        let h = headers(&[("cookie", "a=1; tg_session=abc; b=2")]);
        assert_eq!(session_cookie(&h), Some("abc"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "tg_session=def")]);
        assert_eq!(session_cookie(&h), Some("def"));
        assert_eq!(session_cookie(&headers(&[("cookie", "tg_session=")])), None);
        assert_eq!(session_cookie(&headers(&[("cookie", "xtg_session=1")])), None);
    }
}
