//! The hub's running parts: the pull listener (mutual TLS), push tasks, and the metrics listener.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

use super::build::PacketFactory;
use crate::config::HubConfig;
use crate::crypto::sig::{HubSigningKey, PacketSigner};
use crate::metrics::HubMetrics;
use crate::sources::make_source;
use crate::tls::{self, Identity, PeerCert};
use crate::wire::refill::{self, FrameWriter, RefillRequest};

struct HubState {
    id: String,
    factory: PacketFactory,
    metrics: Arc<HubMetrics>,
    packet_bytes: usize,
    /// Registered daemons: id → push URL (if any).
    daemons: HashMap<String, Option<String>>,
    /// Each daemon's byte rate and burst (`[limits]`).
    share: super::limit::DaemonShare,
}

/// A started hub. Dropping it does not stop it; call [`RunningHub::stop`].
#[derive(Debug)]
pub struct RunningHub {
    pub pull_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<HubMetrics>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningHub {
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Starts every part of the hub and returns once its listeners are bound.
pub async fn start(cfg: HubConfig, key: impl Into<HubSigningKey>) -> anyhow::Result<RunningHub> {
    let identity = Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
    let daemon_ca = tls::load_certs(&cfg.tls.daemon_ca)?;
    let server_cfg = tls::server_config(&identity, &daemon_ca, cfg.tls.pq_only)?;
    let client = tls::https_client(
        tls::client_config(&identity, &daemon_ca, cfg.tls.pq_only)?,
        Duration::from_secs(10),
    );
    let mut sources = Vec::with_capacity(cfg.sources.len());
    for c in &cfg.sources {
        let s = make_source(c)
            .map_err(|e| anyhow::anyhow!("source {:?} ({}): {e}", c.id(), c.source.name()))?;
        sources.push(s);
    }
    let mut factory = PacketFactory::new(
        key,
        sources,
        cfg.health.alpha_exponent,
        Duration::from_secs(cfg.health.quarantine_secs),
        cfg.packet_lifetime_ms,
        cfg.hybrid.clone(),
    )
    .with_proof(cfg.proof.clone());
    if let Some(d) = crate::sources::decentralized::Decentralized::from_hub_config(&cfg)? {
        tracing::info!(decentralized = ?d, "asking decentralized nodes each round");
        factory = factory.with_decentralized(d);
    }
    let mut metrics = HubMetrics::new();
    factory.register_metrics(&mut metrics.registry);
    if let Some(d) = factory.decentralized() {
        d.register_metrics(&mut metrics.registry);
    }
    let metrics = Arc::new(metrics);
    tracing::info!(
        hub = %cfg.id,
        key_id = %factory.key().key_id(),
        sig_alg = %factory.key().sig_alg(),
        sources = cfg.sources.len(),
        "hub signing key loaded"
    );
    let state = Arc::new(HubState {
        id: cfg.id.clone(),
        factory,
        metrics: metrics.clone(),
        packet_bytes: cfg.packet_bytes,
        daemons: cfg
            .daemons
            .iter()
            .map(|d| (d.id.clone(), d.url.clone()))
            .collect(),
        share: super::limit::DaemonShare::new(
            cfg.limits.daemon_bytes_per_second,
            cfg.limits.daemon_burst_bytes,
        ),
    });
    let mut tasks = Vec::new();

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on listen = {}", cfg.listen))?;
    let pull_addr = listener.local_addr()?;
    let pull_router = Router::new()
        .route(refill::REFILL_PATH, post(refill))
        .layer(axum::extract::DefaultBodyLimit::max(
            refill::MAX_REQUEST_BYTES,
        ))
        .with_state(state.clone());
    tasks.push(tokio::spawn(tls::serve_mtls(
        listener,
        server_cfg,
        pull_router,
        metrics.clone(),
    )));

    let metrics_addr = match cfg.metrics_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on metrics_listen = {addr}"))?;
            let a = l.local_addr()?;
            let r = Router::new()
                .route("/metrics", get(hub_metrics))
                .route("/health", get(hub_health))
                .with_state(state.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(l, r).await {
                    tracing::error!(error = %e, "hub metrics listener failed");
                }
            }));
            Some(a)
        }
        None => None,
    };

    if cfg.push_interval_ms > 0 {
        for d in &cfg.daemons {
            if let Some(url) = &d.url {
                tasks.push(tokio::spawn(push_loop(
                    state.clone(),
                    client.clone(),
                    d.id.clone(),
                    url.clone(),
                    Duration::from_millis(cfg.push_interval_ms),
                )));
            }
        }
    }
    Ok(RunningHub {
        pull_addr,
        metrics_addr,
        metrics,
        tasks,
    })
}

