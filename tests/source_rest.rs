//! The `rest` source against a loopback HTTPS server that answers in each preset's real shape
//! (ANU legacy and current, Qrypt, Quantis) and in every failure shape; each failure must set the
//! right backoff or rejection, and no packet may be built from it.

// Helpers outside #[test] fns unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use common::sources::{TlsServer, factory, https_server, random, source_from_toml};
use kirq::config::HybridConfig;
use kirq::metrics::HubMetrics;
use kirq::wire::{Packet, SourceKind};

#[derive(Default)]
struct Log {
    /// Every byte served, in order.
    served: Vec<u8>,
    /// Requests per route.
    hits: HashMap<String, usize>,
}

type S = Arc<Mutex<Log>>;
type Q = Query<HashMap<String, String>>;

fn hit(s: &S, route: &str) {
    *s.lock().unwrap().hits.entry(route.to_owned()).or_default() += 1;
}

fn serve(s: &S, n: usize) -> Vec<u8> {
    let b = random(n);
    s.lock().unwrap().served.extend_from_slice(&b);
    b
}

fn num(q: &Q, k: &str) -> usize {
    q.get(k).and_then(|v| v.parse().ok()).unwrap()
}

async fn anu_legacy(State(s): State<S>, q: Q) -> Response {
    hit(&s, "anu-legacy");
    assert_eq!(q.get("type").map(String::as_str), Some("uint8"));
    let n = num(&q, "length");
    assert!((1..=1024).contains(&n), "ANU allows 1..=1024 values");
    let data = serve(&s, n);
    axum::Json(serde_json::json!({"type": "uint8", "length": n, "data": data, "success": true}))
        .into_response()
}

async fn anu(State(s): State<S>, headers: HeaderMap, q: Q) -> Response {
    hit(&s, "anu");
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some("anu-secret-token") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let n = num(&q, "length");
    let data = serve(&s, n);
    axum::Json(serde_json::json!({"type": "uint8", "length": n, "data": data, "success": true}))
        .into_response()
}

async fn qrypt(State(s): State<S>, headers: HeaderMap, q: Q) -> Response {
    hit(&s, "qrypt");
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some("Bearer qrypt-secret-token")
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let kib = num(&q, "size");
    let random: Vec<String> = (0..kib)
        .map(|_| base64::engine::general_purpose::STANDARD.encode(serve(&s, 1024)))
        .collect();
    axum::Json(serde_json::json!({"random": random, "size": kib})).into_response()
}

async fn quantis(State(s): State<S>, q: Q) -> Response {
    hit(&s, "quantis");
    let n = num(&q, "size");
    let b = serve(&s, n);
    ([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response()
}

fn uint8_json(values: &[u32]) -> Response {
    axum::Json(serde_json::json!({ "data": values })).into_response()
}

/// A service of our own: POST with a JSON body, nested data in the format the body asks for.
async fn custom(State(s): State<S>, headers: HeaderMap, body: Bytes) -> Response {
    hit(&s, "custom");
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    if headers.get("x-token").and_then(|v| v.to_str().ok()) != Some("custom-secret-token") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let n = req["bytes"].as_u64().unwrap() as usize;
    let data = serve(&s, n);
    let encoded = match req["encoding"].as_str().unwrap() {
        // Two strings, to show lists of strings are joined in order.
        "hex" => serde_json::json!([hex::encode(&data[..n / 2]), hex::encode(&data[n / 2..])]),
        "base64url" => {
            serde_json::json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&data))
        }
        "uint16" => serde_json::json!(
            data.chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect::<Vec<_>>()
        ),
        other => panic!("encoding {other}"),
    };
    axum::Json(serde_json::json!({"result": {"data": encoded}})).into_response()
}

/// One failure shape per route.
async fn fail(State(s): State<S>, Path(case): Path<String>, q: Q) -> Response {
    hit(&s, &case);
    let n = num(&q, "n");
    let fine: Vec<u32> = random(n).into_iter().map(u32::from).collect();
    match case.as_str() {
        "401" => StatusCode::UNAUTHORIZED.into_response(),
        "400" => StatusCode::BAD_REQUEST.into_response(),
        "403" => StatusCode::FORBIDDEN.into_response(),
        "429" => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "7")]).into_response(),
        "500" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "timeout" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            uint8_json(&fine)
        }
        "truncated" => {
            // Headers and the start of the body go out, then the connection drops.
            let parts = futures::stream::unfold(0, |i| async move {
                match i {
                    0 => Some((Ok(Bytes::from_static(b"{\"data\":[1,2,3,")), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((Err(std::io::Error::other("connection lost")), 2))
                    }
                    _ => None,
                }
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(parts))
                .unwrap()
        }
        "html" => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>maintenance</body></html>",
        )
            .into_response(),
        "oversized" => {
            let big: Vec<u32> = vec![200; 20_000];
            uint8_json(&big)
        }
        "out-of-range" => {
            let mut v = fine;
            v[n / 2] = 256;
            uint8_json(&v)
        }
        "short" => uint8_json(&fine[..n - 1]),
        "not-array" => axum::Json(serde_json::json!({"data": "00ff"})).into_response(),
        other => panic!("no case {other}"),
    }
}

