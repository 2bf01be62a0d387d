//! kirqd: receives packets over mutual TLS, verifies them, keeps the single-use pool, and serves it.
//!
//! One [`Daemon`] value holds the shared state; a few tasks drive it: the receive listener (push
//! from hubs), the refill task (pull from hubs below the low watermark, and a probe so a quiet hub
//! is not mistaken for a dead one), the fallback monitor (local entropy, loudly, after
//! `fallback.after_secs` without any hub), and the HTTP shim ([`crate::http`]).

mod state;
pub mod systemd;

pub use state::{Daemon, HubStatus, ReceiveError};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::DaemonConfig;
use crate::crypto::falcon::VerifyingKey;
use crate::tls::{self, Identity};

/// A started daemon. Call [`RunningDaemon::stop`] to end its tasks.
#[derive(Debug)]
pub struct RunningDaemon {
    pub daemon: Arc<Daemon>,
    pub receive_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    device: Option<crate::device::DeviceHandle>,
}

impl RunningDaemon {
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
        if let Some(d) = self.device {
            d.stop();
        }
    }
}

/// Loads every trusted hub key named in the config.
pub fn load_trusted_keys(cfg: &DaemonConfig) -> anyhow::Result<Vec<VerifyingKey>> {
    cfg.trust
        .hub_keys
        .iter()
        .map(|p| VerifyingKey::load(p).map_err(anyhow::Error::from))
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
    let daemon = Arc::new(Daemon::new(cfg.clone(), keys, hardening));
    let mut tasks = Vec::new();

    let listener = tokio::net::TcpListener::bind(cfg.receive.listen).await?;
    let receive_addr = listener.local_addr()?;
    tasks.push(tokio::spawn(tls::serve_mtls(
        listener,
        server_cfg,
        crate::http::receive_router(daemon.clone()),
        daemon.metrics.clone(),
    )));

    let http_addr = match cfg.http.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await?;
            let a = l.local_addr()?;
            let app = crate::http::app(daemon.clone());
            tasks.push(tokio::spawn(async move {
                let svc = app.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(e) = axum::serve(l, svc).await {
                    tracing::error!(error = %e, "HTTP shim failed");
                }
            }));
            Some(a)
        }
        None => None,
    };

    tasks.push(tokio::spawn(state::refill_task(daemon.clone(), client)));
    tasks.push(tokio::spawn(state::fallback_task(daemon.clone())));
    let (status, device) = crate::device::start(&daemon, &cfg.device)?;
    daemon.set_device_status(status);
    if cfg.kernel.enabled {
        tasks.push(tokio::spawn(crate::kernel::run(daemon.clone())));
    }
    tracing::info!(
        id = %cfg.id,
        receive = %receive_addr,
        http = ?http_addr,
        trusted_keys = ?daemon.verifier.trusted_key_ids(),
        "kirqd started"
    );
    Ok(RunningDaemon {
        daemon,
        receive_addr,
        http_addr,
        tasks,
        device,
    })
}

/// Runs the daemon from a config file until SIGINT/SIGTERM. `admit` is an optional spool of
/// length-prefixed packets verified and admitted at start (see [`Daemon::admit_spool`]).
pub async fn run(config_path: &Path, admit: Option<&Path>) -> anyhow::Result<()> {
    let cfg = DaemonConfig::load(config_path)?;
    let hardening = crate::secret::harden_process();
    log_hardening(hardening);
    let kernel = cfg.kernel.enabled;
    let d = start(cfg, hardening).await?;
    if let Some(p) = admit {
        let bytes = zeroize::Zeroizing::new(std::fs::read(p)?);
        let (packets, n) = d.daemon.admit_spool(&bytes).map_err(anyhow::Error::msg)?;
        tracing::info!(packets, bytes = n, spool = %p.display(), "spool admitted");
    }
    if !kernel {
        // With the kernel feeder, READY=1 follows the first seeding instead.
        systemd::notify("READY=1\nSTATUS=serving");
    }
    shutdown_signal().await;
    tracing::info!(
        unserved_bytes = d.daemon.pool.len(),
        "kirqd stopping; unserved entropy is discarded"
    );
    d.stop();
    Ok(())
}

pub fn log_hardening(h: crate::secret::Hardening) {
    if h.memory_locked {
        tracing::info!("memory locked (mlockall): entropy is never swapped");
    } else {
        tracing::warn!("could not lock memory (mlockall; needs CAP_IPC_LOCK or RLIMIT_MEMLOCK)");
    }
    if h.no_core_dumps {
        tracing::info!("core dumps disabled for this process");
    } else {
        tracing::warn!("could not disable core dumps (prctl PR_SET_DUMPABLE)");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
