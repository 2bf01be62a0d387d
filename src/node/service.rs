//! Starting, running and checking a node: load its keys and certificates, bind its listeners,
//! and zero expired rounds every second.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::Fault;
use super::api::{local_router, router};
use super::state::NodeState;
use crate::config::NodeConfig;
use crate::crypto::falcon::{SigningKey, VerifyingKey};
use crate::sources::make_source;
use crate::tls::{self, Identity};

/// A started node. Dropping it does not stop it; call [`RunningNode::stop`].
#[derive(Debug)]
pub struct RunningNode {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub state: Arc<NodeState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Loads the peers' public keys.
pub fn load_peers(cfg: &NodeConfig) -> anyhow::Result<HashMap<String, VerifyingKey>> {
    cfg.peers
        .iter()
        .map(|(id, path)| {
            VerifyingKey::load(path)
                .map(|k| (id.clone(), k))
                .with_context(|| format!("peer {id:?}"))
        })
        .collect()
}

/// Starts the node and returns once its listeners are bound.
pub async fn start(
    cfg: NodeConfig,
    key: SigningKey,
    fault: Option<Fault>,
) -> anyhow::Result<RunningNode> {
    let identity = Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
    let client_ca = tls::load_certs(&cfg.tls.client_ca)?;
    let server_cfg = tls::server_config(&identity, &client_ca, cfg.tls.pq_only)?;
    let peers = load_peers(&cfg)?;
    let state = Arc::new(NodeState::new(&cfg, key, peers, fault)?);
    let mut tasks = Vec::new();
    let listener = bind(cfg.listen, "listen").await?;
    let addr = listener.local_addr()?;
    tasks.push(tokio::spawn(tls::serve_mtls(
        listener,
        server_cfg,
        router(state.clone()),
        state.metrics().clone(),
    )));
    tasks.push(tokio::spawn(purge_every_second(state.clone())));
    let metrics_addr = match cfg.metrics_listen {
        Some(a) => {
            let l = bind(a, "metrics_listen").await?;
            let bound = l.local_addr()?;
            let r = local_router(state.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(l, r).await {
                    tracing::error!(error = %e, "node metrics listener failed");
                }
            }));
            Some(bound)
        }
        None => None,
    };
    Ok(RunningNode {
        addr,
        metrics_addr,
        state,
        tasks,
    })
}

async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {key} = {addr}"))
}

/// Expired rounds are zeroed within a second even when no request comes.
async fn purge_every_second(state: Arc<NodeState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        state.purge();
    }
}

/// Loads a node's config and every file it names (keys, certificates, the source's files) without
/// starting it; returns a one-line summary.
pub fn check(config_path: &Path) -> anyhow::Result<String> {
    let cfg = NodeConfig::load(config_path)?;
    let key = SigningKey::load(&cfg.signing_key)?;
    let identity = Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
    tls::server_config(
        &identity,
        &tls::load_certs(&cfg.tls.client_ca)?,
        cfg.tls.pq_only,
    )?;
    let peers = load_peers(&cfg)?;
    make_source(&cfg.source).map_err(|e| {
        anyhow::anyhow!(
            "source {:?} ({}): {e}",
            cfg.source.id(),
            cfg.source.source.name()
        )
    })?;
    Ok(format!(
        "{}: ok (node {}, key id {}, {} peers, quorum {})",
        config_path.display(),
        cfg.id,
        key.verifying_key().id(),
        peers.len(),
        cfg.quorum
    ))
}

/// Runs a node from its config file until SIGINT/SIGTERM.
pub async fn run(config_path: &Path, fault: Option<Fault>) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(config_path)?;
    let key = SigningKey::load(&cfg.signing_key)?;
    if let Some(f) = fault {
        tracing::warn!(fault = ?f, "TEST FAULT ACTIVE: this node misbehaves on purpose");
    }
    let node = start(cfg, key, fault).await?;
    tracing::info!(
        node = %node.state.id,
        listen = %node.addr,
        key_id = %node.state.key.verifying_key().id(),
        "kirq node running; Ctrl-C to stop"
    );
    crate::service::shutdown_signal().await;
    tracing::info!("kirq node stopping");
    node.stop();
    Ok(())
}
