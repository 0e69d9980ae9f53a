//! HTTP request bodies of the management server: the login form and the admin posts (drain,
//! carrier and agent in/out of service, logout), with arbitrary bodies and content types,
//! through the real router (no password: management open on localhost; and with a password,
//! so that the login form is read). Never panics; every request gets a response.
#![no_main]

use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use trunkguard::io::http::auth::{with_auth, Auth};
use trunkguard::io::http::{app, Shared};
use trunkguard::io::mgmt::AdminPassword;

const PATHS: [&str; 6] = [
    "/login",
    "/logout",
    "/api/admin/drain",
    "/api/admin/carrier",
    "/api/admin/ai-endpoint",
    "/api/admin/drill",
];
const TYPES: [&str; 4] =
    ["application/x-www-form-urlencoded", "application/json", "text/plain", "multipart/form-data"];

#[derive(Arbitrary, Debug)]
struct Post {
    path: u8,
    content_type: u8,
    with_password: bool,
    body: Vec<u8>,
}

struct Apps {
    rt: tokio::runtime::Runtime,
    open: Router,
    locked: Router,
}

fn apps() -> &'static Apps {
    static APPS: std::sync::OnceLock<Apps> = std::sync::OnceLock::new();
    APPS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let shared = Shared::new(Instant::now());
        let password = AdminPassword::hash("fuzzing is fun 123").ok();
        let open = with_auth(app(shared.clone()), Auth::new(None, false));
        let locked = with_auth(app(shared), Auth::new(password, false));
        Apps { rt, open, locked }
    })
}

fuzz_target!(|post: Post| {
    let apps = apps();
    let path = PATHS[usize::from(post.path) % PATHS.len()];
    let content_type = TYPES[usize::from(post.content_type) % TYPES.len()];
    let router = if post.with_password { &apps.locked } else { &apps.open };
    let req = Request::post(path)
        .header("host", "127.0.0.1:8080")
        .header("origin", "http://127.0.0.1:8080")
        .header("content-type", content_type)
        .body(Body::from(post.body))
        .unwrap();
    let resp = apps.rt.block_on(router.clone().oneshot(req)).unwrap();
    let _ = apps.rt.block_on(axum::body::to_bytes(resp.into_body(), 1 << 20));
});
