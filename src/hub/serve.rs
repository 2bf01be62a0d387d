//! The hub's running parts: the pull listener (mutual TLS), push tasks, and the metrics listener.
//! The routes each listener serves are in [`super::api`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::header;
use tokio::task::JoinHandle;

use super::api::{self, Hub, HubState, PUSH};
use super::build::PacketFactory;
use super::limit::DaemonShare;
use crate::config::HubConfig;
use crate::crypto::sig::{HubSigningKey, PacketSigner};
use crate::metrics::HubMetrics;
use crate::sources::decentralized::Decentralized;
use crate::sources::make_source;
use crate::tls;
use crate::util::lock;
use crate::wire::refill;

/// A started hub. Dropping it does not stop it; call [`RunningHub::stop`].
#[derive(Debug)]
pub struct RunningHub {
    pub pull_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<HubMetrics>,
    hub: Arc<Hub>,
    /// What a reload cannot change (the bound listeners, and whether nodes are asked: their
    /// metrics are registered once).
    fixed: Fixed,
    /// The pull listener's server config: a reload sends the new one.
    tls: tokio::sync::watch::Sender<Arc<rustls::ServerConfig>>,
    /// One push task per listed daemon with a URL; a reload replaces them.
    pushers: Mutex<Vec<JoinHandle<()>>>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Fixed {
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    decentralized: bool,
    connections_per_peer: usize,
}

impl Fixed {
    fn of(cfg: &HubConfig) -> Self {
        Self {
            listen: cfg.listen,
            metrics_listen: cfg.metrics_listen,
            decentralized: cfg.decentralized.is_some(),
            connections_per_peer: cfg.limits.connections_per_peer,
        }
    }
}

impl RunningHub {
    pub fn stop(self) {
        for t in self.tasks.into_iter().chain(lock(&self.pushers).drain(..)) {
            t.abort();
        }
    }

    /// Re-reads `config_path` (and the signing key it names) and puts it in force: keys,
    /// certificates, sources, push list and limits. Open connections stay open; a request
    /// already running finishes under the config it started with. On any error nothing changes.
    /// Counted in `kirq_hub_config_reloads_total{outcome}`.
    pub fn reload_from(&self, config_path: &Path) -> anyhow::Result<()> {
        let result = HubConfig::load(config_path)
            .map_err(anyhow::Error::from)
            .and_then(|cfg| {
                let key = HubSigningKey::load(&cfg.signing_key)?;
                self.reload(cfg, key)
            });
        self.metrics
            .reload(if result.is_ok() { "applied" } else { "refused" });
        result
    }

