//! The hub's HTTP face: its two routers, their handlers, the one error type they answer with, the
//! typed answers, and the OpenAPI document built from those same types.
//!
//! The hub listens twice: the pull API ([`router`], `POST /api/hub/refill`) only behind mutual
//! TLS, and the local monitoring listener ([`local_router`]: `/metrics`, `/health`,
//! `/openapi.json`) on plain HTTP at `metrics_listen`. [`document`] describes both. Every refusal
//! is a [`HubError`]: its status, a `{"error": ...}` body, and `Retry-After` on 429.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use utoipa::openapi::OpenApi as Doc;
use utoipa::{OpenApi, ToSchema};

use super::build::{BuildError, Mode, PacketFactory, SourceReport};
use super::limit::{DaemonShare, Refusal};
use crate::config::{BelowMin, ProofMode};
use crate::crypto::sig::PacketSigner;
use crate::metrics::HubMetrics;
use crate::sources::decentralized::NodeReport;
use crate::tls::{self, PeerCert};
use crate::wire::refill::{self, FrameWriter, RefillRequest};

/// The delivery class of refill answers in metrics.
pub(super) const PULL: &str = "pull";
/// The delivery class of pushes in metrics.
pub(super) const PUSH: &str = "push";

/// The hub as its handlers and push loops see it: the state of the config in force, replaced
/// whole by a reload (a request already running keeps the state it started with).
#[derive(Debug)]
pub(super) struct Hub {
    current: std::sync::RwLock<Arc<HubState>>,
}

impl Hub {
    pub(super) fn new(state: HubState) -> Self {
        Self {
            current: std::sync::RwLock::new(Arc::new(state)),
        }
    }

    pub(super) fn current(&self) -> Arc<HubState> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `state` in force; returns the one it replaces.
    pub(super) fn replace(&self, state: HubState) -> Arc<HubState> {
        let mut c = self.current.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *c, Arc::new(state))
    }
}

/// What every handler reads: one config's worth of the hub.
#[derive(Debug)]
pub(super) struct HubState {
    pub(super) id: String,
    pub(super) factory: PacketFactory,
    pub(super) metrics: Arc<HubMetrics>,
    pub(super) packet_bytes: usize,
    /// `tls.spiffe_trust_domain`: whose SPIFFE IDs name daemons besides DNS names.
    pub(super) trust_domain: Option<String>,
    /// Each daemon's byte rate and burst and the hub's budget (`[limits]`); one across reloads.
    pub(super) share: Arc<DaemonShare>,
}

/// The pull API, served behind mutual TLS: each request must carry the [`PeerCert`] extension
/// ([`tls::serve_mtls`] adds it).
pub(super) fn router(state: Arc<Hub>) -> Router {
    Router::new()
        .route(refill::REFILL_PATH, post(refill))
        .layer(axum::extract::DefaultBodyLimit::max(
            refill::MAX_REQUEST_BYTES,
        ))
        .with_state(state)
}

/// The local monitoring listener (`metrics_listen`).
pub(super) fn local_router(state: Arc<Hub>) -> Router {
    Router::new()
        .route("/metrics", get(hub_metrics))
        .route("/health", get(hub_health))
        .route("/openapi.json", get(openapi_json))
        .with_state(state)
}

/// Every refusal the hub's face answers.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{}", refill::TRANSPORT_REQUIRED)]
    TransportRequired,
    #[error("refill request too large")]
    TooLarge,
    #[error("bad refill request: {0}")]
    BadRequest(serde_json::Error),
    #[error("`recipient` is not a daemon id (1-64 characters from [A-Za-z0-9._-])")]
    BadRecipient,
    #[error("client certificate does not name the recipient")]
    CertMismatch,
    #[error("`source` names no configured source id or kind")]
    UnknownSource,
    #[error("{}", share_message(.0))]
    ShareUsedUp(Refusal),
    /// Not even one packet could be built.
    #[error("{0}")]
    NoPacket(BuildError),
}

