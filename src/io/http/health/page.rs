//! The status page: HTML, CSS, JS and icon embedded in the binary (`include_str!`), so it works
//! with no internet. The page polls `/api/status` and `/readyz` every second. A strict Content
//! Security Policy (scripts and styles from this origin only, no inline script) backs up the
//! script's rule of putting data in the page as text only.
//!
//! The page's Operator card drives the management API of [`crate::io::http::auth`] and
//! [`crate::io::http::admin`] with `fetch`: the login form (`POST /login`, form body), and when
//! allowed the drain switch and per carrier / AI endpoint service buttons (`POST /api/admin/*`,
//! JSON body, `X-CSRF-Token` from `GET /api/session`), and logout.

use std::sync::Arc;

use axum::http::header::{self, HeaderName};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::super::Shared;

pub const INDEX_HTML: &str = include_str!("assets/index.html");
pub const STYLE_CSS: &str = include_str!("assets/style.css");
pub const APP_JS: &str = include_str!("assets/app.js");
pub const FAVICON_SVG: &str = include_str!("assets/favicon.svg");

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/assets/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON_SVG) }))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (HeaderName::from_static("referrer-policy"), "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