    /// [`RunningHub::reload_from`] with the config and key already loaded (not counted).
    pub fn reload(&self, cfg: HubConfig, key: impl Into<HubSigningKey>) -> anyhow::Result<()> {
        let fixed = Fixed::of(&cfg);
        if fixed != self.fixed {
            anyhow::bail!(
                "listen, metrics_listen, limits.connections_per_peer and whether [decentralized] \
                 is set cannot change at a reload (was {:?}, now {:?}); restart the hub for that",
                self.fixed,
                fixed
            );
        }
        let (server_cfg, client) = wire_tls(&cfg)?;
        let old = self.hub.current();
        let factory = packet_factory(&cfg, key)?.carry_over(&old.factory);
        log_key(&cfg, &factory);
        old.share.set_limits(&cfg.limits);
        let state = hub_state(&cfg, factory, &self.metrics, old.share.clone());
        self.hub.replace(state);
        self.tls.send_replace(server_cfg);
        let mut pushers = lock(&self.pushers);
        for t in pushers.drain(..) {
            t.abort();
        }
        *pushers = spawn_push_loops(&cfg, &self.hub, &client);
        tracing::info!(
            hub = %cfg.id,
            push_daemons = pushers.len(),
            "config reloaded"
        );
        Ok(())
    }
}

/// The pull listener's server config and the push client, from `[tls]`.
fn wire_tls(cfg: &HubConfig) -> anyhow::Result<(Arc<rustls::ServerConfig>, reqwest::Client)> {
    let identity = tls::Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
    let daemon_ca = tls::load_certs(&cfg.tls.daemon_ca)?;
    let server_cfg = tls::server_config(&identity, &daemon_ca, cfg.tls.pq_only)?;
    let client = tls::https_client(
        tls::client_config(&identity, &daemon_ca, cfg.tls.pq_only)?,
        Duration::from_secs(10),
    );
    Ok((server_cfg, client))
}

fn hub_state(
    cfg: &HubConfig,
    factory: PacketFactory,
    metrics: &Arc<HubMetrics>,
    share: Arc<DaemonShare>,
) -> HubState {
    HubState {
        id: cfg.id.clone(),
        factory,
        metrics: metrics.clone(),
        packet_bytes: cfg.packet_bytes,
        trust_domain: cfg.tls.spiffe_trust_domain.clone(),
        share,
    }
}

fn log_key(cfg: &HubConfig, factory: &PacketFactory) {
    tracing::info!(
        hub = %cfg.id,
        key_id = %factory.key().key_id(),
        sig_alg = %factory.key().sig_alg(),
        sources = cfg.sources.len(),
        "hub signing key loaded"
    );
}

/// Starts every part of the hub and returns once its listeners are bound.
pub async fn start(cfg: HubConfig, key: impl Into<HubSigningKey>) -> anyhow::Result<RunningHub> {
    let (server_cfg, client) = wire_tls(&cfg)?;
    let factory = packet_factory(&cfg, key)?;
    let metrics = Arc::new(hub_metrics(&factory));
    log_key(&cfg, &factory);
    let share = Arc::new(DaemonShare::new(&cfg.limits));
    let hub = Arc::new(Hub::new(hub_state(&cfg, factory, &metrics, share)));
    let mut tasks = Vec::new();
    let listener = bind(cfg.listen, "listen").await?;
    let pull_addr = listener.local_addr()?;
    let (tls_tx, tls_rx) = tokio::sync::watch::channel(server_cfg);
    let mut limits = tls::ListenerLimits::for_this_process();
    limits.per_peer = cfg.limits.connections_per_peer.min(limits.max_connections);
    tasks.push(tokio::spawn(tls::serve_mtls_within(
        listener,
        tls_rx,
        api::router(hub.clone()),
        metrics.clone(),
        limits,
    )));
    let metrics_addr = match cfg.metrics_listen {
        Some(addr) => {
            let l = bind(addr, "metrics_listen").await?;
            let bound = l.local_addr()?;
            tasks.push(tokio::spawn(serve_local(l, api::local_router(hub.clone()))));
            Some(bound)
        }
        None => None,
    };
    let pushers = spawn_push_loops(&cfg, &hub, &client);
    Ok(RunningHub {
        pull_addr,
        metrics_addr,
        metrics,
        fixed: Fixed::of(&cfg),
        hub,
        tls: tls_tx,
        pushers: Mutex::new(pushers),
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
    hub: &Arc<Hub>,
    client: &reqwest::Client,
) -> Vec<JoinHandle<()>> {
    if cfg.push_interval_ms == 0 {
        return Vec::new();
    }
    cfg.daemons
        .iter()
        .filter_map(|d| {
            let url = d.url.as_ref()?;
            Some(tokio::spawn(push_loop(
                hub.clone(),
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

/// Packets one push loop has in flight at once (built or being built, sent, awaiting the
/// daemon's answer). One at a time left both ends idle in turn: the hub waited for the round
/// trip (the daemon's verification and replay-journal sync) before building the next packet.
pub const PUSH_IN_FLIGHT: usize = 8;

/// What one push came to.
enum Pushed {
    Accepted,
    /// Refused by the daemon (its `reason`), or unreachable, or no packet could be built:
    /// back off.
    Failed,
}

/// Pushes to one daemon: one packet started per interval, up to [`PUSH_IN_FLIGHT`] at once,
/// backing off (doubling, up to 30 s) while pushes fail and waiting while its share is used up.
async fn push_loop(
    hub: Arc<Hub>,
    client: reqwest::Client,
    daemon: String,
    base: String,
    interval: Duration,
) {
    let url: Arc<str> = format!("{}/api/rng/receive", base.trim_end_matches('/')).into();
    let daemon: Arc<str> = daemon.into();
    let mut backoff = interval;
    // When the next push may start. Advanced one period per push, so timer lateness does not
    // slow the rate, but never left more than one period behind the clock: no bursts after a
    // stall.
    let mut next = tokio::time::Instant::now() + interval;
    let mut flying = tokio::task::JoinSet::new();
    loop {
        // Wait for the next start (and a free slot), taking in the outcomes meanwhile.
        loop {
            tokio::select! {
                biased;
                Some(done) = flying.join_next(), if !flying.is_empty() => {
                    match done {
                        Ok(Pushed::Accepted) => backoff = interval,
                        Ok(Pushed::Failed) | Err(_) => {
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                            next = next.max(tokio::time::Instant::now() + backoff);
                        }
                    }
                }
                () = tokio::time::sleep_until(next), if flying.len() < PUSH_IN_FLIGHT => break,
            }
        }
        let now = tokio::time::Instant::now();
        let state = hub.current();
        if let Err(refusal) = state
            .share
            .grant(&daemon, 1, state.packet_bytes, now.into_std())
        {
            // This daemon (or the hub) has had its share; push again when one packet's worth is
            // back.
            state.metrics.delivery(PUSH, api::refusal_outcome(&refusal));
            next = now + refusal.retry_after().max(interval);
            continue;
        }
        next = (next + backoff).max(now + backoff - interval);
        flying.spawn(push_one(state, client.clone(), daemon.clone(), url.clone()));
    }
}

/// Builds one packet for `daemon` and pushes it to `url`.
async fn push_one(
    state: Arc<HubState>,
    client: reqwest::Client,
    daemon: Arc<str>,
    url: Arc<str>,
) -> Pushed {
    let packet = match state
        .factory
        .build(&daemon, state.packet_bytes, &state.metrics)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(daemon = %daemon, error = %e, "no packet to push");
            return Pushed::Failed;
        }
    };
    let res = client
        .post(&*url)
        .header(refill::TRANSPORT_HEADER, refill::TRANSPORT_VERSION)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(crate::secret::body_bytes(packet))
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => {
            state.metrics.delivery(PUSH, "accepted");
            state.metrics.delivered(PUSH, 1);
            Pushed::Accepted
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
            Pushed::Failed
        }
        Err(e) => {
            state.metrics.delivery(PUSH, "unreachable");
            tracing::warn!(daemon = %daemon, error = %e, "push failed");
            Pushed::Failed
        }
    }
}