impl HubError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TransportRequired
            | Self::BadRequest(_)
            | Self::BadRecipient
            | Self::UnknownSource => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::CertMismatch => StatusCode::FORBIDDEN,
            Self::ShareUsedUp(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::NoPacket(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

fn share_message(r: &Refusal) -> &'static str {
    match r {
        Refusal::Daemon(_) => {
            "this daemon's share of the hub (limits.daemon_bytes_per_second) is used up"
        }
        Refusal::Hub(_) => {
            "the hub's budget for all daemons (limits.hub_bytes_per_second) is used up"
        }
        Refusal::TooManyDaemons => "the hub is serving as many daemons as it keeps shares for",
    }
}

/// The `outcome` label a refusal is counted under.
pub(super) fn refusal_outcome(r: &Refusal) -> &'static str {
    match r {
        Refusal::Daemon(_) => "rate_limited",
        Refusal::Hub(_) => "hub_budget",
        Refusal::TooManyDaemons => "too_many_daemons",
    }
}

/// The body of every refusal.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status(),
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        if let Self::ShareUsedUp(refusal) = self {
            let secs = refusal.retry_after().as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// `POST /api/hub/refill`: a stream of `u32 len ‖ packet` holding at least `bytes` bytes of
/// entropy (at most [`refill::MAX_PACKETS_PER_PULL`] packets; `bytes: 0` is a reachability probe
/// answered with nothing).
#[utoipa::path(post, path = "/api/hub/refill", tag = "hub",
    params(("X-Quantum-Transport" = String, Header, description = "Must be `v1`")),
    request_body(content = RefillRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Framed packets: u32 length (big-endian) ‖ packet, repeated",
            content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "No transport header, bad JSON, a recipient that is not an \
            id, or an unknown `source`", body = ErrorBody),
        (status = 403, description = "The client certificate does not name the recipient (DNS \
            name, or SPIFFE ID in `tls.spiffe_trust_domain`)", body = ErrorBody),
        (status = 413, description = "Request body too large", body = ErrorBody),
        (status = 429, description = "This daemon's share, or the hub's budget for all daemons, \
            is used up (Retry-After)", body = ErrorBody),
        (status = 503, description = "No packet could be built", body = ErrorBody),
    ))]
async fn refill(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<PeerCert>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HubError> {
    let state = hub.current();
    let req = admit_refill(&state, &peer, &headers, &body)?;
    let count = grant(&state, &req)?;
    let (frames, built) = build_frames(&state, &req, count).await?;
    if count > 0 {
        state.metrics.delivery(PULL, "delivered");
        state.metrics.delivered(PULL, built);
    }
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        crate::secret::body_bytes(frames.into_inner().into_zeroizing()),
    )
        .into_response())
}

/// Checks the transport header, the body, and that the client may ask for this recipient.
fn admit_refill(
    state: &HubState,
    peer: &PeerCert,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<RefillRequest, HubError> {
    if headers.get(refill::TRANSPORT_HEADER).map(|v| v.as_bytes())
        != Some(refill::TRANSPORT_VERSION.as_bytes())
    {
        return Err(HubError::TransportRequired);
    }
    if body.len() > refill::MAX_REQUEST_BYTES {
        return Err(HubError::TooLarge);
    }
    let req: RefillRequest = serde_json::from_slice(body).map_err(HubError::BadRequest)?;
    if !crate::wire::is_valid_id(&req.recipient) {
        return Err(HubError::BadRecipient);
    }
    if !tls::cert_names_daemon(&peer.0, &req.recipient, state.trust_domain.as_deref()) {
        return Err(HubError::CertMismatch);
    }
    if let Some(name) = &req.source
        && !state.factory.knows(name)
    {
        return Err(HubError::UnknownSource);
    }
    Ok(req)
}

/// How many packets this daemon's share grants now (`bytes: 0`, a probe, is granted none).
fn grant(state: &HubState, req: &RefillRequest) -> Result<usize, HubError> {
    let n = state.packet_bytes;
    let asked = req.bytes.div_ceil(n).min(refill::MAX_PACKETS_PER_PULL);
    state
        .share
        .grant(&req.recipient, asked, n, std::time::Instant::now())
        .map_err(|refusal| {
            state.metrics.delivery(PULL, refusal_outcome(&refusal));
            HubError::ShareUsedUp(refusal)
        })
}

/// Builds up to `count` packets: the frames and how many; an error only when not even the first
/// one could be built.
async fn build_frames(
    state: &HubState,
    req: &RefillRequest,
    count: usize,
) -> Result<(FrameWriter, usize), HubError> {
    let n = state.packet_bytes;
    let mut out = FrameWriter::default();
    let mut built = 0;
    for _ in 0..count {
        match state
            .factory
            .build_from(&req.recipient, n, &state.metrics, req.source.as_deref())
            .await
        {
            Ok(p) => {
                if out.is_empty() {
                    // Sized from the first packet; `append` grows by hand (zeroing) if a later
                    // one is larger.
                    out =
                        FrameWriter::with_capacity(count * (p.len() + refill::FRAME_HEADER + 256));
                }
                out.push(&p);
                built += 1;
            }
            Err(e) if out.is_empty() => return Err(HubError::NoPacket(e)),
            Err(_) => break,
        }
    }
    Ok((out, built))
}

/// `GET /metrics`: OpenMetrics text.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses(
        (status = 200, description = "OpenMetrics text",
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body = String),
    ))]
