//! The HTTP faces of kirqd.
//!
//! [`router`] is the local shim for consumers (TAO Signal endpoints): `POST /api/rng/random`,
//! `GET /api/rng/health`, `GET /api/rng/stats`, `GET /metrics`, the VRF, Falcon-512 and ML-DSA-65 endpoints
//! under `/quantum/` ([`quantum`]) and its own OpenAPI document at `GET /openapi.json`
//! ([`openapi`]). It binds to loopback by default
//! and every request passes an allowlist and a per-address token bucket first. [`receive_router`]
//! serves `POST /api/rng/receive` and is mounted only on the mutual-TLS listener; the shim answers
//! that path with 403 so a misdirected hub learns why.
//!
//! Errors follow one shape: `{"error": "..."}` naming the bad field, with the status code that
//! fits; packet rejections add `"reason"` (the same label as in stats and metrics).

mod limit;
pub mod openapi;
pub mod quantum;
mod rng;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// Most `/api/rng/random` requests waiting for a refill at once; more are answered 503 at once.
pub const MAX_HTTP_WAITERS: usize = 1024;

/// What the daemon's HTTP faces serve: handles to the parts they read and the settings they
/// apply, not the daemon. Built by [`crate::daemon::Daemon::handles`].
#[derive(Debug, Clone)]
pub struct Handles {
    pub id: String,
    pub http: crate::config::HttpConfig,
    /// `receive.max_body_bytes`: the largest pushed packet read.
    pub max_body_bytes: usize,
    /// `quantum.max_message_bytes` (or its default without `[quantum]`).
    pub max_message_bytes: usize,
    pub low_watermark_bytes: usize,
    pub pool: Arc<crate::pool::Pool>,
    pub supply: crate::supply::Supply,
    pub keys: Arc<crate::quantum::Keys>,
    pub metrics: Arc<crate::metrics::DaemonMetrics>,
    pub device: tokio::sync::watch::Receiver<crate::device::DeviceStatus>,
    pub kernel: tokio::sync::watch::Receiver<crate::kernel::FeederStatus>,
    pub hardening: crate::secret::Hardening,
    pub started: Instant,
    /// Requests allowed to wait for a refill at once ([`MAX_HTTP_WAITERS`]).
    pub waiters: Arc<tokio::sync::Semaphore>,
}

/// An API error: status plus a message for the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub reason: Option<&'static str>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            reason: None,
            retry_after: None,
        }
    }
}

/// The body of every error answer of this face: `{"error": ..., "reason"?: ...}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong, naming the field for a bad request.
    pub error: String,
    /// A stable label for some errors (e.g. `pool_depleted`, `key_unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            reason: self.reason,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        resp
    }
}

/// The consumer-facing shim.
pub fn router(d: Handles) -> Router {
    let d = Arc::new(d);
    let limiter = Arc::new(limit::Limiter::new(&d.http));
    Router::new()
        .route("/api/rng/random", post(rng::random))
        .route("/api/rng/health", get(rng::health))
        .route("/api/rng/stats", get(rng::stats))
        .route("/metrics", get(rng::metrics))
        .route("/api/rng/receive", post(rng::receive_on_plain))
        .route("/quantum/vrf", post(quantum::vrf))
        .route("/quantum/vrf/verify", post(quantum::vrf_verify))
        .route("/quantum/vrf/public-key", get(quantum::vrf_public_key))
        .route("/quantum/falcon-signature", post(quantum::falcon_signature))
        .route("/quantum/falcon-verify", post(quantum::falcon_verify))
        .route(
            "/quantum/falcon-public-key",
            get(quantum::falcon_public_key),
        )
        .route("/quantum/ml-dsa-signature", post(quantum::ml_dsa_signature))
        .route("/quantum/ml-dsa-verify", post(quantum::ml_dsa_verify))
        .route(
            "/quantum/ml-dsa-public-key",
            get(quantum::ml_dsa_public_key),
        )
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            (d.clone(), limiter),
            limit::guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            d.http.max_request_bytes,
        ))
        .with_state(d)
}

/// `POST /api/rng/receive`, for the mutual-TLS listener only.
pub fn receive_router(d: Handles) -> Router {
    let d = Arc::new(d);
    // Handlers read their bodies with their own limits (and answer 413 in JSON, counted).
    Router::new()
        .route("/api/rng/receive", post(rng::receive))
        .fallback(not_found)
        .with_state(d)
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint".into(),
        reason: None,
        retry_after: None,
    }
}
