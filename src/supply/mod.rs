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
            tasks.push(tokio::spawn(hubs::probe_task(
                self.hubs.clone(),
                client,
                probe_period(cfg.fallback.after_secs),
            )));
        }
        tasks.push(tokio::spawn(fallback::fallback_task(self.fallback.clone())));
        tasks
    }
}

/// How often the daemon probes its hubs (for `/api/rng/health`) and, when no packet verified for
/// that long, asks for one packet to prove a hub still delivers: a third of the fallback delay,
/// so three tries come before the fallback starts (at least 0.5 s). Not capped: each probe is a
/// TLS handshake at every hub and each liveness pull a packet of its sources' entropy, so a
/// fleet that reseeds slowly sets a long fallback delay to cost its hubs less.
fn probe_period(fallback_after_secs: u64) -> Duration {
    Duration::from_secs(fallback_after_secs)
        .div_f64(3.0)
        .max(Duration::from_millis(500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_follow_the_fallback_delay() {
        let s = Duration::from_secs;
        assert_eq!(probe_period(30), s(10));
        assert_eq!(probe_period(300), s(100));
        assert_eq!(probe_period(1), Duration::from_millis(500));
    }
}
