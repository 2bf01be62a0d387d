//! Building one packet: choose the sources that may be asked, fetch each one's weighted share
//! concurrently (each under its own timeout), back off the ones that failed, health-test the rest,
//! apply the hybrid policy, commit, mix, sign.
//!
//! Shares are in min-entropy, not bytes: for a packet of `n` bytes, source `i` with weight `w_i`
//! and declared min-entropy `H_i` per byte gives `ceil(8 n w_i / (W H_i))` raw bytes, so the
//! contributions carry at least `8 n` bits together. When a source fails mid-packet the packet is
//! cut to what the remaining contributions carry (`floor(sum(len_i H_i) / 8)` bytes): credit is
//! never more than the sources justify. A source that is quarantined, disabled or backing off is
//! not waited for, so one slow or broken source costs at most its own `timeout_ms`, once per
//! backoff period.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::{BelowMin, HybridConfig};
use crate::crypto::commit_contribution;
use crate::crypto::falcon::SigningKey;
use crate::health::SourceHealth;
use crate::metrics::{HubMetrics, Label1};
use crate::mix::{Contribution, mix};
use crate::secret::SecretBytes;
use crate::sources::gate::{Blocked, Gate, Policy};
use crate::sources::{Source, SourceError};
use crate::util::now_ms;
use crate::wire::{MAX_CONTRIBUTION_BYTES, Packet, SourceEntry};

/// Default time one source may take for one packet's bytes.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no healthy source delivered bytes for this packet")]
    NoHealthySource,
    #[error("only {have} healthy sources, {need} required (hybrid.below_min = \"stop\")")]
    BelowMinSources { have: usize, need: usize },
    #[error("no configured source has the id or kind {0:?}")]
    UnknownSource(String),
}

/// How the hub treats one source beyond fetching: its share and its backoff.
#[derive(Debug, Clone, Copy)]
pub struct SourceSettings {
    pub weight: u32,
    pub timeout: Duration,
    pub policy: Policy,
}

impl Default for SourceSettings {
    fn default() -> Self {
        Self {
            weight: 1,
            timeout: SOURCE_TIMEOUT,
            policy: Policy::default(),
        }
    }
}

/// A source with its health and backoff state.
#[derive(Debug)]
pub struct TrackedSource {
    pub source: Box<dyn Source>,
    pub health: Mutex<SourceHealth>,
    pub gate: Mutex<Gate>,
    pub settings: SourceSettings,
    /// Held for the length of one fetch: packets built concurrently (push loops, pulls) take
    /// turns at a source instead of colliding in it, each within its own timeout.
    turn: tokio::sync::Mutex<()>,
}

/// What the last packet attempt did, for /health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No packet built yet.
    Idle,
    /// At least `min_sources` distinct sources went into the last hybrid packet.
    Hybrid,
    /// Below `min_sources`: the last packet came from one source (`below_min = "single"`).
    Single,
    /// Below `min_sources`: no packets (`below_min = "stop"`).
    Stopped,
}

#[derive(Debug)]
struct HybridMetrics {
    packets: Family<Label1, Counter>,
    refused: Family<Label1, Counter>,
    below_min: Gauge,
    healthy: Gauge,
    raw_bytes: Family<Label1, Counter>,
}

/// Makes signed packets from the hub's sources.
#[derive(Debug)]
pub struct PacketFactory {
    key: SigningKey,
    sources: Vec<TrackedSource>,
    sequence: AtomicU64,
    lifetime_ms: u64,
    hybrid: HybridConfig,
    mode: Mutex<(Mode, usize)>,
    hm: HybridMetrics,
}

fn l1(k: &'static str, v: &str) -> Label1 {
    [(k, v.to_owned())]
}

impl PacketFactory {
    pub fn new(
        key: SigningKey,
        sources: Vec<(Box<dyn Source>, SourceSettings)>,
        alpha_exp: u32,
        quarantine: Duration,
        lifetime_ms: u64,
        hybrid: HybridConfig,
    ) -> Self {
        let sources = sources
            .into_iter()
            .map(|(s, settings)| {
                let h = SourceHealth::new(alpha_exp, s.min_entropy_per_byte(), quarantine);
                TrackedSource {
                    source: s,
                    health: Mutex::new(h),
                    gate: Mutex::new(Gate::new(settings.policy)),
                    turn: tokio::sync::Mutex::new(()),
                    settings,
                }
            })
            .collect();
        Self {
            key,
            sources,
            sequence: AtomicU64::new(0),
            lifetime_ms,
            hybrid,
            mode: Mutex::new((Mode::Idle, 0)),
            hm: HybridMetrics {
                packets: Family::default(),
                refused: Family::default(),
                below_min: Gauge::default(),
                healthy: Gauge::default(),
                raw_bytes: Family::default(),
            },
        }
    }

