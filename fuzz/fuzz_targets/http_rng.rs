//! The HTTP shim's bodies: byte 0 picks the endpoint (`/api/rng/random`, the plain-HTTP
//! `/api/rng/receive`, health, stats, metrics, the mutual-TLS `/api/rng/receive`), the rest is the
//! body. Never panics, never a 5xx other than the designed 503.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let d = kirq_fuzz::daemon().clone();
    let (method, path, app) = match sel % 6 {
        0 => ("POST", "/api/rng/random", kirq::http::router(d.handles())),
        1 => ("POST", "/api/rng/receive", kirq::http::router(d.handles())),
        2 => ("GET", "/api/rng/health", kirq::http::router(d.handles())),
        3 => ("GET", "/api/rng/stats", kirq::http::router(d.handles())),
        4 => ("GET", "/metrics", kirq::http::router(d.handles())),
        _ => (
            "POST",
            "/api/rng/receive",
            kirq::http::receive_router(d.handles()),
        ),
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(
            "content-type",
            if sel & 8 == 0 {
                "application/json"
            } else {
                "application/octet-stream"
            },
        )
        .header(
            kirq::wire::refill::TRANSPORT_HEADER,
            kirq::wire::refill::TRANSPORT_VERSION,
        )
        .extension(kirq_fuzz::loopback_peer())
        .body(Body::from(body.to_vec()))
        .unwrap();
    kirq_fuzz::call(app, req);
});
