//! The loud fallback: after `fallback.after_secs` without a verified packet from any hub, the
//! daemon keeps `fallback.fill_bytes` of health-tested local entropy (marked `local`) in the
//! pool, says so in an ALERT log line, `/api/rng/health` and `kirq_fallback_active`, and leaves
//! the fallback as soon as a hub delivers a verified packet again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::FallbackConfig;
use crate::health::SourceHealth;
use crate::metrics::DaemonMetrics;
use crate::pool::Pool;
use crate::wire::Provenance;

use super::intake::Intake;
use super::lock;

/// The fallback's state.
#[derive(Debug)]
pub struct Fallback {
    cfg: FallbackConfig,
    active: AtomicBool,
    local_health: Mutex<SourceHealth>,
    intake: Arc<Intake>,
    pool: Arc<Pool>,
    metrics: Arc<DaemonMetrics>,
}

impl Fallback {
    /// `health` tests the local bytes (`health.*` of the config).
    pub fn new(
        cfg: FallbackConfig,
        health: SourceHealth,
        intake: Arc<Intake>,
        pool: Arc<Pool>,
        metrics: Arc<DaemonMetrics>,
    ) -> Self {
        Self {
            cfg,
            active: AtomicBool::new(false),
            local_health: Mutex::new(health),
            intake,
            pool,
            metrics,
        }
    }

    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// The local source's quality, once it has been used.
    pub fn local_quality(&self) -> Option<(f64, crate::health::Status)> {
        let local = lock(&self.local_health);
        (self.active() || local.quality() > 0.0).then(|| (local.quality(), local.status()))
    }

    /// One look at the silence: enter or leave the fallback, and top the pool up while in it.
    fn tick(&self) {
        let silent = self.intake.silence();
        if let Some(age) = self.intake.last_packet_age() {
            self.metrics.hub_last_packet_age.set(age.as_secs_f64());
        }
        let stale = silent >= Duration::from_secs(self.cfg.after_secs);
        if stale && self.cfg.enabled && !self.active() {
            self.active.store(true, Ordering::Relaxed);
            self.metrics.fallback_active.set(1);
            tracing::error!(
                silent_secs = silent.as_secs(),
                "ALERT: no verified packet from any hub; serving local fallback entropy (marked `local`)"
            );
        } else if !stale && self.active() {
            self.active.store(false, Ordering::Relaxed);
            self.metrics.fallback_active.set(0);
            tracing::warn!("a hub delivered a verified packet again; fallback ended");
        }
        if self.active() {
            self.fill();
        }
    }

    fn fill(&self) {
        let (have, target) = (self.pool.len(), self.cfg.fill_bytes);
        if have >= target {
            return;
        }
        let mut h = lock(&self.local_health);
        match self.pool.fill_local(target - have, &mut h) {
            Ok(n) if n > 0 => self.metrics.admitted(Provenance::Local, n),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "local fallback failed health tests"),
        }
        self.metrics.observe_quality("local", h.quality());
    }
}

/// Looks at the silence four times a second (and pings systemd's watchdog from this loop, so a
/// wedged daemon stops the pings).
pub async fn fallback_task(f: Arc<Fallback>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        crate::service::notify::watchdog();
        f.tick();
    }
}
