//! The `/quantum/*` endpoints through the real router (no socket): VRF, Falcon-512 and ML-DSA-65
//! round trips, tampering, precise 400s, and the VRF key's dependence on suitable pool entropy.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tower::ServiceExt;

use kirq::crypto::sig::{HubSigningKey, HubVerifyingKey, SigAlg};
use kirq::daemon::Daemon;
use kirq::health::SourceHealth;
use kirq::secret::Hardening;

struct Fixture {
    d: Arc<Daemon>,
    app: axum::Router,
    _dir: tempfile::TempDir,
    _task: Option<tokio::task::JoinHandle<()>>,
}

/// A daemon with a `[quantum]` section; `allow_local` lets the VRF key come from local bytes.
fn fixture(allow_local: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut cfg) = kirq::demo::configs(dir.path(), None).unwrap();
    let mut q = kirq::demo::quantum_config(dir.path(), None).unwrap();
    if !allow_local {
        q.keygen_provenance = kirq::config::QuantumConfig::new("x".into()).keygen_provenance;
    }
    cfg.quantum = Some(q);
    let hardening = Hardening {
        no_core_dumps: false,
        memory_locked: false,
    };
    let d = Arc::new(Daemon::new(cfg, vec![], hardening));
    let task = d.start_quantum().unwrap();
    let app = kirq::http::router(d.handles())
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    Fixture {
        d,
        app,
        _dir: dir,
        _task: task,
    }
}

fn fill_local(d: &Daemon, n: usize) {
    let mut h = SourceHealth::new(20, 8.0, Duration::ZERO);
    assert!(d.pool.fill_local(n, &mut h).unwrap() > 0);
}