async fn server() -> (TlsServer, S) {
    let state: S = Arc::default();
    let router = Router::new()
        .route("/API/jsonI.php", get(anu_legacy))
        .route("/", get(anu))
        .route("/api/v1/quantum-entropy", get(qrypt))
        .route("/api/2.0/streambytes", get(quantis))
        .route("/fail/{case}", any(fail))
        .route("/custom", post(custom))
        .with_state(state.clone());
    (https_server(router).await, state)
}

fn token_file(srv: &TlsServer, name: &str, token: &str) -> String {
    let p = srv.dir.path().join(name);
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn presets_fetch_exactly_what_the_service_served() {
    let (srv, log) = server().await;
    let base = srv.base();
    let ca = srv.ca_path.display();
    let anu_tok = token_file(&srv, "anu.tok", "anu-secret-token");
    let qrypt_tok = token_file(&srv, "qrypt.tok", "qrypt-secret-token");
    let cases = [
        ("anu-legacy", String::new(), 2500, 3),
        ("anu", format!("token_file = \"{anu_tok}\""), 2048, 2),
        ("qrypt", format!("token_file = \"{qrypt_tok}\""), 1500, 1),
        ("quantis", String::new(), 4096, 1),
    ];
    for (preset, extra, n, calls) in cases {
        let (src, _) = source_from_toml(&format!(
            "type = \"rest\"\nid = \"{preset}\"\npreset = \"{preset}\"\nbase_url = \"{base}\"\n\
             ca_cert = \"{ca}\"\n{extra}"
        ));
        assert_eq!(src.kind(), SourceKind::Qrng);
        log.lock().unwrap().served.clear();
        let got = src
            .fetch(n)
            .await
            .unwrap_or_else(|e| panic!("{preset}: {e}"));
        let l = log.lock().unwrap();
        assert_eq!(got.len(), n, "{preset}");
        // Qrypt serves whole KiB: the source uses the first n bytes.
        assert_eq!(got.expose(), &l.served[..n], "{preset}");
        assert_eq!(l.hits[preset], calls, "{preset}: calls");
        assert!(
            !format!("{src:?}").contains("secret-token"),
            "Debug hides the token"
        );
    }
}

#[tokio::test]
async fn a_generic_service_with_post_body_and_each_string_format() {
    let (srv, log) = server().await;
    let tok = token_file(&srv, "custom.tok", "custom-secret-token");
    for format in ["hex", "base64url", "uint16"] {
        let body = format!(r#"{{"bytes": {{n}}, "encoding": "{format}"}}"#);
        let (src, _) = source_from_toml(&format!(
            "type = \"rest\"\nid = \"mine\"\nmethod = \"POST\"\nurl = \"{}/custom\"\n\
             body = '{body}'\nauth_header = \"x-token\"\ntoken_file = \"{tok}\"\n\
             data_pointer = \"/result/data\"\nformat = \"{format}\"\nmax_bytes_per_call = 500\n\
             ca_cert = \"{}\"",
            srv.base(),
            srv.ca_path.display()
        ));
        log.lock().unwrap().served.clear();
        let got = src
            .fetch(1200)
            .await
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(got.expose(), &log.lock().unwrap().served[..], "{format}");
    }
    // 1200 bytes at 500 a call: three calls per format.
    assert_eq!(log.lock().unwrap().hits["custom"], 9);
}

#[tokio::test]
async fn a_preset_source_feeds_signed_packets_with_exact_provenance() {
    let (srv, _log) = server().await;
    let (src, settings) = source_from_toml(&format!(
        "type = \"rest\"\nid = \"quantis-lab\"\npreset = \"quantis\"\nbase_url = \"{}\"\n\
         ca_cert = \"{}\"\nmin_entropy_per_byte = 4",
        srv.base(),
        srv.ca_path.display()
    ));
    let f = factory(vec![(src, settings)], HybridConfig::default());
    let m = HubMetrics::new();
    let bytes = f.build("d1", 1024, &m).await.unwrap();
    let p = Packet::decode(&bytes).unwrap().packet;
    assert_eq!(p.entropy.len(), 1024);
    assert_eq!(p.provenance.len(), 1);
    assert_eq!(p.provenance[0].id, "quantis-lab");
    assert_eq!(p.provenance[0].kind, SourceKind::Qrng);
    // 4 bits per byte declared: twice the raw bytes for the same credit.
    assert_eq!(p.provenance[0].byte_count, 2048);
}

/// What one failing call did to a hub with only that source.
struct Outcome {
    error: String,
    status: &'static str,
    reason: String,
    retry_in_ms: Option<u64>,
    hits: usize,
    hits_after_retry: usize,
    failures: u64,
}

async fn failing(case: &str, reason_label: &str) -> Outcome {
    let (srv, log) = server().await;
    let tok = token_file(&srv, "t", "fail-secret-token");
    let (src, settings) = source_from_toml(&format!(
        "type = \"rest\"\nid = \"svc\"\nurl = \"{}/fail/{case}?n={{n}}\"\nformat = \"uint8\"\n\
         data_pointer = \"/data\"\nca_cert = \"{}\"\nauth_header = \"Authorization\"\n\
         auth_prefix = \"Bearer \"\ntoken_file = \"{tok}\"\ntimeout_ms = 400\nquota_wait_secs = 120",
        srv.base(),
        srv.ca_path.display()
    ));
    let f = factory(vec![(src, settings)], HybridConfig::default());
    let m = HubMetrics::new();
    let error = f.build("d1", 64, &m).await.unwrap_err().to_string();
    assert_eq!(
        m.packets_built.get(),
        0,
        "{case}: no packet from a failed fetch"
    );
    let r = f.sources()[0].report();
    let hits = log.lock().unwrap().hits[case];
    // Asking again at once must not reach the server: the source is backing off or disabled.
    assert!(f.build("d1", 64, &m).await.is_err());
    let hits_after_retry = log.lock().unwrap().hits[case];
    let failures = m
        .source_failures
        .get_or_create(&[("source", "svc".into()), ("reason", reason_label.into())])
        .get();
    let o = Outcome {
        error,
        status: r.status.as_str(),
        reason: r.reason.unwrap_or_default(),
        retry_in_ms: r.retry_in_ms,
        hits,
        hits_after_retry,
        failures,
    };
    assert!(!o.reason.contains("fail-secret-token") && !o.error.contains("fail-secret-token"));
    o
}

fn near(ms: Option<u64>, want: u64) -> bool {
    ms.is_some_and(|ms| ms <= want && ms + 2_000 > want)
}

#[tokio::test]
async fn unauthorised_and_bad_request_disable_the_source() {
    for case in ["401", "400"] {
        let o = failing(case, "fatal").await;
        assert_eq!(o.status, "quarantined", "{case}");
        assert!(
            o.reason.contains(&format!("disabled: HTTP {case}")),
            "{}",
            o.reason
        );
        assert_eq!(o.retry_in_ms, None);
        assert_eq!((o.hits, o.hits_after_retry, o.failures), (1, 1, 1));
    }
}

#[tokio::test]
async fn quota_waits_and_429_honours_retry_after() {
    let o = failing("403", "quota").await;
    assert_eq!(o.status, "degraded");
    assert!(o.reason.contains("quota"), "{}", o.reason);
    assert!(near(o.retry_in_ms, 120_000), "{:?}", o.retry_in_ms);
    assert_eq!((o.hits, o.hits_after_retry), (1, 1));
    let o = failing("429", "rate_limited").await;
    assert!(near(o.retry_in_ms, 7_000), "{:?}", o.retry_in_ms);
    assert_eq!((o.hits, o.hits_after_retry), (1, 1));
}

#[tokio::test]
async fn server_errors_and_timeouts_back_off_exponentially() {
    let o = failing("500", "unavailable").await;
    assert_eq!(o.status, "degraded");
    assert!(o.reason.contains("HTTP 500"), "{}", o.reason);
    assert!(near(o.retry_in_ms, 1_000), "{:?}", o.retry_in_ms);
    assert_eq!((o.hits, o.hits_after_retry, o.failures), (1, 1, 1));
    let o = failing("timeout", "timeout").await;
    assert!(o.reason.contains("timed out"), "{}", o.reason);
    assert!(near(o.retry_in_ms, 1_000), "{:?}", o.retry_in_ms);
}

#[tokio::test]
async fn malformed_bodies_are_rejected_whole() {
    for (case, says) in [
        ("truncated", "truncated"),
        ("html", "not JSON"),
        ("oversized", "limit"),
        ("out-of-range", "out of range 0..=255"),
        ("short", "wrong length: 63 bytes, expected 64"),
        ("not-array", "not an array"),
    ] {
        let o = failing(case, "bad_response").await;
        assert!(o.error.contains("no healthy source"), "{case}: {}", o.error);
        assert_eq!(o.status, "degraded", "{case}");
        assert!(o.reason.contains(says), "{case}: {}", o.reason);
        assert!(near(o.retry_in_ms, 1_000), "{case}: {:?}", o.retry_in_ms);
        assert_eq!(
            (o.hits, o.hits_after_retry, o.failures),
            (1, 1, 1),
            "{case}"
        );
    }
}

#[tokio::test]
async fn octets_of_the_wrong_content_type_are_refused() {
    let (srv, _) = server().await;
    let (src, _) = source_from_toml(&format!(
        "type = \"rest\"\nurl = \"{}/fail/html?n={{n}}\"\nformat = \"octets\"\nca_cert = \"{}\"",
        srv.base(),
        srv.ca_path.display()
    ));
    let e = src.fetch(16).await.unwrap_err().to_string();
    assert!(e.contains("expected application/octet-stream"), "{e}");
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_refused() {
    let (srv, _) = server().await;
    // No ca_cert: the system roots do not know the test CA.
    let (src, _) = source_from_toml(&format!(
        "type = \"rest\"\npreset = \"quantis\"\nbase_url = \"{}\"",
        srv.base()
    ));
    let e = src.fetch(16).await.unwrap_err();
    assert_eq!(e.reason(), "unavailable", "{e}");
}