async fn hub_metrics(State(hub): State<Arc<Hub>>) -> Response {
    let state = hub.current();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// `GET /health`'s answer.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct HealthResponse {
    /// The hub's id.
    pub hub: String,
    /// The signing key's id, hex.
    pub key_id: String,
    pub sig_alg: String,
    pub hybrid: HybridHealth,
    pub sources: Vec<SourceReport>,
    pub proof: ProofMode,
    /// Present when the hub asks decentralized nodes.
    pub decentralized: Option<DecentralizedHealth>,
}

/// The hybrid policy and what the last packet attempt did.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct HybridHealth {
    pub min_sources: usize,
    pub below_min: BelowMin,
    pub mode: Mode,
    pub healthy_sources: usize,
}

/// The decentralized nodes the hub asks.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct DecentralizedHealth {
    pub quorum: usize,
    pub nodes: Vec<NodeReport>,
}

impl HealthResponse {
    fn of(state: &HubState) -> Self {
        let f = &state.factory;
        let (mode, healthy) = f.mode();
        Self {
            hub: state.id.clone(),
            key_id: f.key().key_id().to_string(),
            sig_alg: f.key().sig_alg().as_str().to_owned(),
            hybrid: HybridHealth {
                min_sources: f.hybrid().min_sources,
                below_min: f.hybrid().below_min,
                mode,
                healthy_sources: healthy,
            },
            sources: f.sources().iter().map(|s| s.report()).collect(),
            proof: f.proof_mode(),
            decentralized: f.decentralized().map(|d| DecentralizedHealth {
                quorum: d.quorum(),
                nodes: d.report(),
            }),
        }
    }
}

/// `GET /health`: the hub's key, policy, and each source's and node's state.
#[utoipa::path(get, path = "/health", tag = "meta",
    responses((status = 200, description = "Key, policy, sources and nodes", body = HealthResponse)))]
async fn hub_health(State(hub): State<Arc<Hub>>) -> Json<HealthResponse> {
    Json(HealthResponse::of(&hub.current()))
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The hub's OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> Json<Doc> {
    Json(document())
}

#[derive(OpenApi)]
#[openapi(
    info(title = "kirq-hub", description = "The hub's pull API (mutual TLS) and its local \
        monitoring listener."),
    paths(refill, hub_metrics, hub_health, openapi_json),
    components(schemas(RefillRequest, ErrorBody, HealthResponse)),
    tags((name = "hub", description = "Pull API, mutual TLS only"),
        (name = "meta", description = "Local monitoring listener (metrics_listen)"))
)]
struct ApiDoc;