async fn call(app: &axum::Router, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn wait_for_vrf(app: &axum::Router) -> Value {
    for _ in 0..100 {
        let (s, v) = call(app, "GET", "/quantum/vrf/public-key", None).await;
        if s == 200 {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the VRF key was not made");
}

#[tokio::test]
async fn vrf_waits_for_entropy_then_proves_and_verifies() {
    let f = fixture(true);
    // Empty pool: no key yet, and the 503 says why.
    let (s, v) = call(&f.app, "POST", "/quantum/vrf", Some(json!({"alpha": "00"}))).await;
    assert_eq!(s, 503);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("waiting for 32 bytes"),
        "{v}"
    );
    fill_local(&f.d, 4096);
    let pk = wait_for_vrf(&f.app).await;
    let pk_hex = pk["public_key"].as_str().unwrap().to_owned();
    assert_eq!(pk["suite"], "ECVRF-EDWARDS25519-SHA512-TAI");

    let (s, a) = call(
        &f.app,
        "POST",
        "/quantum/vrf",
        Some(json!({"alpha": "616263"})),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["public_key"], pk_hex.as_str());
    assert_eq!(a["beta"].as_str().unwrap().len(), 128);
    assert_eq!(a["pi"].as_str().unwrap().len(), 160);
    // Deterministic: same alpha, same beta and pi; another alpha, another beta.
    let (_, b) = call(
        &f.app,
        "POST",
        "/quantum/vrf",
        Some(json!({"alpha": "616263"})),
    )
    .await;
    assert_eq!(a, b);
    let (_, c) = call(
        &f.app,
        "POST",
        "/quantum/vrf",
        Some(json!({"alpha": "616264"})),
    )
    .await;
    assert_ne!(a["beta"], c["beta"]);

    // Verify with the daemon's key (default) and with the key given explicitly.
    let body = json!({"alpha": "616263", "pi": a["pi"]});
    let (s, v) = call(&f.app, "POST", "/quantum/vrf/verify", Some(body)).await;
    assert_eq!(
        (s, &v["valid"], &v["beta"]),
        (200, &json!(true), &a["beta"])
    );
    let body = json!({"alpha": "616263", "pi": a["pi"], "public_key": pk_hex});
    let (_, v) = call(&f.app, "POST", "/quantum/vrf/verify", Some(body)).await;
    assert_eq!(v["valid"], true);
    // A tampered pi fails; so does another alpha.
    let mut pi = hex::decode(a["pi"].as_str().unwrap()).unwrap();
    pi[40] ^= 1;
    let body = json!({"alpha": "616263", "pi": hex::encode(&pi)});
    let (s, v) = call(&f.app, "POST", "/quantum/vrf/verify", Some(body)).await;
    assert_eq!(
        (s, &v["valid"], &v["beta"]),
        (200, &json!(false), &Value::Null)
    );
    let body = json!({"alpha": "616264", "pi": a["pi"]});
    let (_, v) = call(&f.app, "POST", "/quantum/vrf/verify", Some(body)).await;
    assert_eq!(v["valid"], false);

    // base64 in, base64 out, same values.
    let body = json!({"alpha": B64.encode(b"abc"), "encoding": "base64"});
    let (s, v) = call(&f.app, "POST", "/quantum/vrf", Some(body)).await;
    assert_eq!(s, 200);
    let beta = B64.decode(v["beta"].as_str().unwrap()).unwrap();
    assert_eq!(hex::encode(beta), a["beta"].as_str().unwrap());
}

/// Every byte that leaves the pool is counted under a consumer: the VRF key's 32 bytes count
/// under `keys`, so the per-consumer split sums to `bytes_served_total` (it was 32 short).
#[tokio::test]
async fn every_served_byte_is_counted_under_a_consumer() {
    let f = fixture(true);
    fill_local(&f.d, 4096);
    wait_for_vrf(&f.app).await;
    let (s, _) = call(
        &f.app,
        "POST",
        "/api/rng/random",
        Some(json!({"num_bytes": 100})),
    )
    .await;
    assert_eq!(s, 200);
    let (_, stats) = call(&f.app, "GET", "/api/rng/stats", None).await;
    let split: u64 = stats["bytes_served"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(stats["bytes_served_total"], 132, "{stats}");
    assert_eq!(split, 132, "the split must sum to the total: {stats}");
    assert_eq!(stats["bytes_served"]["keys"], 32, "{stats}");
    assert_eq!(stats["bytes_served"]["http"], 100, "{stats}");
}

#[tokio::test]
async fn vrf_verify_checks_rfc_vectors_under_any_key() {
    let f = fixture(true);
    let vectors: Vec<Value> = serde_json::from_str(include_str!(
        "../testdata/rfc9381_ecvrf_edwards25519_sha512_tai.json"
    ))
    .unwrap();
    for v in vectors {
        let body = json!({"alpha": v["alpha"], "pi": v["pi"], "public_key": v["pk"]});
        let (s, r) = call(&f.app, "POST", "/quantum/vrf/verify", Some(body)).await;
        assert_eq!(s, 200);
        assert_eq!(r["valid"], true, "{}", v["name"]);
        assert_eq!(r["beta"], v["beta"]);
    }
}

#[tokio::test]
async fn vrf_key_is_not_made_from_local_entropy_by_default() {
    let f = fixture(false);
    fill_local(&f.d, 4096);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, v) = call(&f.app, "GET", "/quantum/vrf/public-key", None).await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("hybrid or decentralized or qrng or hsm")
    );
    // The local bytes are still there for other consumers.
    assert_eq!(f.d.pool.len(), 4096);
}

/// One signature algorithm's endpoints.
struct SigEndpoints {
    sign: &'static str,
    verify: &'static str,
    public: &'static str,
    algorithm: &'static str,
    alg: SigAlg,
}

const FALCON: SigEndpoints = SigEndpoints {
    sign: "/quantum/falcon-signature",
    verify: "/quantum/falcon-verify",
    public: "/quantum/falcon-public-key",
    algorithm: "Falcon-512",
    alg: SigAlg::Falcon512,
};

const ML_DSA: SigEndpoints = SigEndpoints {
    sign: "/quantum/ml-dsa-signature",
    verify: "/quantum/ml-dsa-verify",
    public: "/quantum/ml-dsa-public-key",
    algorithm: "ML-DSA-65",
    alg: SigAlg::MlDsa65,
};

async fn sign_verify_tamper_and_served_key(e: &SigEndpoints) {
    let f = fixture(true);
    let msg = hex::encode(b"TAO Signal round 42");
    let (s, a) = call(&f.app, "POST", e.sign, Some(json!({"message": msg}))).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["algorithm"], e.algorithm);
    let sig = hex::decode(a["signature"].as_str().unwrap()).unwrap();
    let (lo, hi) = e.alg.signature_len();
    assert!((lo..=hi).contains(&sig.len()), "{}", sig.len());

    // The served public key is the one in the answer, and it verifies the signature offline.
    let (s, pk) = call(&f.app, "GET", e.public, None).await;
    assert_eq!(s, 200);
    assert_eq!(pk["public_key"], a["public_key"]);
    assert_eq!(pk["algorithm"], e.algorithm);
    let pk_bytes = hex::decode(pk["public_key"].as_str().unwrap()).unwrap();
    let vk = HubVerifyingKey::from_bytes(e.alg, &pk_bytes).unwrap();
    assert!(vk.verify(b"TAO Signal round 42", &sig));
    assert_eq!(pk["key_id"], vk.id().to_string());

    let verify = |body: Value| {
        let app = f.app.clone();
        async move { call(&app, "POST", e.verify, Some(body)).await }
    };
    let (s, v) = verify(json!({"message": msg, "signature": a["signature"]})).await;
    assert_eq!((s, &v["valid"]), (200, &json!(true)));
    assert_eq!(v["algorithm"], e.algorithm);
    let (_, v) = verify(json!({"message": msg, "signature": a["signature"],
        "public_key": a["public_key"]}))
    .await;
    assert_eq!(v["valid"], true);
    // Every single changed byte of the signature fails (a sample across its length).
    for i in (0..sig.len()).step_by(37).chain([sig.len() - 1]) {
        let mut bad = sig.clone();
        bad[i] ^= 0x01;
        let (s, v) = verify(json!({"message": msg, "signature": hex::encode(&bad)})).await;
        assert_eq!((s, &v["valid"]), (200, &json!(false)), "byte {i}");
    }
    // Another message fails; so does another (valid-looking) public key.
    let (_, v) = verify(json!({"message": "00", "signature": a["signature"]})).await;
    assert_eq!(v["valid"], false);
    let (_, v) = verify(json!({"message": msg, "signature": a["signature"],
        "public_key": hex::encode(HubSigningKey::generate(e.alg).verifying_key().as_bytes())}))
    .await;
    assert_eq!(v["valid"], false);
}

