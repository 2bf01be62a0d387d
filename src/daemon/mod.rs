//! kirqd: receives packets over mutual TLS, verifies them, keeps the single-use pool, and serves it.
//!
//! This module is the composition root: [`Daemon`] builds the parts from the config (the pool,
//! the [`crate::supply`] side that verifies and admits packets and pulls from hubs, the metrics,
//! the quantum keys) and [`start`] hands each face the handles it uses: the receive listener and
//! the HTTP shim ([`crate::http`]), the device ([`crate::device`]), the kernel feeder
//! ([`crate::kernel`]) and the supply's tasks (refill, probe, fallback).

mod state;
pub use state::Daemon;

use std::net::SocketAddr;

use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::DaemonConfig;
use crate::crypto::falcon::VerifyingKey;
use crate::crypto::sig::HubVerifyingKey;
use crate::pool::persist::{PoolKey, SealedFile};
use crate::service::{notify, shutdown_signal};
use crate::tls::{self, Identity};

/// How long a stopping daemon waits for in-flight HTTP requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A started daemon. Call [`RunningDaemon::stop`] to end its tasks, or
/// [`RunningDaemon::shutdown`] for a clean stop that seals the pool.
#[derive(Debug)]
pub struct RunningDaemon {
    pub daemon: Arc<Daemon>,
    pub receive_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    http_task: Option<tokio::task::JoinHandle<()>>,
    stop_http: tokio::sync::watch::Sender<bool>,
    sealed: Option<(SealedFile, PoolKey)>,
    device: Option<crate::device::DeviceHandle>,
}

impl RunningDaemon {
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
        if let Some(t) = self.http_task {
            t.abort();
        }
        if let Some(d) = self.device {
            d.stop();
        }
    }

    /// Stops accepting packets and requests, lets in-flight requests finish (at most
    /// [`SHUTDOWN_GRACE`]), then seals the unserved bytes if `[persist]` is configured. Returns
    /// the number of bytes sealed.
    pub async fn shutdown(mut self) -> anyhow::Result<usize> {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(d) = self.device.take() {
            d.stop();
        }
        let _ = self.stop_http.send(true);
        if let Some(t) = self.http_task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, t).await.is_err()
        {
            tracing::warn!("in-flight HTTP requests did not finish in {SHUTDOWN_GRACE:?}");
        }
        let Some((file, key)) = &self.sealed else {
            let n = self.daemon.pool.len();
            tracing::info!(
                unserved_bytes = n,
                "no [persist] state_file: unserved entropy discarded"
            );
            return Ok(0);
        };
        let segments = self.daemon.pool.drain_for_seal();
        let n = file.save(key, &segments)?;
        tracing::info!(bytes = n, file = %file.path.display(), "unserved entropy sealed");
        Ok(n)
    }
}

/// Opens the sealed pool (if configured) and restores it into `pool` before anything is served.
fn restore_sealed(
    cfg: &DaemonConfig,
    pool: &crate::pool::Pool,
) -> anyhow::Result<Option<(SealedFile, PoolKey)>> {
    let (Some(path), Some(key_path)) = (&cfg.persist.state_file, cfg.persist.key_path()) else {
        return Ok(None);
    };
    let key = PoolKey::load(&key_path)?;
    let file = SealedFile::new(path.clone());
    match file.take(&key) {
        Ok(Some(unsealed)) => {
            let n = pool.restore(unsealed);
            tracing::info!(bytes = n, file = %path.display(), "restored sealed entropy; file destroyed");
        }
        Ok(None) => tracing::info!(file = %path.display(), "no sealed entropy to restore"),
        Err(e) if e.is_recoverable() => tracing::error!(error = %e, "sealed pool refused"),
        Err(e) => return Err(e.into()),
    }
    Ok(Some((file, key)))
}

/// Loads the trusted hub keys (Falcon-512 or ML-DSA-65, as each file says) named in the config.
pub fn load_trusted_keys(cfg: &DaemonConfig) -> anyhow::Result<Vec<HubVerifyingKey>> {
    cfg.trust
        .hub_keys
        .iter()
        .map(|p| HubVerifyingKey::load(p).map_err(anyhow::Error::from))
        .collect()
}

/// Loads the trusted decentralized nodes' keys named in the config.
pub fn load_trusted_nodes(cfg: &DaemonConfig) -> anyhow::Result<Vec<(String, VerifyingKey)>> {
    cfg.trust
        .nodes
        .iter()
        .map(|n| {
            VerifyingKey::load(&n.public_key)
                .map(|k| (n.id.clone(), k))
                .map_err(|e| anyhow::anyhow!("trusted node {}: {e}", n.id))
        })
        .collect()
}

