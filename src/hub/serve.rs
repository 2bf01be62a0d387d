//! The hub's running parts: the pull listener (mutual TLS), push tasks, and the metrics listener.
//! The routes each listener serves are in [`super::api`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::header;

use super::api::{self, HubState, PUSH};
use super::build::PacketFactory;
use super::limit::DaemonShare;
use crate::config::HubConfig;
use crate::crypto::sig::{HubSigningKey, PacketSigner};
use crate::metrics::HubMetrics;
use crate::sources::decentralized::Decentralized;
use crate::sources::make_source;
use crate::tls;
use crate::wire::refill;

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
    let identity = tls::Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
    let daemon_ca = tls::load_certs(&cfg.tls.daemon_ca)?;
    let server_cfg = tls::server_config(&identity, &daemon_ca, cfg.tls.pq_only)?;
    let client = tls::https_client(
        tls::client_config(&identity, &daemon_ca, cfg.tls.pq_only)?,
        Duration::from_secs(10),
    );
    let factory = packet_factory(&cfg, key)?;
    let metrics = Arc::new(hub_metrics(&factory));
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
        trust_domain: cfg.tls.spiffe_trust_domain.clone(),
        share: DaemonShare::new(&cfg.limits),
    });
    let mut tasks = Vec::new();
    let listener = bind(cfg.listen, "listen").await?;
    let pull_addr = listener.local_addr()?;
    tasks.push(tokio::spawn(tls::serve_mtls(
        listener,
        server_cfg,
        api::router(state.clone()),
        metrics.clone(),
    )));
    let metrics_addr = match cfg.metrics_listen {
        Some(addr) => {
            let l = bind(addr, "metrics_listen").await?;
            let bound = l.local_addr()?;
            tasks.push(tokio::spawn(serve_local(
                l,
                api::local_router(state.clone()),
            )));
            Some(bound)
        }
        None => None,
    };
    tasks.extend(spawn_push_loops(&cfg, &state, &client));
    Ok(RunningHub {
        pull_addr,
        metrics_addr,
        metrics,
        tasks,
    })
}

/// Makes every configured source (a bad one stops the hub here) and the factory over them.
fn packet_factory(cfg: &HubConfig, key: impl Into<HubSigningKey>) -> anyhow::Result<PacketFactory> {
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
    if let Some(d) = Decentralized::from_hub_config(cfg)? {
        tracing::info!(decentralized = ?d, "asking decentralized nodes each round");
        factory = factory.with_decentralized(d);
    }
    Ok(factory)
}

/// The hub's metrics with the factory's and the nodes' registered.
fn hub_metrics(factory: &PacketFactory) -> HubMetrics {
    let mut metrics = HubMetrics::new();
    factory.register_metrics(&mut metrics.registry);
    if let Some(d) = factory.decentralized() {
        d.register_metrics(&mut metrics.registry);
    }
    metrics
}

async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {key} = {addr}"))
}

async fn serve_local(listener: tokio::net::TcpListener, router: Router) {
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "hub metrics listener failed");
    }
}

/// One push task per daemon with a URL, when pushing is on (`push_interval_ms > 0`).
fn spawn_push_loops(
    cfg: &HubConfig,
    state: &Arc<HubState>,
    client: &reqwest::Client,
) -> Vec<tokio::task::JoinHandle<()>> {
    if cfg.push_interval_ms == 0 {
        return Vec::new();
    }
    cfg.daemons
        .iter()
        .filter_map(|d| {
            let url = d.url.as_ref()?;
            Some(tokio::spawn(push_loop(
                state.clone(),
                client.clone(),
                d.id.clone(),
                url.clone(),
                Duration::from_millis(cfg.push_interval_ms),
            )))
        })
        .collect()
}

/// The part of a daemon's refusal the push loop reads: its fixed `reason` (`pool_full` is
/// expected and not logged).
#[derive(serde::Deserialize)]
struct DaemonRefusal {
    #[serde(default)]
    reason: String,
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
        if let Err(refusal) =
            state
                .share
                .grant(&daemon, 1, state.packet_bytes, std::time::Instant::now())
        {
            // This daemon (or the hub) has had its share; push again when one packet's worth is
            // back.
            state.metrics.delivery(PUSH, api::refusal_outcome(&refusal));
            backoff = refusal.retry_after().max(interval);
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
                state.metrics.delivery(PUSH, "accepted");
                state.metrics.delivered(PUSH, 1);
                backoff = interval;
            }
            Ok(r) => {
                let status = r.status();
                let reason = r
                    .json::<DaemonRefusal>()
                    .await
                    .map(|d| d.reason)
                    .unwrap_or_default();
                state.metrics.delivery(PUSH, "rejected");
                if reason != "pool_full" {
                    tracing::warn!(daemon = %daemon, %status, reason, "daemon refused a packet");
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                state.metrics.delivery(PUSH, "unreachable");
                tracing::warn!(daemon = %daemon, error = %e, "push failed");
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