#[tokio::test]
async fn falcon_sign_verify_tamper_and_served_key() {
    sign_verify_tamper_and_served_key(&FALCON).await;
}

#[tokio::test]
async fn ml_dsa_sign_verify_tamper_and_served_key() {
    sign_verify_tamper_and_served_key(&ML_DSA).await;
}

/// A signature of one algorithm never verifies at the other's endpoint: the lengths differ, so
/// the request is refused with the field named; and the two service keys are distinct.
#[tokio::test]
async fn signatures_do_not_cross_algorithms() {
    let f = fixture(true);
    let msg = hex::encode(b"m");
    for (from, to, want) in [
        (
            &FALCON,
            &ML_DSA,
            "`signature` must decode to exactly 3309 bytes",
        ),
        (&ML_DSA, &FALCON, "`signature` must decode to 1..=752 bytes"),
    ] {
        let (_, a) = call(&f.app, "POST", from.sign, Some(json!({"message": msg}))).await;
        let body = json!({"message": msg, "signature": a["signature"]});
        let (s, v) = call(&f.app, "POST", to.verify, Some(body)).await;
        assert_eq!(s, 400);
        assert!(v["error"].as_str().unwrap().contains(want), "{v}");
    }
    let (_, fk) = call(&f.app, "GET", FALCON.public, None).await;
    let (_, mk) = call(&f.app, "GET", ML_DSA.public, None).await;
    assert_ne!(fk["key_id"], mk["key_id"]);
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let f = fixture(true);
    let cases = [
        (
            "/quantum/falcon-signature",
            json!({}),
            "`message` is required",
        ),
        (
            "/quantum/falcon-signature",
            json!({"message": "zz"}),
            "`message` is not valid hex",
        ),
        (
            "/quantum/falcon-signature",
            json!({"message": "QQ", "encoding": "base64"}),
            "`message` is not valid base64",
        ),
        (
            "/quantum/falcon-signature",
            json!({"message": 5}),
            "`message` must be a hex string",
        ),
        (
            "/quantum/falcon-signature",
            json!({"message": "", "encoding": "b32"}),
            "`encoding`",
        ),
        (
            "/quantum/falcon-signature",
            json!({"message": "", "extra": 1}),
            "unknown field `extra`",
        ),
        (
            "/quantum/falcon-verify",
            json!({"message": "", "signature": ""}),
            "`signature` must",
        ),
        (
            "/quantum/falcon-verify",
            json!({"message": "", "signature": "00", "public_key": "00"}),
            "`public_key` must decode to exactly 897 bytes",
        ),
        (
            "/quantum/ml-dsa-verify",
            json!({"message": "", "signature": hex::encode([0u8; 3309]), "public_key": "00"}),
            "`public_key` must decode to exactly 1952 bytes",
        ),
        (
            "/quantum/ml-dsa-signature",
            json!({"message": "", "context": "00"}),
            "unknown field `context`",
        ),
        (
            "/quantum/vrf/verify",
            json!({"alpha": "", "pi": "00"}),
            "`pi` must decode to exactly 80",
        ),
        (
            "/quantum/vrf/verify",
            json!({"pi": "00"}),
            "`alpha` is required",
        ),
    ];
    for (path, body, want) in cases {
        let (s, v) = call(&f.app, "POST", path, Some(body.clone())).await;
        assert_eq!(s, 400, "{path} {body}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(want),
            "{path} {body}: {v}"
        );
    }
    // Not JSON at all.
    let req = Request::builder()
        .method("POST")
        .uri("/quantum/falcon-signature")
        .body(Body::from("not json"))
        .unwrap();
    let resp = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn message_size_is_bounded() {
    let f = fixture(true);
    let max = 64 * 1024;
    let ok = hex::encode(vec![7u8; max]);
    let (s, _) = call(
        &f.app,
        "POST",
        "/quantum/falcon-signature",
        Some(json!({"message": ok})),
    )
    .await;
    assert_eq!(s, 200);
    let over = hex::encode(vec![7u8; max + 1]);
    let (s, v) = call(
        &f.app,
        "POST",
        "/quantum/falcon-signature",
        Some(json!({"message": over})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("`message` must decode to 0..=65536")
    );
    // A body far beyond any valid request is cut off with a JSON 413.
    let huge = "a".repeat(4 * max);
    let (s, v) = call(
        &f.app,
        "POST",
        "/quantum/falcon-signature",
        Some(json!({"message": huge})),
    )
    .await;
    assert_eq!(s, 413);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("request body exceeds")
    );
}

#[tokio::test]
async fn quantum_endpoints_answer_503_without_a_quantum_section() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = kirq::demo::configs(dir.path(), None).unwrap();
    let hardening = Hardening {
        no_core_dumps: false,
        memory_locked: false,
    };
    let d = Arc::new(Daemon::new(cfg, vec![], hardening));
    assert!(d.start_quantum().unwrap().is_none());
    let app = kirq::http::router(d.handles())
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
    let (s, v) = call(
        &app,
        "POST",
        "/quantum/falcon-signature",
        Some(json!({"message": ""})),
    )
    .await;
    assert_eq!(s, 503);
    assert!(v["error"].as_str().unwrap().contains("[quantum]"));
    let (s, v) = call(&app, "GET", ML_DSA.public, None).await;
    assert_eq!(s, 503);
    assert!(v["error"].as_str().unwrap().contains("[quantum]"));
    let (s, _) = call(&app, "GET", "/openapi.json", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn quantum_endpoints_share_the_allowlist_and_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut cfg) = kirq::demo::configs(dir.path(), None).unwrap();
    cfg.quantum = Some(kirq::demo::quantum_config(dir.path(), None).unwrap());
    cfg.http.rate_limit_per_second = 1;
    cfg.http.rate_limit_burst = 2;
    let hardening = Hardening {
        no_core_dumps: false,
        memory_locked: false,
    };
    let d = Arc::new(Daemon::new(cfg, vec![], hardening));
    let _task = d.start_quantum().unwrap();
    let app = kirq::http::router(d.handles());
    let local = app
        .clone()
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 2))));
    let body = json!({"message": "00"});
    let mut statuses = vec![];
    for _ in 0..3 {
        let (s, _) = call(
            &local,
            "POST",
            "/quantum/falcon-signature",
            Some(body.clone()),
        )
        .await;
        statuses.push(s);
    }
    assert_eq!(statuses, [200, 200, 429]);
    let remote = app.layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 1], 2))));
    let (s, v) = call(&remote, "POST", "/quantum/vrf", Some(json!({"alpha": ""}))).await;
    assert_eq!(s, 403, "{v}");
}
