//! How verified entropy gets into kirqd's pool, and what the daemon knows of its suppliers:
//! [`Intake`] verifies and admits every packet (pushed, pulled or from a spool), [`Hubs`] pulls
//! from the configured hubs and tracks their reachability, [`Fallback`] keeps the pool served
//! from local entropy, loudly, while no hub delivers. The daemon ([`crate::daemon`]) builds one
//! [`Supply`] and runs its tasks; the HTTP face reads it for `/api/rng/health`.

pub mod continuity;
pub mod fallback;
pub mod hubs;
pub mod intake;

use std::sync::Arc;
use std::time::Duration;

pub use fallback::Fallback;
pub use hubs::{HubStatus, Hubs};
pub use intake::{Intake, ReceiveError};

use crate::config::DaemonConfig;
use crate::health::SourceHealth;
use crate::metrics::DaemonMetrics;
use crate::pool::Pool;
use crate::util::lock;
use crate::verify::Verifier;

/// The three parts, shared by the daemon's tasks and faces.
#[derive(Debug, Clone)]
pub struct Supply {
    pub intake: Arc<Intake>,
    pub hubs: Arc<Hubs>,
    pub fallback: Arc<Fallback>,
}

impl Supply {
    pub fn new(
        cfg: &DaemonConfig,
        verifier: Verifier,
        pool: Arc<Pool>,
        metrics: Arc<DaemonMetrics>,
    ) -> Self {
        let alpha = cfg.health.alpha_exponent;
        let intake = Arc::new(Intake::new(verifier, pool.clone(), metrics.clone(), alpha));
        let urls: Vec<String> = cfg.hubs.iter().map(|h| h.url.clone()).collect();
        let hubs = Arc::new(Hubs::new(&cfg.id, &urls, intake.clone(), pool.clone()));
        let quarantine = Duration::from_secs(cfg.health.quarantine_secs);
        let fallback = Arc::new(Fallback::new(
            cfg.fallback.clone(),
            SourceHealth::new(alpha, 8.0, quarantine),
            intake.clone(),
            pool,
            metrics,
        ));
        Self {
            intake,
            hubs,
            fallback,
        }
    }

    /// Quality per source: each hub key's packets, and the local fallback once used.
    pub fn source_quality(&self) -> Vec<(String, f64, crate::health::Status)> {
        let mut out = self.intake.hub_quality();
        if let Some((q, s)) = self.fallback.local_quality() {
            out.push(("local".into(), q, s));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Starts the pull tasks (when hubs are configured) and the fallback monitor.
    pub fn spawn_tasks(
        &self,
        cfg: &DaemonConfig,
        client: reqwest::Client,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if !cfg.hubs.is_empty() {
            tasks.push(tokio::spawn(hubs::refill_task(
                self.hubs.clone(),
                client.clone(),
                cfg.pool.refill_bytes,
            )));
            // A third of the fallback delay, so a silent hub is noticed in time.
            let every = Duration::from_secs(cfg.fallback.after_secs)
                .div_f64(3.0)
                .clamp(Duration::from_millis(500), Duration::from_secs(10));
            tasks.push(tokio::spawn(hubs::probe_task(
                self.hubs.clone(),
                client,
                every,
            )));
        }
        tasks.push(tokio::spawn(fallback::fallback_task(self.fallback.clone())));
        tasks
    }
}
