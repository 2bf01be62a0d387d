//! The node's HTTP face: the mutual-TLS API ([`router`]: commit and reveal), the local
//! monitoring listener ([`local_router`]: `/metrics`, `/health`, `/openapi.json`), the typed
//! answers, and the OpenAPI document built from them. Every refusal is a [`NodeError`], counted
//! under its reason and logged (rate limited).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use utoipa::openapi::OpenApi as Doc;
use utoipa::{OpenApi, ToSchema};

use super::error::NodeError;
use super::state::NodeState;
use super::{commit, lock, reveal};
use crate::health::Status;
use crate::tls::PeerCert;
use crate::wire::node::{
    self as proto, CommitRequest, CommitResponse, ErrorBody, MAX_COMMIT_BODY, MAX_REVEAL_BODY,
    RevealRequest, RevealResponse,
};

/// The mutual-TLS API. Each request must carry the [`PeerCert`] extension
/// ([`crate::tls::serve_mtls`] adds it).
pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route(proto::COMMIT_PATH, post(commit_handler))
        .route(proto::REVEAL_PATH, post(reveal_handler))
        .with_state(state)
}

/// The local monitoring listener (`metrics_listen`).
pub fn local_router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/metrics", get(node_metrics))
        .route("/health", get(node_health))
        .route("/openapi.json", get(openapi_json))
        .with_state(state)
}

/// Most bytes of an oversized body read before answering 413.
const DRAIN_CAP: usize = 1 << 20;

/// Reads a JSON body of at most `limit` bytes.
async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, NodeError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.trim_start().starts_with("application/json") {
        return Err(NodeError::BadContentType);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_CAP as u64) {
        return Err(NodeError::BodyTooLarge { limit });
    }
    let bytes = read_capped(body, limit).await?;
    serde_json::from_slice(&bytes).map_err(NodeError::BadJson)
}

/// Reads at most `limit` bytes. A body over the limit is read (up to [`DRAIN_CAP`]) and dropped,
/// so that the client, still sending, reads the 413 instead of a reset connection.
async fn read_capped(body: Body, limit: usize) -> Result<Vec<u8>, NodeError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| NodeError::BadBody)?;
        total = total.saturating_add(chunk.len());
        if total <= limit {
            bytes.extend_from_slice(&chunk);
        } else if total > DRAIN_CAP {
            break;
        }
    }
    if total > limit {
        return Err(NodeError::BodyTooLarge { limit });
    }
    Ok(bytes)
}

/// Counts the outcome under `endpoint` and answers it.
fn finish(state: &NodeState, endpoint: &'static str, r: Result<Response, NodeError>) -> Response {
    match r {
        Ok(resp) => {
            state.metrics.request(endpoint, "ok");
            resp
        }
        Err(e) => {
            state.metrics.request(endpoint, e.reason());
            state.log_refusal(endpoint, &e);
            e.into_response()
        }
    }
}

/// `POST /api/node/commit`: fresh bytes drawn for (client, round), kept, and committed to.
#[utoipa::path(post, path = "/api/node/commit", tag = "node",
    request_body(content = CommitRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The signed commitment (the same one for a repeated round)",
            body = CommitResponse),
        (status = 400, description = "Bad JSON, round or size (reason)", body = ErrorBody),
        (status = 409, description = "Round already revealed, stale, or committed with another \
            size", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 503, description = "Source unavailable or too many open rounds",
            body = ErrorBody),
    ))]
async fn commit_handler(
    State(state): State<Arc<NodeState>>,
    Extension(peer): Extension<PeerCert>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let req: CommitRequest = read_json(&headers, body, MAX_COMMIT_BODY).await?;
        commit::commit(&state, &peer, req)
            .await
            .map(|c| Json(c).into_response())
    }
    .await;
    finish(&state, "commit", r)
}

/// `POST /api/node/reveal`: the committed bytes and a receipt, once, for a quorum shown.
#[utoipa::path(post, path = "/api/node/reveal", tag = "node",
    request_body(content = RevealRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The bytes and the node's receipt", body = RevealResponse),
        (status = 400, description = "A bad field (named)", body = ErrorBody),
        (status = 403, description = "Own commitment missing or different, or no quorum shown",
            body = ErrorBody),
        (status = 404, description = "No commitment for the round", body = ErrorBody),
        (status = 409, description = "Already revealed", body = ErrorBody),
        (status = 410, description = "The round expired", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 503, description = "Too many recipients", body = ErrorBody),
    ))]
async fn reveal_handler(
    State(state): State<Arc<NodeState>>,
    Extension(peer): Extension<PeerCert>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let req: RevealRequest = read_json(&headers, body, MAX_REVEAL_BODY).await?;
        reveal::reveal(&state, &peer, req).await
    }
    .await;
    finish(&state, "reveal", r)
}

