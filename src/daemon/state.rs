//! The daemon's shared state and its two background tasks (refill, fallback).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::DaemonConfig;
use crate::crypto::sig::HubVerifyingKey;
use crate::health::SourceHealth;
use crate::metrics::DaemonMetrics;
use crate::pool::{Pool, PoolError};
use crate::secret::Hardening;
use crate::util::now_ms;
use crate::verify::{Policy, Reject, Verifier};
use crate::wire::Provenance;
use crate::wire::refill::{self, FrameError, Frames};

/// Most `/api/rng/random` requests waiting for a refill at once; more are answered 503 at once.
pub const MAX_HTTP_WAITERS: usize = 1024;

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
    /// Last time a packet from a hub passed verification (start time before the first).
    last_contact: Mutex<Instant>,
    last_packet: Mutex<Option<Instant>>,
    fallback_active: AtomicBool,
    local_health: Mutex<SourceHealth>,
    /// Health-test record of packets per hub key id.
    hub_quality: Mutex<HashMap<String, SourceHealth>>,
    /// Provenance classes consumers asked for and the pool lacked: pulled next, by kind.
    wanted: Mutex<Vec<Provenance>>,
    device_status: Mutex<crate::device::DeviceStatus>,
    /// Each trusted node's round numbers, to see rounds a hub discarded.
    continuity: Mutex<super::continuity::Continuity>,
    /// HTTP requests allowed to wait for a refill at once (`http.max_wait_ms`).
    pub http_waiters: tokio::sync::Semaphore,
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
    /// The daemon as `kirqd run` makes it: with the replay journal of
    /// `trust.replay_state_file`, or without one, the replay floor (packets issued before this
    /// start plus the allowed clock skew are refused).
    pub fn open(
        cfg: DaemonConfig,
        keys: Vec<HubVerifyingKey>,
        hardening: Hardening,
    ) -> Result<Self, crate::verify::journal::JournalError> {
        let mut d = Self::new(cfg, keys, hardening);
        let now = now_ms();
        let placeholder = Verifier::new(d.verifier.policy().clone(), Vec::<HubVerifyingKey>::new());
        let verifier = std::mem::replace(&mut d.verifier, placeholder);
        d.verifier = match &d.cfg.trust.replay_state_file {
            Some(path) => {
                let v = verifier.with_replay_journal(path, now)?;
                tracing::info!(
                    file = %path.display(),
                    live_nonces = v.replay_cache_len(),
                    "replay journal loaded: packets admitted before a restart stay refused"
                );
                v
            }
            None => {
                let floor = now + d.cfg.trust.max_clock_skew_ms;
                tracing::warn!(
                    floor_ms = floor,
                    "no trust.replay_state_file: refusing packets issued before this start plus \
                     trust.max_clock_skew_ms, so none admitted before a restart is admitted again"
                );
                verifier.with_replay_floor(floor)
            }
        };
        Ok(d)
    }

    /// The daemon's state with an in-memory replay cache only (in-process tests and benches).
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
        let metrics = Arc::new(DaemonMetrics::new());
        // Each trusted node's round and gap counters exist from the start, at zero.
        for n in &cfg.trust.nodes {
            let node = [("node", n.id.clone())];
            let _ = metrics.node_rounds.get_or_create(&node);
            let _ = metrics.node_round_gaps.get_or_create(&node);
        }
        Self {
            pool: Pool::new(cfg.pool.capacity_bytes, cfg.pool.low_watermark_bytes)
                .with_high_watermark(cfg.pool.high_watermark()),
            verifier: Verifier::new(policy, keys),
            metrics,
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
            continuity: Mutex::new(Default::default()),
            http_waiters: tokio::sync::Semaphore::new(MAX_HTTP_WAITERS),
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
        let verified = self
            .verifier
            .verify(bytes, now_ms())
            .map_err(|r| self.rejected(r))?;
        self.admit(verified)
    }

    /// Verifies and admits a run of frames (`u32 length ‖ packet`, as in a refill answer or a
    /// spool) with one sync of the replay journal for the whole run. A packet that fails
    /// verification is skipped (and counted). Returns (packets admitted, bytes admitted), or the
    /// framing error; nothing after a framing error is admitted.
    pub fn receive_frames(&self, bytes: &[u8]) -> Result<(usize, usize), FrameError> {
        let now = now_ms();
        let mut pending = Vec::new();
        let mut frames = Frames::new(bytes);
        let mut framing = Ok(());
        for f in &mut frames {
            match f {
                Ok(packet) => match self.verifier.verify_unsynced(packet, now) {
                    Ok(u) => pending.push(u),
                    Err(r) => {
                        self.rejected(r);
                    }
                },
                Err(e) => {
                    framing = Err(e);
                    break;
                }
            }
        }
        let verified = match self.verifier.sync(pending) {
            Ok(v) => v,
            Err(r) => {
                self.rejected(r);
                Vec::new()
            }
        };
        let (mut packets, mut admitted) = (0, 0);
        for v in verified {
            if let Ok((_, n)) = self.admit(v) {
                packets += 1;
                admitted += n;
            }
        }
        framing.map(|()| (packets, admitted))
    }

    /// Counts and logs a refused packet; returns the error for the caller.
    fn rejected(&self, r: Reject) -> ReceiveError {
        if let Reject::Health(key_id, e) = &r {
            let key = format!("hub:{key_id}");
            let mut q = lock(&self.hub_quality);
            let h = q.entry(key.clone()).or_insert_with(|| self.new_quality());
            h.record_error(e.to_string());
            self.metrics.observe_quality(&key, h.quality());
        }
        self.metrics.reject(r.reason());
        tracing::info!(reason = r.reason(), error = %r, "packet rejected");
        r.into()
    }

    /// Admits a packet that passed every check (its nonce durable). A verified packet is what
    /// ends the silence that starts the fallback, even when the pool is too full to take it.
    fn admit(
        &self,
        verified: crate::verify::VerifiedPacket,
    ) -> Result<([u8; 16], usize), ReceiveError> {
        let key = format!("hub:{}", verified.key_id());
        let nonce = verified.nonce();
        let class = verified.class();
        self.check_continuity(&verified);
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

    /// Counts each node's round and any of its round numbers now known to be missing.
    fn check_continuity(&self, verified: &crate::verify::VerifiedPacket) {
        let mut c = lock(&self.continuity);
        for s in verified.provenance() {
            let Some(r) = &s.receipt else { continue };
            let node = [("node", s.id.clone())];
            self.metrics.node_rounds.get_or_create(&node).inc();
            let missing = c.observe(&s.id, r.epoch, r.sequence);
            if missing > 0 {
                self.metrics
                    .node_round_gaps
                    .get_or_create(&node)
                    .inc_by(missing);
                tracing::warn!(
                    node = %s.id,
                    missing,
                    sequence = r.sequence,
                    "rounds this node revealed for this daemon never arrived (discarded by a hub?)"
                );
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

    /// Verifies and admits a seed spool handed over out of band (e.g. by a VM host): a file of
    /// frames as in a refill answer. The file is consumed first (unlinked, and the unlink synced)
    /// so a restart can never admit it again, then its packets are verified and admitted. A
    /// missing spool is not an error (a restarted daemon finds its spool already consumed).
    /// Returns (packets admitted, bytes admitted), or `None` when there was no spool.
    pub fn admit_spool(&self, path: &std::path::Path) -> anyhow::Result<Option<(usize, usize)>> {
        use anyhow::Context;
        // Without a journal the replay floor refuses every packet issued before this start, a
        // spool's included, and nothing would stop a re-supplied copy of it: refuse plainly.
        anyhow::ensure!(
            self.cfg.trust.replay_state_file.is_some(),
            "--admit-packets needs trust.replay_state_file (the replay journal), so that a spool's \
             packets can never be admitted twice"
        );
        let bytes = match std::fs::read(path) {
            Ok(b) => crate::secret::SecretBytes::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read spool {}", path.display()));
            }
        };
        std::fs::remove_file(path)
            .with_context(|| format!("cannot consume spool {}", path.display()))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {} after consuming the spool", dir.display()))?;
        let admitted = self
            .receive_frames(bytes.expose())
            .with_context(|| format!("spool {}", path.display()))?;
        Ok(Some(admitted))
    }

    fn touch_hub(&self) {
        *lock(&self.last_contact) = Instant::now();
    }

    /// Time since the last verified packet from any hub (or since start).
    pub fn silence(&self) -> Duration {
        lock(&self.last_contact).elapsed()
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
    /// Returns the bytes admitted. An answer is not contact: only a verified packet ends the
    /// silence that starts the fallback.
    async fn pull(
        &self,
        client: &reqwest::Client,
        i: usize,
        bytes: usize,
        source: Option<Provenance>,
    ) -> Result<usize, String> {
        let base = lock(&self.hubs)[i].url.clone();
        let url = format!("{}{}", base.trim_end_matches('/'), refill::REFILL_PATH);
        let req = refill::RefillRequest::new(&self.cfg.id, bytes, source);
        let resp = client
            .post(&url)
            .header(refill::TRANSPORT_HEADER, refill::TRANSPORT_VERSION)
            .json(&req)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        if status == reqwest::StatusCode::BAD_REQUEST && source.is_some() {
            // The hub answered: it just has no source of that kind.
            return Ok(0);
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            // Reachable, but this daemon has used its share for now.
            return Ok(0);
        }
        if !status.is_success() {
            return Err(format!("hub answered {status}"));
        }
        // Bounded read: at most MAX_PACKETS_PER_PULL packets of the largest size.
        let limit = refill::MAX_ANSWER_BYTES;
        let declared = resp.content_length().unwrap_or(0);
        if declared > limit as u64 {
            return Err("refill answer too large".into());
        }
        // Reserved once from the declared length; beyond it the buffer grows by hand, zeroing
        // the old allocation, so no unzeroed copy of the entropy is left behind.
        let mut body = crate::secret::SecretBytes::new(Vec::with_capacity(declared as usize));
        let mut resp = resp;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading refill: {e}"))?
        {
            if body.len() + chunk.len() > limit {
                return Err("refill answer too large".into());
            }
            body.append(&chunk);
        }
        let (_, admitted) = self
            .receive_frames(body.expose())
            .map_err(|e| format!("refill answer: {e}"))?;
        Ok(admitted)
    }
}

/// Keeps the pool at its high watermark: whenever [`Pool::refill_plan`] asks for bytes (the
/// pool fell a refill's worth below the high watermark, below the low watermark, or a consumer
/// went unserved), pulls that much from the hubs in order, at most `pool.refill_bytes` per
/// pull. While no hub delivers, waits between attempts (doubling to 5 s).
pub(super) async fn refill_task(d: Arc<Daemon>, client: reqwest::Client) {
    if d.cfg.hubs.is_empty() {
        return;
    }
    let chunk = d.cfg.pool.refill_bytes;
    let mut backoff = Duration::ZERO;
    loop {
        tokio::select! {
            _ = d.pool.refill_needed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
        }
        // Consumers that asked for one provenance class the pool lacked come first.
        let classes = std::mem::take(&mut *lock(&d.wanted));
        for class in classes {
            let want = chunk.min(d.pool.free());
            for i in 0..d.cfg.hubs.len() {
                match d.pull(&client, i, want, Some(class)).await {
                    Ok(n) if n > 0 => break,
                    Ok(_) => {}
                    Err(e) => d.set_hub(i, Err(e)),
                }
            }
        }
        let mut plan = d.pool.refill_plan(chunk);
        let mut delivered = plan == 0;
        while plan > 0 {
            let want = plan.min(chunk);
            let mut got = 0;
            for i in 0..d.cfg.hubs.len() {
                match d.pull(&client, i, want, None).await {
                    Ok(n) => {
                        d.set_hub(i, Ok(()));
                        tracing::debug!(hub = i, asked = want, admitted = n, "refill pull");
                        got = n;
                        if n > 0 {
                            break;
                        }
                    }
                    Err(e) => d.set_hub(i, Err(e)),
                }
            }
            if got == 0 {
                break;
            }
            delivered = true;
            plan = plan.saturating_sub(got);
        }
        backoff = if delivered {
            Duration::ZERO
        } else {
            (backoff * 2).clamp(Duration::from_millis(250), Duration::from_secs(5))
        };
    }
}

/// Asks every hub for nothing (`bytes: 0`) every few seconds, so /health shows each hub's
/// reachability. When no verified packet arrived for a probe interval (an idle daemon whose pool
/// is full, or a hub that answers but delivers nothing), it also asks the hubs, in order, for one
/// packet: silence is "no verified bytes", never "no answer", so a hub that answers but cannot
/// or will not deliver good packets still starts the fallback.
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
        if d.silence() < every {
            continue;
        }
        for i in 0..d.cfg.hubs.len() {
            let before = d.silence();
            if let Err(e) = d.pull(&client, i, 1, None).await {
                tracing::debug!(hub = %d.cfg.hubs[i].url, error = %e, "liveness pull failed");
            }
            if d.silence() < before {
                break;
            }
        }
    }
}

/// Enters the fallback after `fallback.after_secs` without any hub, keeps `fallback.fill_bytes`
/// of local entropy in the pool while it lasts, and leaves it as soon as a hub is heard from.
pub(super) async fn fallback_task(d: Arc<Daemon>) {
    let after = Duration::from_secs(d.cfg.fallback.after_secs);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        crate::service::notify::watchdog();
        let silent = d.silence();
        if let Some(age) = d.last_packet_age() {
            d.metrics.hub_last_packet_age.set(age.as_secs_f64());
        }
        let stale = silent >= after;
        if stale && d.cfg.fallback.enabled && !d.fallback_active() {
            d.fallback_active.store(true, Ordering::Relaxed);
            d.metrics.fallback_active.set(1);
            tracing::error!(
                silent_secs = silent.as_secs(),
                "ALERT: no verified packet from any hub; serving local fallback entropy (marked `local`)"
            );
        } else if !stale && d.fallback_active() {
            d.fallback_active.store(false, Ordering::Relaxed);
            d.metrics.fallback_active.set(0);
            tracing::warn!("a hub delivered a verified packet again; fallback ended");
        }
        if d.fallback_active() {
            let have = d.pool.len();
            let target = d.cfg.fallback.fill_bytes;
            if have < target {
                let mut h = lock(&d.local_health);
                match d.pool.fill_local(target - have, &mut h) {
                    Ok(n) if n > 0 => {
                        d.metrics.admitted(Provenance::Local, n);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "local fallback failed health tests"),
                }
                d.metrics.observe_quality("local", h.quality());
            }
        }
    }
}