/// Starts the daemon's listeners and tasks; returns once the listeners are bound.
pub async fn start(
    cfg: DaemonConfig,
    hardening: crate::secret::Hardening,
) -> anyhow::Result<RunningDaemon> {
    let keys = load_trusted_keys(&cfg)?;
    let identity = Identity::load(&cfg.receive.cert, &cfg.receive.key)?;
    let hub_ca = tls::load_certs(&cfg.receive.hub_ca)?;
    let server_cfg = tls::server_config(&identity, &hub_ca, cfg.receive.pq_only)?;
    let client = tls::https_client(
        tls::client_config(&identity, &hub_ca, cfg.receive.pq_only)?,
        Duration::from_secs(10),
    );
    let nodes = load_trusted_nodes(&cfg)?;
    let daemon = Arc::new(Daemon::open(cfg.clone(), keys, hardening)?);
    let verifier = &daemon.supply.intake.verifier;
    verifier.set_trusted_nodes(nodes);
    if daemon.pool.secret_memory() {
        tracing::info!("pool memory: memfd_secret (out of the kernel's direct map, never dumped)");
    } else {
        tracing::warn!(
            "pool memory: heap (memfd_secret unavailable); locked and undumped if the hardening above held"
        );
    }
    let sealed = restore_sealed(&cfg, &daemon.pool)?;
    let mut tasks = Vec::new();
    let (stop_http, mut stop_rx) = tokio::sync::watch::channel(false);
    tasks.extend(daemon.start_quantum()?);

    let listener = tokio::net::TcpListener::bind(cfg.receive.listen)
        .await
        .with_context(|| format!("cannot listen on receive.listen = {}", cfg.receive.listen))?;
    let receive_addr = listener.local_addr()?;
    tasks.push(tokio::spawn(tls::serve_mtls(
        listener,
        server_cfg,
        crate::http::receive_router(daemon.handles()),
        daemon.metrics.clone(),
    )));

    let (http_addr, http_task) = match cfg.http.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on http.listen = {addr}"))?;
            let a = l.local_addr()?;
            let app = crate::http::router(daemon.handles());
            let task = tokio::spawn(async move {
                let svc = app.into_make_service_with_connect_info::<SocketAddr>();
                let stopped = async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(l, svc).with_graceful_shutdown(stopped).await {
                    tracing::error!(error = %e, "HTTP shim failed");
                }
            });
            (Some(a), Some(task))
        }
        None => (None, None),
    };

    tasks.extend(daemon.supply.spawn_tasks(&cfg, client));
    let core = daemon.device_core(cfg.device.rate_limit_bytes_per_second);
    let device = crate::device::start(core, &cfg.device, &daemon.device_status)?;
    if cfg.kernel.enabled {
        tasks.push(tokio::spawn(crate::kernel::run(daemon.kernel_feed())));
    }
    tracing::info!(
        id = %cfg.id,
        receive = %receive_addr,
        http = ?http_addr,
        trusted_keys = ?verifier.trusted_key_ids(),
        "kirqd started"
    );
    Ok(RunningDaemon {
        daemon,
        receive_addr,
        http_addr,
        tasks,
        http_task,
        stop_http,
        sealed,
        device,
    })
}

/// Runs the daemon from a config file until SIGINT/SIGTERM; SIGHUP reloads the trusted hub keys.
/// `admit` is an optional spool of length-prefixed packets, consumed, verified and admitted at
/// start (see [`Daemon::admit_spool`]).
pub async fn run(config_path: &Path, admit: Option<&Path>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let cfg = DaemonConfig::load(config_path)?;
    let hardening = crate::secret::harden_process();
    crate::service::log_hardening(hardening);
    let kernel = cfg.kernel.enabled;
    let d = start(cfg, hardening).await?;
    if let Some(p) = admit {
        match d.daemon.admit_spool(p)? {
            Some((packets, n)) => {
                tracing::info!(packets, bytes = n, spool = %p.display(), "spool consumed and admitted")
            }
            None => tracing::warn!(
                spool = %p.display(),
                "no spool to admit (already consumed by an earlier start, or never written)"
            ),
        }
    }
    if !kernel {
        // With the kernel feeder, READY=1 follows the first seeding instead.
        notify::send(&format!(
            "READY=1\nSTATUS=serving; {} bytes in pool",
            d.daemon.pool.len()
        ));
    }
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = shutdown_signal() => break,
            _ = hup.recv() => reload(config_path, &d.daemon),
        }
    }
    tracing::info!(unserved_bytes = d.daemon.pool.len(), "kirqd stopping");
    notify::send("STOPPING=1\nSTATUS=sealing the pool");
    d.shutdown().await?;
    Ok(())
}

/// SIGHUP: re-reads the config and replaces the trusted hub keys; the pool is kept. Other changed
/// settings take effect at the next restart (said in the log).
fn reload(config_path: &Path, d: &Daemon) {
    let result = DaemonConfig::load(config_path)
        .map_err(anyhow::Error::from)
        .and_then(|c| load_trusted_keys(&c).map(|k| (c, k)))
        .and_then(|(c, k)| load_trusted_nodes(&c).map(|n| (c, k, n)));
    match result {
        Ok((c, keys, nodes)) => {
            let ids: Vec<_> = keys.iter().map(|k| k.id()).collect();
            let node_ids: Vec<_> = nodes.iter().map(|(id, _)| id.clone()).collect();
            let verifier = &d.supply.intake.verifier;
            verifier.set_trusted_keys(keys);
            verifier.set_trusted_nodes(nodes);
            tracing::info!(trusted_keys = ?ids, trusted_nodes = ?node_ids, "SIGHUP: trusted hub and node keys reloaded; pool kept");
            if format!("{:?}", c.without_keys()) != format!("{:?}", d.cfg.without_keys()) {
                tracing::warn!("SIGHUP: other config changes need a restart to take effect");
            }
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "SIGHUP: reload failed; keeping the old keys")
        }
    }
}