/// Pushes one packet per interval to one daemon, backing off (up to 30 s) while it fails.
async fn push_loop(
    state: Arc<HubState>,
    client: reqwest::Client,
    daemon: String,
    base: String,
    interval: Duration,
) {
    let url = format!("{}/api/rng/receive", base.trim_end_matches('/'));
    let mut backoff = interval;
    loop {
        tokio::time::sleep(backoff).await;
        if let Err(wait) =
            state
                .share
                .grant(&daemon, 1, state.packet_bytes, std::time::Instant::now())
        {
            // This daemon has had its share; push again when one packet's worth is back.
            state.metrics.delivery(&daemon, "rate_limited");
            backoff = wait.max(interval);
            continue;
        }
        let packet = match state
            .factory
            .build(&daemon, state.packet_bytes, &state.metrics)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(daemon = %daemon, error = %e, "no packet to push");
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let res = client
            .post(&url)
            .header(refill::TRANSPORT_HEADER, refill::TRANSPORT_VERSION)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(crate::secret::body_bytes(packet))
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                state.metrics.delivery(&daemon, "accepted");
                backoff = interval;
            }
            Ok(r) => {
                let status = r.status();
                let reason = r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
                    .unwrap_or_default();
                state.metrics.delivery(&daemon, "rejected");
                if reason != "pool_full" {
                    tracing::warn!(daemon = %daemon, %status, reason, "daemon refused a packet");
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                state.metrics.delivery(&daemon, "unreachable");
                tracing::warn!(daemon = %daemon, error = %e, "push failed");
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

/// `POST /api/hub/refill`: `{"recipient": ID, "bytes": N, "source"?: ID or KIND}` → a stream of
/// `u32 len ‖ packet` holding at least N bytes of entropy (at most [`refill::MAX_PACKETS_PER_PULL`]
/// packets; `bytes: 0` is a reachability probe answered with nothing).
async fn refill(
    State(state): State<Arc<HubState>>,
    Extension(peer): Extension<PeerCert>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get(refill::TRANSPORT_HEADER).map(|v| v.as_bytes())
        != Some(refill::TRANSPORT_VERSION.as_bytes())
    {
        return error(StatusCode::BAD_REQUEST, refill::TRANSPORT_REQUIRED);
    }
    if body.len() > refill::MAX_REQUEST_BYTES {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "refill request too large");
    }
    let req: RefillRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad refill request: {e}")),
    };
    if !state.daemons.contains_key(&req.recipient) {
        return error(
            StatusCode::FORBIDDEN,
            "recipient is not registered with this hub",
        );
    }
    if !tls::cert_names(&peer.0, &req.recipient) {
        return error(
            StatusCode::FORBIDDEN,
            "client certificate does not name the recipient",
        );
    }
    if let Some(name) = &req.source
        && !state.factory.knows(name)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "`source` names no configured source id or kind",
        );
    }
    let n = state.packet_bytes;
    // `bytes: 0` is a reachability probe: an empty answer.
    let asked = req.bytes.div_ceil(n).min(refill::MAX_PACKETS_PER_PULL);
    let count = match state
        .share
        .grant(&req.recipient, asked, n, std::time::Instant::now())
    {
        Ok(c) => c,
        Err(wait) => {
            state.metrics.delivery(&req.recipient, "rate_limited");
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "this daemon's share of the hub (limits.daemon_bytes_per_second) is used up",
            );
            let secs = wait.as_secs().max(1).to_string();
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    };
    let mut out = FrameWriter::default();
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
            }
            Err(e) if out.is_empty() => {
                return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            }
            Err(_) => break,
        }
    }
    if count > 0 {
        state.metrics.delivery(&req.recipient, "pulled");
    }
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        crate::secret::body_bytes(out.into_inner().into_zeroizing()),
    )
        .into_response()
}

async fn hub_metrics(State(state): State<Arc<HubState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn hub_health(State(state): State<Arc<HubState>>) -> Json<serde_json::Value> {
    let f = &state.factory;
    let sources: Vec<_> = f.sources().iter().map(|s| s.report()).collect();
    let (mode, healthy) = f.mode();
    Json(serde_json::json!({
        "hub": state.id,
        "key_id": f.key().key_id().to_string(),
        "sig_alg": f.key().sig_alg().as_str(),
        "hybrid": {
            "min_sources": f.hybrid().min_sources,
            "below_min": f.hybrid().below_min,
            "mode": mode,
            "healthy_sources": healthy,
        },
        "sources": sources,
        "proof": f.proof_mode(),
        "decentralized": f.decentralized().map(|d| serde_json::json!({
            "quorum": d.quorum(),
            "nodes": d.report(),
        })),
    }))
}
