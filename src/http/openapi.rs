//! The OpenAPI 3.1 contract of the HTTP API, generated from the handlers' annotations (utoipa).
//!
//! [`document`] is what `GET /openapi.json` serves, what `kirqd openapi` prints, and what the
//! committed `openapi.json` must equal (a test compares them). The `/quantum/*` request schemas
//! are built from the same tables the parsers use; the `/api/rng/*` handlers answer with the
//! response types here (the one exception, `POST /api/rng/random`, writes [`RandomResponse`]'s
//! shape by hand so no JSON value ever holds the secret), and the schemathesis run against a live
//! daemon checks that real answers match them.

use std::collections::BTreeMap;

use utoipa::openapi::{Info, OpenApi as Doc};
use utoipa::{OpenApi, ToSchema};

use super::quantum;
use super::rng;

/// `POST /api/rng/random` request body.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RandomRequestBody {
    /// How many bytes to take from the pool.
    #[schema(minimum = 1, maximum = 65536)]
    pub num_bytes: u32,
    /// Encoding of `random_data` (default hex).
    #[serde(default)]
    #[schema(nullable = false)]
    pub encoding: Option<quantum::Encoding>,
    /// Which provenance class to serve from (default any).
    #[serde(default)]
    #[schema(nullable = false)]
    pub source: Option<SourceWanted>,
}

/// A provenance class a consumer asks for.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceWanted {
    Any,
    Hybrid,
    Qrng,
    Hsm,
    Decentralized,
    Local,
}

/// Where served bytes came from: one class, or `mixed`.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceServed {
    Hybrid,
    Qrng,
    Hsm,
    Decentralized,
    Local,
    Mixed,
}

/// `POST /api/rng/random` answer. Each byte is served once and then erased from the pool.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct RandomResponse {
    /// The random bytes, hex or base64.
    pub random_data: String,
    pub num_bytes: u32,
    pub encoding: quantum::Encoding,
    pub source: SourceServed,
    /// Bytes served per provenance class (classes with none are left out).
    pub provenance: BTreeMap<String, u64>,
    /// Always true: the bytes were removed from the pool.
    pub consumed: bool,
    /// RFC 3339 UTC time of serving.
    pub timestamp: String,
}

/// `POST /api/rng/receive` answer (mutual-TLS listener).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ReceiveResponse {
    pub status: Accepted,
    /// The packet's nonce, hex.
    pub id: String,
    /// Entropy bytes admitted to the pool.
    pub bytes: u64,
}

/// The outcome named in a `POST /api/rng/receive` success.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Accepted {
    Accepted,
}

/// One hub as the daemon sees it.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct HubHealth {
    pub url: String,
    pub reachable: bool,
    pub last_answer_age_seconds: Option<f64>,
    pub last_error: Option<String>,
}

/// One source's quality score and state.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SourceHealth {
    pub quality: f64,
    pub status: crate::health::Status,
}

#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
    Critical,
}

/// What process hardening held (memory locked, core dumps off, pool in memfd_secret memory).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Hardening {
    pub no_core_dumps: bool,
    pub memory_locked: bool,
    pub pool_secret_memory: bool,
}

/// `GET /api/rng/health` answer.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct HealthResponse {
    pub status: HealthStatus,
    pub daemon_id: String,
    pub pool: crate::pool::Snapshot,
    pub low_watermark_bytes: u64,
    pub hubs: Vec<HubHealth>,
    pub last_packet_age_seconds: Option<f64>,
    pub fallback_active: bool,
    pub sources: BTreeMap<String, SourceHealth>,
    pub memory: Hardening,
    pub uptime_seconds: u64,
    pub device: crate::device::DeviceStatus,
    pub kernel_feeder: crate::kernel::FeederStatus,
}

/// `GET /api/rng/stats` answer: counters read back from the metrics.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct StatsResponse {
    pub bytes_admitted: BTreeMap<String, u64>,
    pub bytes_admitted_total: u64,
    pub bytes_served: BTreeMap<String, u64>,
    pub bytes_served_total: u64,
    pub packets_accepted: u64,
    /// Rejected packets per reason.
    pub packets_rejected: BTreeMap<String, u64>,
    /// Requests per `consumer_outcome` (only non-zero ones).
    pub requests: BTreeMap<String, u64>,
    pub replay_cache_entries: u64,
    pub tls_handshake_failures: u64,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kirqd HTTP API",
        description = "Kirq's daemon: single-use verified entropy (`/api/rng/*`), an RFC 9381 VRF \
                       and Falcon-512 and ML-DSA-65 signatures with the daemon's keys (`/quantum/*`), and \
                       Prometheus metrics. Every endpoint is behind the http.allow allowlist and a \
                       per-address rate limit. Errors are `{\"error\": ...}`.",
        license(name = "Apache-2.0"),
    ),
    paths(
        rng::random,
        rng::health,
        rng::stats,
        rng::receive,
        rng::metrics,
        quantum::vrf,
        quantum::vrf_verify,
        quantum::vrf_public_key,
        quantum::falcon_signature,
        quantum::falcon_verify,
        quantum::falcon_public_key,
        quantum::ml_dsa_signature,
        quantum::ml_dsa_verify,
        quantum::ml_dsa_public_key,
        openapi_json,
    ),
    tags(
        (name = "rng", description = "Single-use entropy from the pool"),
        (name = "quantum", description = "VRF and post-quantum signatures with kirqd's keys"),
        (name = "meta", description = "Metrics and this document"),
    )
)]
struct ApiDoc;

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"),
        (status = 403, description = "Client not in http.allow", body = super::ErrorBody),
        (status = 429, description = "Rate limited", body = super::ErrorBody),
    ))]
pub async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    static JSON: std::sync::LazyLock<String> = std::sync::LazyLock::new(json);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        JSON.as_str(),
    )
        .into_response()
}

/// The generated document. The version is fixed (not the crate's) so the committed file does not
/// change with every release.
pub fn document() -> Doc {
    let mut doc = ApiDoc::openapi();
    doc.info = Info::builder()
        .title(doc.info.title.clone())
        .description(doc.info.description.clone())
        .license(doc.info.license.clone())
        .version("1")
        .build();
    doc
}

/// The document as pretty JSON with a final newline, exactly as committed in `openapi.json`.
pub fn json() -> String {
    let mut s = document()
        .to_pretty_json()
        .expect("an OpenAPI document serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_openapi_json_is_current() {
        let committed = include_str!("../../openapi.json");
        let generated = super::json();
        assert!(
            committed == generated,
            "openapi.json is stale: regenerate it with `cargo run --bin kirqd -- openapi > \
             openapi.json` and commit it"
        );
    }

    #[test]
    fn document_is_openapi_3_1_and_covers_every_route() {
        let v: serde_json::Value = serde_json::from_str(&super::json()).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/api/rng/random",
            "/api/rng/health",
            "/api/rng/stats",
            "/api/rng/receive",
            "/metrics",
            "/quantum/vrf",
            "/quantum/vrf/verify",
            "/quantum/vrf/public-key",
            "/quantum/falcon-signature",
            "/quantum/falcon-verify",
            "/quantum/falcon-public-key",
            "/quantum/ml-dsa-signature",
            "/quantum/ml-dsa-verify",
            "/quantum/ml-dsa-public-key",
            "/openapi.json",
        ] {
            assert!(v["paths"][path].is_object(), "{path} missing");
        }
    }
}