    /// Adds the hybrid policy's metrics to the hub's registry.
    pub fn register_metrics(&self, r: &mut Registry) {
        r.register(
            "kirq_hub_packets_by_mode",
            "Packets built, by mode (hybrid, single, source = a requested source)",
            self.hm.packets.clone(),
        );
        r.register(
            "kirq_hub_packets_refused",
            "Packet builds refused, by reason",
            self.hm.refused.clone(),
        );
        r.register(
            "kirq_hub_below_min_sources",
            "1 while fewer than hybrid.min_sources sources are healthy",
            self.hm.below_min.clone(),
        );
        r.register(
            "kirq_hub_healthy_sources",
            "Sources that delivered healthy bytes to the last packet attempt",
            self.hm.healthy.clone(),
        );
        r.register(
            "kirq_hub_source_raw_bytes",
            "Raw bytes each source contributed to packets",
            self.hm.raw_bytes.clone(),
        );
    }

    pub fn sources(&self) -> &[TrackedSource] {
        &self.sources
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    pub fn hybrid(&self) -> &HybridConfig {
        &self.hybrid
    }

    /// The last packet attempt's mode and how many sources delivered healthy bytes to it.
    pub fn mode(&self) -> (Mode, usize) {
        *lock(&self.mode)
    }

    /// True when `name` is a configured source id or kind.
    pub fn knows(&self, name: &str) -> bool {
        self.sources.iter().any(|s| selects(s, name))
    }

    /// Builds one signed hybrid packet of up to `n` entropy bytes addressed to `recipient`.
    pub async fn build(
        &self,
        recipient: &str,
        n: usize,
        metrics: &HubMetrics,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, BuildError> {
        self.build_from(recipient, n, metrics, None).await
    }

    /// Like [`Self::build`]; with `only`, from the sources with that id or kind alone (the hybrid
    /// minimum does not apply to a packet that asked for one source).
    pub async fn build_from(
        &self,
        recipient: &str,
        n: usize,
        metrics: &HubMetrics,
        only: Option<&str>,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, BuildError> {
        let pool: Vec<&TrackedSource> = match only {
            Some(name) => self.sources.iter().filter(|s| selects(s, name)).collect(),
            None => self.sources.iter().collect(),
        };
        if pool.is_empty() {
            return Err(BuildError::UnknownSource(
                only.unwrap_or_default().to_owned(),
            ));
        }
        let need = if only.is_some() {
            1
        } else {
            self.hybrid.min_sources
        };
        let single = self.hybrid.below_min == BelowMin::Single;
        let now = Instant::now();
        // Sources only pacing for their rate limit are asked, after a wait within their timeout.
        let mut ready: Vec<(&TrackedSource, Option<Instant>)> = pool
            .into_iter()
            .filter(|s| !lock(&s.health).is_quarantined())
            .filter_map(|s| match lock(&s.gate).check(now) {
                Ok(()) => Some((s, None)),
                Err(Blocked::Pacing(t)) if t < now + s.settings.timeout => Some((s, Some(t))),
                Err(_) => None,
            })
            .collect();
        if ready.len() < need {
            if !single || ready.is_empty() {
                return Err(self.refuse(only, ready.len(), need));
            }
            // Below the minimum with `single`: ask only the heaviest source.
            ready.sort_by_key(|(s, _)| std::cmp::Reverse(s.settings.weight));
            ready.truncate(1);
        }
        let mut parts = self.fetch_shares(&ready, n, metrics).await;
        if parts.len() < need {
            if !single || parts.is_empty() {
                return Err(self.refuse(only, parts.len(), need));
            }
            parts.sort_by_key(|(s, _)| std::cmp::Reverse(s.settings.weight));
            parts.truncate(1);
        }
        let mode = match (only, parts.len() >= need) {
            (Some(_), _) => "source",
            (None, true) => "hybrid",
            (None, false) => "single",
        };
        if only.is_none() {
            let m = if mode == "hybrid" {
                Mode::Hybrid
            } else {
                Mode::Single
            };
            self.set_mode(m, parts.len());
        }
        let bits: f64 = parts
            .iter()
            .map(|(s, b)| b.len() as f64 * s.source.min_entropy_per_byte())
            .sum();
        let out_len = n.min((bits / 8.0).floor() as usize);
        if out_len == 0 {
            return Err(BuildError::NoHealthySource);
        }
        for (s, b) in &parts {
            self.hm
                .raw_bytes
                .get_or_create(&l1("source", s.source.id()))
                .inc_by(b.len() as u64);
        }
        self.hm.packets.get_or_create(&l1("mode", mode)).inc();
        Ok(self.sign(recipient, out_len, &parts, metrics))
    }

    fn refuse(&self, only: Option<&str>, have: usize, need: usize) -> BuildError {
        if only.is_some() {
            self.hm
                .refused
                .get_or_create(&l1("reason", "source_unhealthy"))
                .inc();
            return BuildError::NoHealthySource;
        }
        self.set_mode(Mode::Stopped, have);
        self.hm
            .refused
            .get_or_create(&l1("reason", "below_min_sources"))
            .inc();
        if have == 0 {
            BuildError::NoHealthySource
        } else {
            BuildError::BelowMinSources { have, need }
        }
    }

    fn set_mode(&self, mode: Mode, healthy: usize) {
        let before = std::mem::replace(&mut *lock(&self.mode), (mode, healthy)).0;
        if before != mode {
            let need = self.hybrid.min_sources;
            match mode {
                Mode::Hybrid | Mode::Idle => {
                    tracing::info!(healthy, need, "hybrid packets again")
                }
                Mode::Single => tracing::warn!(
                    healthy,
                    need,
                    "below min_sources: making single-source packets"
                ),
                Mode::Stopped => {
                    tracing::error!(healthy, need, "below min_sources: no packets")
                }
            }
        }
        self.hm
            .below_min
            .set(i64::from(mode == Mode::Single || mode == Mode::Stopped));
        self.hm.healthy.set(healthy as i64);
    }

    /// Fetches every ready source's share concurrently; returns the healthy contributions.
    async fn fetch_shares<'s>(
        &self,
        ready: &[(&'s TrackedSource, Option<Instant>)],
        n: usize,
        metrics: &HubMetrics,
    ) -> Vec<(&'s TrackedSource, SecretBytes)> {
        let wsum: f64 = ready
            .iter()
            .map(|(s, _)| f64::from(s.settings.weight))
            .sum();
        let fetches = ready.iter().map(|&(s, not_before)| {
            let share = (n as f64 * 8.0 * f64::from(s.settings.weight)
                / (wsum * s.source.min_entropy_per_byte()))
            .ceil();
            let want = (share as usize).clamp(1, MAX_CONTRIBUTION_BYTES as usize);
            async move {
                let r = tokio::time::timeout(s.settings.timeout, async {
                    let _turn = s.turn.lock().await;
                    if let Some(t) = not_before {
                        tokio::time::sleep_until(t.into()).await;
                    }
                    s.source.fetch(want).await
                })
                .await;
                (s, want, r)
            }
        });
        let mut parts = Vec::new();
        for (s, want, r) in futures::future::join_all(fetches).await {
            let result = match r {
                Ok(Ok(b)) if b.len() == want => Ok(b),
                Ok(Ok(b)) => Err(SourceError::BadResponse(format!(
                    "returned {} of {want} bytes",
                    b.len()
                ))),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(SourceError::Timeout(s.settings.timeout)),
            };
            match result {
                Ok(bytes) => {
                    lock(&s.gate).success(Instant::now());
                    if self.test_health(s, &bytes, metrics) {
                        parts.push((s, bytes));
                    }
                }
                Err(e) => self.fail(s, metrics, &e),
            }
        }
        parts
    }

    fn test_health(&self, s: &TrackedSource, bytes: &SecretBytes, metrics: &HubMetrics) -> bool {
        let id = s.source.id();
        let mut h = lock(&s.health);
        let verdict = h.check_block(bytes.expose());
        metrics.observe_quality(id, h.quality());
        drop(h);
        match verdict {
            Ok(()) => true,
            Err(e) => {
                metrics
                    .source_failures
                    .get_or_create(&[("source", id.to_owned()), ("reason", "health".into())])
                    .inc();
                tracing::warn!(source = id, error = %e, "source failed health tests; quarantined");
                false
            }
        }
    }

    fn fail(&self, s: &TrackedSource, metrics: &HubMetrics, e: &SourceError) {
        let id = s.source.id();
        let wait = lock(&s.gate).failure(e, Instant::now());
        match wait {
            Some(w) => {
                tracing::warn!(source = id, error = %e, retry_in = ?w, "source fetch failed")
            }
            None => tracing::error!(source = id, error = %e, "source disabled until restart"),
        }
        let mut h = lock(&s.health);
        h.record_error(e.to_string());
        metrics.observe_quality(id, h.quality());
        metrics
            .source_failures
            .get_or_create(&[("source", id.to_owned()), ("reason", e.reason().to_owned())])
            .inc();
    }

    fn sign(
        &self,
        recipient: &str,
        out_len: usize,
        parts: &[(&TrackedSource, SecretBytes)],
        metrics: &HubMetrics,
    ) -> zeroize::Zeroizing<Vec<u8>> {
        let contributions: Vec<Contribution<'_>> = parts
            .iter()
            .map(|(s, b)| Contribution {
                source_id: s.source.id(),
                bytes: b,
            })
            .collect();
        let entropy = mix(&contributions, out_len);
        let provenance = parts
            .iter()
            .map(|(s, b)| SourceEntry {
                kind: s.source.kind(),
                id: s.source.id().to_owned(),
                byte_count: u32::try_from(b.len()).unwrap_or(MAX_CONTRIBUTION_BYTES),
                commitment: commit_contribution(s.source.id(), b.expose()),
                node_signature: Vec::new(),
            })
            .collect();
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("the OS RNG is available");
        let issued_at_ms = now_ms();
        let packet = Packet {
            key_id: self.key.verifying_key().id(),
            mix_alg: crate::wire::MIX_SHAKE256,
            proof_alg: crate::wire::PROOF_NONE,
            recipient: recipient.to_owned(),
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
            nonce,
            issued_at_ms,
            expires_at_ms: issued_at_ms + self.lifetime_ms,
            round: 0,
            provenance,
            entropy,
            proof: Vec::new(),
            signature: Vec::new(),
        };
        metrics.packets_built.inc();
        packet.encode_signed(&self.key)
    }
}

fn selects(s: &TrackedSource, name: &str) -> bool {
    s.source.id() == name || s.source.kind().as_str() == name
}

/// One source's state for /health.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceReport {
    pub id: String,
    pub kind: &'static str,
    /// `up`, `degraded` or `quarantined`.
    pub status: &'static str,
    pub reason: Option<String>,
    pub quality: f64,
    pub weight: u32,
    pub min_entropy_per_byte: f64,
    pub last_success: Option<String>,
    pub retry_in_ms: Option<u64>,
}

impl TrackedSource {
    pub fn report(&self) -> SourceReport {
        use crate::health::Status;
        let h = lock(&self.health);
        let blocked = lock(&self.gate).check(Instant::now()).err();
        let (status, reason, retry) = match (&blocked, h.status()) {
            (Some(Blocked::Disabled(r)), _) => {
                ("quarantined", Some(format!("disabled: {r}")), None)
            }
            (_, Status::Quarantined) => ("quarantined", h.last_failure().map(str::to_owned), None),
            (Some(Blocked::Waiting { until, reason }), _) => {
                let ms = until.saturating_duration_since(Instant::now()).as_millis();
                let ms = u64::try_from(ms).unwrap_or(u64::MAX);
                ("degraded", Some(format!("backing off: {reason}")), Some(ms))
            }
            (None | Some(Blocked::Pacing(_)), Status::Up) => ("up", None, None),
            (None | Some(Blocked::Pacing(_)), _) => {
                ("degraded", h.last_failure().map(str::to_owned), None)
            }
        };
        SourceReport {
            id: self.source.id().to_owned(),
            kind: self.source.kind().as_str(),
            status,
            reason,
            quality: h.quality(),
            weight: self.settings.weight,
            min_entropy_per_byte: self.source.min_entropy_per_byte(),
            last_success: h.last_success().map(crate::util::rfc3339),
            retry_in_ms: retry,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