/// The hub's OpenAPI document.
pub fn document() -> Doc {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    use std::time::Duration;

    use super::*;
    use crate::config::{HybridConfig, SourceConfig};
    use crate::crypto::falcon::SigningKey;

    fn state() -> Arc<Hub> {
        state_in(None)
    }

    fn state_in(trust_domain: Option<&str>) -> Arc<Hub> {
        let source = crate::sources::make_source(&SourceConfig::local("local-1")).unwrap();
        Arc::new(Hub::new(HubState {
            id: "hub-1".into(),
            factory: PacketFactory::new(
                SigningKey::generate(),
                vec![source],
                30,
                Duration::from_secs(60),
                60_000,
                HybridConfig::default(),
            ),
            metrics: Arc::new(HubMetrics::new()),
            packet_bytes: 64,
            trust_domain: trust_domain.map(str::to_owned),
            share: Arc::new(DaemonShare::new(&crate::config::HubLimits::default())),
        }))
    }

    fn doc_json() -> serde_json::Value {
        serde_json::from_str(&document().to_pretty_json().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn document_parses_and_names_every_route_served() {
        let doc = doc_json();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths: BTreeSet<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let served = BTreeSet::from([refill::REFILL_PATH, "/metrics", "/health", "/openapi.json"]);
        assert_eq!(paths, served);
        let state = state();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let app = if path == refill::REFILL_PATH {
                    router(state.clone())
                } else {
                    local_router(state.clone())
                };
                let req = Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .body(Body::empty())
                    .unwrap();
                let status = app.oneshot(req).await.unwrap().status();
                assert!(
                    status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}: {status}"
                );
            }
        }
        let req = Request::get("/nope").body(Body::empty()).unwrap();
        let status = local_router(state).oneshot(req).await.unwrap().status();
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn health_answers_the_documented_shape() {
        let req = Request::get("/health").body(Body::empty()).unwrap();
        let resp = local_router(state()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["hub"], "hub-1");
        assert_eq!(v["hybrid"]["mode"], "idle");
        assert_eq!(v["hybrid"]["below_min"], "stop");
        assert_eq!(v["proof"], "off");
        assert_eq!(v["sources"][0]["id"], "local-1");
        assert_eq!(v["sources"][0]["kind"], "local");
        assert!(v["decentralized"].is_null());
        let schema = &doc_json()["components"]["schemas"]["HealthResponse"]["properties"];
        for key in v.as_object().unwrap().keys() {
            assert!(schema.get(key).is_some(), "{key} is not in the schema");
        }
    }

    #[test]
    fn source_status_serializes_as_its_name() {
        use crate::health::Status;
        for s in [Status::Up, Status::Degraded, Status::Quarantined] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[tokio::test]
    async fn refusals_keep_status_body_and_retry_after() {
        let r = HubError::ShareUsedUp(Refusal::Daemon(Duration::from_millis(2500))).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "this daemon's share of the hub \
                (limits.daemon_bytes_per_second) is used up"})
        );
        let r = HubError::TransportRequired.into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(HubError::CertMismatch.status(), StatusCode::FORBIDDEN);
        assert_eq!(HubError::BadRecipient.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            HubError::NoPacket(BuildError::NoHealthySource).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    /// Asks `state` for one packet for `recipient` as the holder of `cert_pem`.
    async fn pull_as(state: &Arc<Hub>, cert_pem: &str, recipient: &str) -> StatusCode {
        use rustls::pki_types::pem::PemObject;
        let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let mut req = Request::post(refill::REFILL_PATH)
            .header(refill::TRANSPORT_HEADER, refill::TRANSPORT_VERSION)
            .body(Body::from(
                serde_json::json!({ "recipient": recipient, "bytes": 64 }).to_string(),
            ))
            .unwrap();
        req.extensions_mut().insert(PeerCert(Arc::new(cert)));
        router(state.clone()).oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn any_daemon_the_certificate_names_may_pull_and_no_other() {
        let ca = crate::pki::Ca::new("daemon CA").unwrap();
        let dns = ca.issue("kirqd-7", &[]).unwrap().cert_pem;
        let spiffe = ca
            .issue_uri(&tls::spiffe_daemon_id("fleet.test", "kirqd-9"), &[])
            .unwrap()
            .cert_pem;
        // No daemon is listed in any hub's config.
        let plain = state_in(None);
        let fleet = state_in(Some("fleet.test"));
        let other_domain = state_in(Some("other.test"));
        for (hub, cert, recipient, want) in [
            (&plain, &dns, "kirqd-7", StatusCode::OK),
            (&fleet, &dns, "kirqd-7", StatusCode::OK),
            (&fleet, &spiffe, "kirqd-9", StatusCode::OK),
            // Another daemon's id, a SPIFFE ID without or outside the hub's trust domain, a bad id.
            (&plain, &dns, "kirqd-8", StatusCode::FORBIDDEN),
            (&fleet, &spiffe, "kirqd-7", StatusCode::FORBIDDEN),
            (&plain, &spiffe, "kirqd-9", StatusCode::FORBIDDEN),
            (&other_domain, &spiffe, "kirqd-9", StatusCode::FORBIDDEN),
            (&plain, &dns, "kirqd 7", StatusCode::BAD_REQUEST),
        ] {
            assert_eq!(pull_as(hub, cert, recipient).await, want, "{recipient}");
        }
    }
}