/// `GET /metrics`: OpenMetrics text.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses(
        (status = 200, description = "OpenMetrics text",
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body = String),
    ))]
async fn node_metrics(State(state): State<Arc<NodeState>>) -> Response {
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
pub struct NodeHealth {
    /// The node's id.
    pub node: String,
    /// Its signing key's id, hex.
    pub key_id: String,
    pub quorum: usize,
    /// The peers' ids, sorted.
    pub peers: Vec<String>,
    pub open_rounds: usize,
    pub source: NodeSourceHealth,
}

/// The node's one source.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct NodeSourceHealth {
    pub id: String,
    pub kind: &'static str,
    pub status: Status,
    pub quality: f64,
    /// The last failure, if any.
    pub reason: Option<String>,
}

impl NodeHealth {
    fn of(state: &NodeState) -> Self {
        let h = lock(&state.health);
        let mut peers: Vec<String> = state.peers.keys().cloned().collect();
        peers.sort();
        Self {
            node: state.id.clone(),
            key_id: state.key.verifying_key().id().to_string(),
            quorum: state.quorum,
            peers,
            open_rounds: lock(&state.rounds).open(),
            source: NodeSourceHealth {
                id: state.source.id().to_owned(),
                kind: state.source.kind().as_str(),
                status: h.status(),
                quality: h.quality(),
                reason: h.last_failure().map(str::to_owned),
            },
        }
    }
}

/// `GET /health`: the node's key, peers, open rounds and source.
#[utoipa::path(get, path = "/health", tag = "meta",
    responses((status = 200, description = "Key, peers, rounds and source", body = NodeHealth)))]
async fn node_health(State(state): State<Arc<NodeState>>) -> Json<NodeHealth> {
    Json(NodeHealth::of(&state))
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The node's OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> Json<Doc> {
    Json(document())
}

#[derive(OpenApi)]
#[openapi(
    info(title = "kirq-hub node", description = "A decentralized QRNG node: its commit-reveal \
        API (mutual TLS) and its local monitoring listener."),
    paths(commit_handler, reveal_handler, node_metrics, node_health, openapi_json),
    components(schemas(CommitRequest, CommitResponse, RevealRequest, RevealResponse, ErrorBody,
        NodeHealth)),
    tags((name = "node", description = "Commit-reveal API, mutual TLS only"),
        (name = "meta", description = "Local monitoring listener (metrics_listen)"))
)]
struct ApiDoc;

/// The node's OpenAPI document.
pub fn document() -> Doc {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::config::NodeConfig;
    use crate::crypto::falcon::SigningKey;

    fn state() -> Arc<NodeState> {
        let dir = std::env::temp_dir().join(format!("kirq-node-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "id = \"node-a\"\nsigning_key = \"k\"\nlisten = \"127.0.0.1:1\"\nquorum = 2\n\
             [tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n[source]\ntype = \"local\"\n\
             [peers]\nnode-b = \"node-b.pub\"\n",
        )
        .unwrap();
        let cfg = NodeConfig::load(&path).unwrap();
        Arc::new(NodeState::new(&cfg, SigningKey::generate(), HashMap::new(), None).unwrap())
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
        let served = BTreeSet::from([
            proto::COMMIT_PATH,
            proto::REVEAL_PATH,
            "/metrics",
            "/health",
            "/openapi.json",
        ]);
        assert_eq!(paths, served);
        let state = state();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let app = if path.starts_with("/api/node/") {
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
        assert_eq!(v["node"], "node-a");
        assert_eq!(v["quorum"], 2);
        assert_eq!(v["open_rounds"], 0);
        assert_eq!(v["source"]["kind"], "local");
        assert!(v["source"]["status"].is_string());
        let schema = &doc_json()["components"]["schemas"]["NodeHealth"]["properties"];
        for key in v.as_object().unwrap().keys() {
            assert!(schema.get(key).is_some(), "{key} is not in the schema");
        }
    }

    #[tokio::test]
    async fn a_refusal_is_counted_and_answers_its_reason() {
        let state = state();
        let req = Request::post(proto::COMMIT_PATH)
            .header("content-type", "text/plain")
            .extension(PeerCert(Arc::new(vec![0x30, 0x00].into())))
            .body(Body::from("{}"))
            .unwrap();
        let resp = router(state.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "Content-Type must be application/json",
                "reason": "bad_content_type"})
        );
        assert!(
            state
                .metrics
                .encode()
                .contains("endpoint=\"commit\",outcome=\"bad_content_type\"")
        );
    }
}
