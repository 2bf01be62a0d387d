//! The `/quantum/*` bodies (VRF prove/verify, Falcon sign/verify): byte 0 picks the endpoint, the
//! rest is the body. Never panics, never a 5xx other than the designed 503 (no key configured).
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

const PATHS: [&str; 4] = [
    "/quantum/vrf",
    "/quantum/vrf/verify",
    "/quantum/falcon-signature",
    "/quantum/falcon-verify",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let app = kirq::http::router(kirq_fuzz::daemon().handles());
    let req = Request::builder()
        .method("POST")
        .uri(PATHS[usize::from(sel) % PATHS.len()])
        .header("content-type", "application/json")
        .extension(kirq_fuzz::loopback_peer())
        .body(Body::from(body.to_vec()))
        .unwrap();
    kirq_fuzz::call(app, req);
});
