//! The daemon's shared state and its two background tasks (refill, fallback).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::DaemonConfig;
use crate::crypto::sig::HubVerifyingKey;
use crate::health::SourceHealth;
use crate::metrics::DaemonMetrics;
use crate::pool::{Pool, PoolError, Provenance};
use crate::secret::Hardening;
use crate::util::now_ms;
use crate::verify::{Policy, Reject, Verifier};

/// One hub as the daemon sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HubStatus {
    pub url: String,
    pub reachable: bool,
    #[serde(skip)]
    pub last_answer: Option<Instant>,
    pub last_error: Option<String>,
}

/// Why a received packet was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Rejected(#[from] Reject),
    #[error(transparent)]
    Pool(PoolError),
}

impl ReceiveError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Rejected(r) => r.reason(),
            Self::Pool(_) => "pool_full",
        }
    }
}

/// The daemon's shared state.
pub struct Daemon {
    pub cfg: DaemonConfig,
    pub pool: Pool,
    pub verifier: Verifier,
    pub metrics: Arc<DaemonMetrics>,
    pub hardening: Hardening,
    pub started: Instant,
    /// The `/quantum/*` service keys (see [`crate::quantum`]).
    pub quantum: crate::quantum::Keys,
    hubs: Mutex<Vec<HubStatus>>,
    /// Last time any hub answered a pull or delivered a verified packet.
    last_contact: Mutex<Instant>,
    last_packet: Mutex<Option<Instant>>,
    fallback_active: AtomicBool,
    local_health: Mutex<SourceHealth>,
    /// Health-test record of packets per hub key id.
    hub_quality: Mutex<HashMap<String, SourceHealth>>,
    /// Provenance classes consumers asked for and the pool lacked: pulled next, by kind.
    wanted: Mutex<Vec<Provenance>>,
    device_status: Mutex<crate::device::DeviceStatus>,
    kernel_status: Mutex<crate::kernel::FeederStatus>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("id", &self.cfg.id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Daemon {
    pub fn new(cfg: DaemonConfig, keys: Vec<HubVerifyingKey>, hardening: Hardening) -> Self {
        let policy = Policy {
            recipient: cfg.id.clone(),
            max_skew_ms: cfg.trust.max_clock_skew_ms,
            require_proof: cfg.trust.require_proof,
            min_node_quorum: cfg.trust.min_node_quorum,
            replay_capacity: cfg.trust.replay_cache_entries,
            alpha_exp: cfg.health.alpha_exponent,
        };
        let quarantine = Duration::from_secs(cfg.health.quarantine_secs);
        Self {
            pool: Pool::new(cfg.pool.capacity_bytes, cfg.pool.low_watermark_bytes),
            verifier: Verifier::new(policy, keys),
            metrics: Arc::new(DaemonMetrics::new()),
            hardening,
            started: Instant::now(),
            quantum: crate::quantum::Keys::default(),
            hubs: Mutex::new(
                cfg.hubs
                    .iter()
                    .map(|h| HubStatus {
                        url: h.url.clone(),
                        reachable: false,
                        last_answer: None,
                        last_error: None,
                    })
                    .collect(),
            ),
            last_contact: Mutex::new(Instant::now()),
            last_packet: Mutex::new(None),
            fallback_active: AtomicBool::new(false),
            local_health: Mutex::new(SourceHealth::new(
                cfg.health.alpha_exponent,
                8.0,
                quarantine,
            )),
            hub_quality: Mutex::new(HashMap::new()),
            wanted: Mutex::new(Vec::new()),
            device_status: Mutex::new(crate::device::DeviceStatus {
                mode: "off",
                path: None,
                reason: "not started".into(),
            }),
            kernel_status: Mutex::new(crate::kernel::FeederStatus {
                state: "off",
                ..Default::default()
            }),
            cfg,
        }
    }

    /// Verifies one encoded packet and admits its entropy. Every outcome is counted.
    pub fn receive(&self, bytes: &[u8]) -> Result<([u8; 16], usize), ReceiveError> {
        let verified = match self.verifier.verify(bytes, now_ms()) {
            Ok(v) => v,
            Err(r) => {
                if let Reject::Health(key_id, e) = &r {
                    let key = format!("hub:{key_id}");
                    let mut q = lock(&self.hub_quality);
                    let h = q.entry(key.clone()).or_insert_with(|| self.new_quality());
                    h.record_error(e.to_string());
                    self.metrics.observe_quality(&key, h.quality());
                }
                self.metrics.reject(r.reason());
                tracing::info!(reason = r.reason(), error = %r, "packet rejected");
                return Err(r.into());
            }
        };
        let key = format!("hub:{}", verified.key_id());
        let nonce = verified.nonce();
        let class = verified.class();
        {
            let mut q = lock(&self.hub_quality);
            let h = q.entry(key.clone()).or_insert_with(|| self.new_quality());
            // The verifier already ran the health tests on these bytes; record the pass.
            h.record_pass();
            self.metrics.observe_quality(&key, h.quality());
        }
        self.touch_hub();
        match self.pool.admit(verified) {
            Ok(n) => {
                self.metrics.packets_accepted.inc();
                self.metrics.admitted(class, n);
                *lock(&self.last_packet) = Some(Instant::now());
                tracing::debug!(bytes = n, provenance = class.as_str(), "packet admitted");
                Ok((nonce, n))
            }
            Err(e) => {
                self.metrics.reject("pool_full");
                tracing::debug!(error = %e, "packet verified but pool is full");
                Err(ReceiveError::Pool(e))
            }
        }
    }

    /// A consumer asked for `class` and the pool had too little: ask the hubs for packets of
    /// that kind at the next refill. Hybrid is what hubs make by default, so it needs no filter.
    pub fn want_class(&self, class: Provenance) {
        if class != Provenance::Hybrid {
            let mut w = lock(&self.wanted);
            if !w.contains(&class) {
                w.push(class);
            }
        }
        self.pool.request_refill();
    }

    fn new_quality(&self) -> SourceHealth {
        SourceHealth::new(self.cfg.health.alpha_exponent, 8.0, Duration::ZERO)
    }

    /// The device face (CUSE, FUSE or off) for `/api/rng/health`.
    pub fn device_status(&self) -> crate::device::DeviceStatus {
        lock(&self.device_status).clone()
    }

    pub fn set_device_status(&self, s: crate::device::DeviceStatus) {
        *lock(&self.device_status) = s;
    }

    /// The kernel feeder's state for `/api/rng/health`.
    pub fn kernel_status(&self) -> crate::kernel::FeederStatus {
        lock(&self.kernel_status).clone()
    }

    pub fn set_kernel_status(&self, f: impl FnOnce(&mut crate::kernel::FeederStatus)) {
        f(&mut lock(&self.kernel_status));
    }

    /// Verifies and admits a file of packets, each prefixed by its length (u32, big-endian) as
    /// in a refill answer: a seed spool handed over out of band (e.g. by a VM host). Returns
    /// (packets admitted, bytes admitted); a packet that fails verification is skipped.
    pub fn admit_spool(&self, bytes: &[u8]) -> Result<(usize, usize), String> {
        let mut rest = bytes;
        let (mut packets, mut admitted) = (0, 0);
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err("spool truncated".into());
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len > rest.len() - 4 {
                return Err("spool truncated".into());
            }
            if let Ok((_, n)) = self.receive(&rest[4..4 + len]) {
                packets += 1;
                admitted += n;
            }
            rest = &rest[4 + len..];
        }
        Ok((packets, admitted))
    }

    fn touch_hub(&self) {
        *lock(&self.last_contact) = Instant::now();
    }

    pub fn fallback_active(&self) -> bool {
        self.fallback_active.load(Ordering::Relaxed)
    }

    pub fn last_packet_age(&self) -> Option<Duration> {
        lock(&self.last_packet).map(|t| t.elapsed())
    }

    pub fn hubs(&self) -> Vec<HubStatus> {
        lock(&self.hubs).clone()
    }

    /// Quality per source: each hub key's packets, and the local fallback.
    pub fn source_quality(&self) -> Vec<(String, f64, crate::health::Status)> {
        let mut out: Vec<_> = lock(&self.hub_quality)
            .iter()
            .map(|(k, h)| (k.clone(), h.quality(), h.status()))
            .collect();
        let local = lock(&self.local_health);
        if self.fallback_active() || local.quality() > 0.0 {
            out.push(("local".into(), local.quality(), local.status()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Records the outcome of talking to hub `i`, logging only changes of state.
    fn set_hub(&self, i: usize, result: Result<(), String>) {
        let mut hubs = lock(&self.hubs);
        let h = &mut hubs[i];
        match result {
            Ok(()) => {
                if !h.reachable {
                    tracing::info!(hub = %h.url, "hub reachable");
                }
                h.reachable = true;
                h.last_answer = Some(Instant::now());
                h.last_error = None;
            }
            Err(e) => {
                if h.reachable || h.last_error.is_none() {
                    tracing::warn!(hub = %h.url, error = %e, "hub unreachable");
                }
                h.reachable = false;
                h.last_error = Some(e);
            }
        }
    }

    /// Asks hub `i` for `bytes` of packets (0 = a reachability probe); admits what verifies.
    async fn pull(
        &self,
        client: &reqwest::Client,
        i: usize,
        bytes: usize,
        source: Option<Provenance>,
    ) -> Result<usize, String> {
        let base = lock(&self.hubs)[i].url.clone();
        let url = format!("{}/api/hub/refill", base.trim_end_matches('/'));
        let mut req = serde_json::json!({ "recipient": self.cfg.id, "bytes": bytes });
        if let Some(p) = source {
            req["source"] = p.as_str().into();
        }
        let resp = client
            .post(&url)
            .header("X-Quantum-Transport", "v1")
            .json(&req)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        if status == reqwest::StatusCode::BAD_REQUEST && source.is_some() {
            // The hub answered: it just has no source of that kind.
            self.touch_hub();
            return Ok(0);
        }
        if !status.is_success() {
            return Err(format!("hub answered {status}"));
        }
        // Bounded read: at most MAX_PACKETS_PER_PULL packets of the largest size.
        let limit = crate::hub::MAX_PACKETS_PER_PULL * (crate::wire::MAX_PACKET_BYTES + 4);
        if resp.content_length().is_some_and(|l| l > limit as u64) {
            return Err("refill answer too large".into());
        }
        let mut body = zeroize::Zeroizing::new(Vec::new());
        let mut resp = resp;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading refill: {e}"))?
        {
            if body.len() + chunk.len() > limit {
                return Err("refill answer too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        self.touch_hub();
        let mut rest: &[u8] = &body;
        let mut admitted = 0;
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err("refill answer truncated".into());
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len > rest.len() - 4 {
                return Err("refill answer truncated".into());
            }
            if let Ok((_, n)) = self.receive(&rest[4..4 + len]) {
                admitted += n;
            }
            rest = &rest[4 + len..];
        }
        Ok(admitted)
    }
}

/// Pulls from the hubs, in order, whenever the pool is below its low watermark.
pub(super) async fn refill_task(d: Arc<Daemon>, client: reqwest::Client) {
    if d.cfg.hubs.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            _ = d.pool.refill_needed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Consumers that asked for one provenance class the pool lacked come first.
        let classes = std::mem::take(&mut *lock(&d.wanted));
        for class in classes {
            let want = d.cfg.pool.refill_bytes.min(d.pool.free());
            for i in 0..d.cfg.hubs.len() {
                match d.pull(&client, i, want, Some(class)).await {
                    Ok(n) if n > 0 => break,
                    Ok(_) => {}
                    Err(e) => d.set_hub(i, Err(e)),
                }
            }
        }
        if !d.pool.below_low_watermark() {
            continue;
        }
        let want = d.cfg.pool.refill_bytes.min(d.pool.free());
        for i in 0..d.cfg.hubs.len() {
            match d.pull(&client, i, want, None).await {
                Ok(n) => {
                    d.set_hub(i, Ok(()));
                    tracing::debug!(hub = i, admitted = n, "refill done");
                    break;
                }
                Err(e) => d.set_hub(i, Err(e)),
            }
        }
    }
}

/// Asks every hub for nothing (`bytes: 0`) every few seconds, so /health shows each hub's
/// reachability and a hub that only answers pulls is not mistaken for a dead one.
pub(super) async fn probe_task(d: Arc<Daemon>, client: reqwest::Client) {
    let every = Duration::from_secs(d.cfg.fallback.after_secs)
        .div_f64(3.0)
        .clamp(Duration::from_millis(500), Duration::from_secs(10));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let probes = (0..d.cfg.hubs.len()).map(|i| {
            let (d, client) = (&d, &client);
            async move {
                let r = d.pull(client, i, 0, None).await;
                if let Err(e) = &r {
                    tracing::debug!(hub = %d.cfg.hubs[i].url, error = %e, "hub probe failed");
                }
                d.set_hub(i, r.map(|_| ()));
            }
        });
        futures::future::join_all(probes).await;
    }
}

/// Enters the fallback after `fallback.after_secs` without any hub, keeps `fallback.fill_bytes`
/// of local entropy in the pool while it lasts, and leaves it as soon as a hub is heard from.
pub(super) async fn fallback_task(d: Arc<Daemon>) {
    let after = Duration::from_secs(d.cfg.fallback.after_secs);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        super::notify::watchdog();
        let silent = lock(&d.last_contact).elapsed();
        if let Some(age) = d.last_packet_age() {
            d.metrics.hub_last_packet_age.set(age.as_secs_f64());
        }
        let stale = silent >= after;
        if stale && d.cfg.fallback.enabled && !d.fallback_active() {
            d.fallback_active.store(true, Ordering::Relaxed);
            d.metrics.fallback_active.set(1);
            tracing::error!(
                silent_secs = silent.as_secs(),
                "ALERT: no hub has answered; serving local fallback entropy (marked `local`)"
            );
        } else if !stale && d.fallback_active() {
            d.fallback_active.store(false, Ordering::Relaxed);
            d.metrics.fallback_active.set(0);
            tracing::warn!("a hub answered again; fallback ended");
        }
        if d.fallback_active() {
            let have = d.pool.len();
            let target = d.cfg.fallback.fill_bytes;
            if have < target {
                let mut h = lock(&d.local_health);
                match d.pool.fill_local(target - have, &mut h) {
                    Ok(n) if n > 0 => {
                        d.metrics.admitted(crate::pool::Provenance::Local, n);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "local fallback failed health tests"),
                }
                d.metrics.observe_quality("local", h.quality());
            }
        }
    }
}
