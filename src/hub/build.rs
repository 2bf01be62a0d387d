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

use crate::config::{BelowMin, HybridConfig, ProofConfig, ProofMode};
use crate::crypto::commit_contribution;
use crate::crypto::sig::{HubSigningKey, PacketSigner};
use crate::crypto::stark;
use crate::health::{SourceHealth, Status};
use crate::metrics::{HubMetrics, Label1};
use crate::mix::{Contribution, mix};
use crate::secret::SecretBytes;
use crate::sources::decentralized::{Decentralized, NodeContribution, ShownOnly};
use crate::sources::gate::{Blocked, Gate};
use crate::sources::{Source, SourceError, SourceSettings};
use crate::util::lock;
use crate::util::now_ms;
use crate::wire::{
    MAX_CONTRIBUTION_BYTES, MIX_RP64, MIX_SHAKE256, PROOF_NONE, PROOF_STARK_RP64, Packet,
    SourceEntry, SourceKind,
};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no healthy source delivered bytes for this packet")]
    NoHealthySource,
    #[error("only {have} healthy sources, {need} required (hybrid.below_min = \"stop\")")]
    BelowMinSources { have: usize, need: usize },
    #[error("no configured source has the id or kind {0:?}")]
    UnknownSource(String),
    #[error(
        "the contributions carry less than one {} -byte block of proven output",
        stark::OUTPUT_BLOCK_BYTES
    )]
    TooLittleForProof,
    #[error("proving the mix failed: {0}")]
    Prove(String),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone)]
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
    key: HubSigningKey,
    sources: Vec<TrackedSource>,
    /// Shared with the factory that replaces this one at a reload.
    sequence: std::sync::Arc<AtomicU64>,
    lifetime_ms: u64,
    hybrid: HybridConfig,
    mode: Mutex<(Mode, usize)>,
    hm: HybridMetrics,
    proof: ProofConfig,
    /// One permit per prover worker.
    provers: std::sync::Arc<tokio::sync::Semaphore>,
    /// The last mixing round used: rounds strictly increase.
    round: std::sync::Arc<AtomicU64>,
    pm: ProofMetrics,
    decentralized: Option<Decentralized>,
}

#[derive(Debug, Clone, Default)]
struct ProofMetrics {
    /// Packets by proof outcome: proven, unproven (when_idle and all provers busy), off.
    packets: Family<Label1, Counter>,
    /// Seconds spent proving, total.
    seconds: prometheus_client::metrics::counter::Counter<f64, std::sync::atomic::AtomicU64>,
    proof_bytes: Counter,
    proven_bytes: Counter,
}

fn l1(k: &'static str, v: &str) -> Label1 {
    [(k, v.to_owned())]
}

impl PacketFactory {
    pub fn new(
        key: impl Into<HubSigningKey>,
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
            key: key.into(),
            sources,
            sequence: Default::default(),
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
            proof: ProofConfig::default(),
            provers: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
            round: Default::default(),
            pm: ProofMetrics::default(),
            decentralized: None,
        }
    }

    /// Adds decentralized QRNG nodes: each packet (or a pull asking for `decentralized`) runs a
    /// commit-reveal round with them.
    pub fn with_decentralized(mut self, d: Decentralized) -> Self {
        self.decentralized = Some(d);
        self
    }

    pub fn proof_mode(&self) -> ProofMode {
        self.proof.mode
    }

    pub fn decentralized(&self) -> Option<&Decentralized> {
        self.decentralized.as_ref()
    }

    /// Sets the mixing-proof policy (the default is `off`).
    pub fn with_proof(mut self, proof: ProofConfig) -> Self {
        self.provers = std::sync::Arc::new(tokio::sync::Semaphore::new(proof.workers));
        self.proof = proof;
        self
    }

    /// Takes over what `old` (the factory of the config before a reload) must not forget: its
    /// metric handles (the registered ones), its packet sequence and its last round (shared, so
    /// a build still running on the old factory does not repeat a number), and the
    /// decentralized client's state. Sources start afresh (health tests, quota waits).
    pub fn carry_over(mut self, old: &Self) -> Self {
        self.hm = old.hm.clone();
        self.pm = old.pm.clone();
        self.sequence = old.sequence.clone();
        self.round = old.round.clone();
        if let (Some(new), Some(old)) = (self.decentralized.as_mut(), old.decentralized.as_ref()) {
            new.carry_over(old);
        }
        self
    }

    /// A fresh round number, strictly above the last one and below 2^63: the clock in
    /// microseconds, or the last round plus one when the clock has not moved on.
    fn next_round(&self) -> u64 {
        if let Some(d) = &self.decentralized {
            return d.next_round();
        }
        stark::fresh_round(&self.round)
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
        r.register(
            "kirq_hub_proof_packets",
            "Packets by mixing-proof outcome (proven, unproven, off)",
            self.pm.packets.clone(),
        );
        r.register(
            "kirq_hub_proof_seconds",
            "Time spent making mixing proofs",
            self.pm.seconds.clone(),
        );
        r.register(
            "kirq_hub_proof_bytes",
            "Bytes of mixing proofs made",
            self.pm.proof_bytes.clone(),
        );
        r.register(
            "kirq_hub_proven_entropy_bytes",
            "Entropy bytes covered by a mixing proof",
            self.pm.proven_bytes.clone(),
        );
    }

    pub fn sources(&self) -> &[TrackedSource] {
        &self.sources
    }

    pub fn key(&self) -> &HubSigningKey {
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
            || (name == SourceKind::Decentralized.as_str() && self.decentralized.is_some())
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
        let plan = self.plan(only)?;
        // A proof covers at most max_output_bytes: ask the sources for no more, or the prover
        // would absorb bytes that never reach the output.
        let n = if self.proof.mode == ProofMode::Off {
            n
        } else {
            n.min(self.proof.max_output_bytes)
        };
        let mut parts: Vec<Piece> = if plan.ready.is_empty() {
            Vec::new()
        } else {
            self.fetch_shares(&plan.ready, n, metrics)
                .await
                .into_iter()
                .map(|(s, bytes)| Piece::from_source(s, bytes))
                .collect()
        };
        let round = self.next_round();
        self.commit_parts(round, &mut parts)?;
        let mut nodes = NodeShare::default();
        if plan.want_nodes {
            nodes = self.ask_nodes(round, recipient, &mut parts).await;
        }
        self.keep_minimum(&plan, only, &mut parts, &mut nodes)?;
        let count = distinct_sources(&parts);
        let hybrid = count >= plan.need;
        if only.is_none() {
            self.set_mode(if hybrid { Mode::Hybrid } else { Mode::Single }, count);
        }
        let out_len = self.output_len(&mut parts, nodes.bits, n)?;
        for p in &parts {
            self.hm
                .raw_bytes
                .get_or_create(&l1("source", &p.id))
                .inc_by(p.bytes.len() as u64);
        }
        let mode = match (only, hybrid) {
            (Some(_), _) => "source",
            (None, true) => "hybrid",
            (None, false) => "single",
        };
        self.hm.packets.get_or_create(&l1("mode", mode)).inc();
        let shown = nodes.shown_entries();
        if self.proof.mode == ProofMode::Off {
            self.pm.packets.get_or_create(&l1("proof", "off")).inc();
            return Ok(self.sign(recipient, round, out_len, &parts, shown, metrics));
        }
        self.sign_provable(recipient, round, out_len, parts, shown, metrics)
            .await
    }

    /// Which sources to ask for this packet, and whether to run a round with the nodes. Refuses
    /// when fewer than the minimum could answer (unless `below_min = "single"`: then only the
    /// heaviest source is asked).
    fn plan(&self, only: Option<&str>) -> Result<Plan<'_>, BuildError> {
        let pool: Vec<&TrackedSource> = match only {
            Some(name) => self.sources.iter().filter(|s| selects(s, name)).collect(),
            None => self.sources.iter().collect(),
        };
        let want_nodes = self.decentralized.is_some()
            && only.is_none_or(|o| o == SourceKind::Decentralized.as_str());
        if pool.is_empty() && !want_nodes {
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
        let could = ready.len() + usize::from(want_nodes);
        if could < need {
            if !single || could == 0 {
                return Err(self.refuse(only, could, need));
            }
            // Below the minimum with `single`: ask only the heaviest source.
            ready.sort_by_key(|(s, _)| std::cmp::Reverse(s.settings.weight));
            ready.truncate(1);
        }
        Ok(Plan {
            ready,
            want_nodes,
            need,
            single,
        })
    }

    /// The hub commits to its own contributions before any node reveals (the nodes see these
    /// commitments with the reveal request), so it cannot choose them after seeing the nodes'.
    fn commit_parts(&self, round: u64, parts: &mut [Piece]) -> Result<(), BuildError> {
        let provable = self.proof.mode != ProofMode::Off;
        for p in parts {
            p.commitment = if provable {
                stark::commit(round, &p.id, p.bytes.expose())
                    .map_err(|e| BuildError::Prove(e.to_string()))?
            } else {
                commit_contribution(&p.id, p.bytes.expose())
            };
        }
        Ok(())
    }

    /// Runs the round with the decentralized nodes and adds their contributions to `parts`; a
    /// failed round only leaves them out.
    async fn ask_nodes(&self, round: u64, recipient: &str, parts: &mut Vec<Piece>) -> NodeShare {
        let Some(d) = &self.decentralized else {
            return NodeShare::default();
        };
        let hub_commitments: Vec<(String, stark::Commitment)> =
            parts.iter().map(|p| (p.id.clone(), p.commitment)).collect();
        match d.round(round, recipient, &hub_commitments).await {
            Ok(outcome) => {
                for (node, why) in &outcome.excluded {
                    tracing::warn!(round, node, reason = %why, "node left out of the round");
                }
                parts.extend(outcome.contributions.into_iter().map(Piece::from_node));
                NodeShare {
                    // Any one honest node makes the mix unpredictable: credit one node's bytes,
                    // not the sum.
                    bits: d.bytes_per_node() as f64 * 8.0,
                    shown_only: outcome.shown_only,
                }
            }
            Err(e) => {
                tracing::warn!(round, error = %e, "no decentralized bytes this round");
                NodeShare::default()
            }
        }
    }

    /// After the fetches and the round: below the minimum, refuse, or with `below_min =
    /// "single"` keep the heaviest hub source alone (or else the nodes).
    fn keep_minimum(
        &self,
        plan: &Plan<'_>,
        only: Option<&str>,
        parts: &mut Vec<Piece>,
        nodes: &mut NodeShare,
    ) -> Result<(), BuildError> {
        let have = distinct_sources(parts);
        if have >= plan.need {
            return Ok(());
        }
        if !plan.single || parts.is_empty() {
            return Err(self.refuse(only, have, plan.need));
        }
        let heaviest = parts
            .iter()
            .filter_map(|p| p.weight)
            .max()
            .map(|w| parts.iter().position(|p| p.weight == Some(w)));
        if let Some(Some(i)) = heaviest {
            let keep = parts.swap_remove(i);
            *parts = vec![keep];
            *nodes = NodeShare::default();
        }
        Ok(())
    }

    /// The packet's entropy length: what the credited bits carry, at most `n`; for the provable
    /// mixer also at most what the largest contribution gives (it is sorted last), in whole
    /// output blocks.
    fn output_len(
        &self,
        parts: &mut [Piece],
        node_bits: f64,
        n: usize,
    ) -> Result<usize, BuildError> {
        let bits: f64 = parts.iter().map(|p| p.bits()).sum::<f64>() + node_bits;
        let mut out_len = n.min((bits / 8.0).floor() as usize);
        if out_len == 0 {
            return Err(BuildError::NoHealthySource);
        }
        if self.proof.mode != ProofMode::Off {
            parts.sort_by_key(|p| p.bytes.len());
            let largest = parts.last().map_or(0, |p| p.bytes.len());
            out_len = out_len
                .min(stark::max_output_len(largest))
                .min(self.proof.max_output_bytes);
            out_len -= out_len % stark::OUTPUT_BLOCK_BYTES;
            if out_len == 0 {
                return Err(BuildError::TooLittleForProof);
            }
        }
        Ok(out_len)
    }

    /// The provable mixer: Rescue-Prime commitments and mix, with a STARK when policy and the
    /// prover workers allow. Proving runs on the blocking pool, never on the async workers.
    async fn sign_provable(
        &self,
        recipient: &str,
        round: u64,
        out_len: usize,
        parts: Vec<Piece>,
        shown: Vec<SourceEntry>,
        metrics: &HubMetrics,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, BuildError> {
        let permit = match self.proof.mode {
            ProofMode::Required => Some(
                self.provers
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| BuildError::Prove("prover pool closed".into()))?,
            ),
            _ => self.provers.clone().try_acquire_owned().ok(),
        };
        let started = Instant::now();
        let work = move || {
            let view: Vec<stark::Part<'_>> = parts
                .iter()
                .map(|p| stark::Part {
                    id: &p.id,
                    bytes: &p.bytes,
                })
                .collect();
            let result = match permit {
                Some(_held) => stark::prove(round, &view, out_len)
                    .map(|p| (p.output, p.proof))
                    .map_err(|e| e.to_string()),
                None => stark::mix(round, &view, out_len)
                    .map(|out| (out, Vec::new()))
                    .map_err(|e| e.to_string()),
            };
            drop(view);
            result.map(|r| (r, parts))
        };
        let ((entropy, proof), parts) = tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| BuildError::Prove("prover worker panicked".into()))?
            .map_err(BuildError::Prove)?;
        let proven = !proof.is_empty();
        if proven {
            self.pm.seconds.inc_by(started.elapsed().as_secs_f64());
            self.pm.proof_bytes.inc_by(proof.len() as u64);
            self.pm.proven_bytes.inc_by(out_len as u64);
        }
        self.pm
            .packets
            .get_or_create(&l1("proof", if proven { "proven" } else { "unproven" }))
            .inc();
        let provenance = parts.iter().map(Piece::entry).chain(shown).collect();
        let proof_alg = if proven { PROOF_STARK_RP64 } else { PROOF_NONE };
        Ok(self.finish(
            recipient, round, MIX_RP64, proof_alg, provenance, entropy, proof, metrics,
        ))
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
        round: u64,
        out_len: usize,
        parts: &[Piece],
        shown: Vec<SourceEntry>,
        metrics: &HubMetrics,
    ) -> zeroize::Zeroizing<Vec<u8>> {
        let contributions: Vec<Contribution<'_>> = parts
            .iter()
            .map(|p| Contribution {
                source_id: &p.id,
                bytes: &p.bytes,
            })
            .collect();
        let entropy = mix(&contributions, out_len);
        let provenance = parts.iter().map(Piece::entry).chain(shown).collect();
        self.finish(
            recipient,
            round,
            MIX_SHAKE256,
            PROOF_NONE,
            provenance,
            entropy,
            Vec::new(),
            metrics,
        )
    }

    /// Addresses, numbers and signs a packet.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        recipient: &str,
        round: u64,
        mix_alg: u8,
        proof_alg: u8,
        provenance: Vec<SourceEntry>,
        entropy: SecretBytes,
        proof: Vec<u8>,
        metrics: &HubMetrics,
    ) -> zeroize::Zeroizing<Vec<u8>> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("the OS RNG is available");
        let issued_at_ms = now_ms();
        let packet = Packet {
            sig_alg: self.key.sig_alg(),
            key_id: self.key.key_id(),
            mix_alg,
            proof_alg,
            recipient: recipient.to_owned(),
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
            nonce,
            issued_at_ms,
            expires_at_ms: issued_at_ms + self.lifetime_ms,
            round,
            provenance,
            entropy,
            proof,
            signature: Vec::new(),
        };
        metrics.packets_built.inc();
        packet.encode_signed(&self.key)
    }
}

/// The sources [`PacketFactory::plan`] chose for one packet.
struct Plan<'a> {
    /// The hub sources to ask, each with the instant it may be asked (when pacing).
    ready: Vec<(&'a TrackedSource, Option<Instant>)>,
    want_nodes: bool,
    /// Distinct sources the packet needs.
    need: usize,
    single: bool,
}

/// What the decentralized nodes added to a packet beyond their contributions.
#[derive(Default)]
struct NodeShare {
    /// Bits credited to the nodes together.
    bits: f64,
    /// Nodes shown at reveal that did not contribute.
    shown_only: Vec<ShownOnly>,
}

impl NodeShare {
    /// Nodes shown at reveal that did not contribute: listed with no bytes, so a daemon can
    /// recompute the commitment set the contributing nodes signed in their receipts.
    fn shown_entries(self) -> Vec<SourceEntry> {
        self.shown_only
            .into_iter()
            .map(|s| SourceEntry {
                kind: SourceKind::Decentralized,
                id: s.node_id,
                byte_count: 0,
                commitment: s.commitment,
                node_signature: s.signature,
                receipt: None,
            })
            .collect()
    }
}

/// Distinct sources among `parts`: each hub source, and the nodes together as one.
fn distinct_sources(parts: &[Piece]) -> usize {
    let hub = parts.iter().filter(|p| p.node_signature.is_empty()).count();
    hub + usize::from(hub < parts.len())
}

/// One contribution to a packet: from one of the hub's sources, or from a decentralized node
/// (with the node's own signed commitment).
struct Piece {
    kind: SourceKind,
    id: String,
    bytes: SecretBytes,
    commitment: [u8; 32],
    node_signature: Vec<u8>,
    receipt: Option<crate::wire::NodeReceipt>,
    /// The hub source's weight and declared min-entropy; `None` for a node.
    weight: Option<u32>,
    min_entropy: f64,
}

impl Piece {
    fn from_source(s: &TrackedSource, bytes: SecretBytes) -> Self {
        Self {
            kind: s.source.kind(),
            id: s.source.id().to_owned(),
            bytes,
            commitment: [0; 32],
            node_signature: Vec::new(),
            receipt: None,
            weight: Some(s.settings.weight),
            min_entropy: s.source.min_entropy_per_byte(),
        }
    }

    fn from_node(c: NodeContribution) -> Self {
        Self {
            kind: SourceKind::Decentralized,
            id: c.node_id,
            bytes: c.bytes,
            commitment: c.commitment,
            node_signature: c.signature,
            receipt: Some(c.receipt),
            weight: None,
            min_entropy: 0.0,
        }
    }

    /// Credited bits: a hub source's declared min-entropy; nodes are credited per round.
    fn bits(&self) -> f64 {
        self.bytes.len() as f64 * self.min_entropy
    }

    fn entry(&self) -> SourceEntry {
        SourceEntry {
            kind: self.kind,
            id: self.id.clone(),
            byte_count: u32::try_from(self.bytes.len()).unwrap_or(MAX_CONTRIBUTION_BYTES),
            commitment: self.commitment,
            node_signature: self.node_signature.clone(),
            receipt: self.receipt.clone(),
        }
    }
}

fn selects(s: &TrackedSource, name: &str) -> bool {
    s.source.id() == name || s.source.kind().as_str() == name
}

/// One source's state for /health.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SourceReport {
    pub id: String,
    pub kind: &'static str,
    pub status: Status,
    pub reason: Option<String>,
    pub quality: f64,
    pub weight: u32,
    pub min_entropy_per_byte: f64,
    pub last_success: Option<String>,
    pub retry_in_ms: Option<u64>,
}

impl TrackedSource {
    pub fn report(&self) -> SourceReport {
        let h = lock(&self.health);
        let blocked = lock(&self.gate).check(Instant::now()).err();
        let (status, reason, retry) = match (&blocked, h.status()) {
            (Some(Blocked::Disabled(r)), _) => {
                (Status::Quarantined, Some(format!("disabled: {r}")), None)
            }
            (_, Status::Quarantined) => (
                Status::Quarantined,
                h.last_failure().map(str::to_owned),
                None,
            ),
            (Some(Blocked::Waiting { until, reason }), _) => {
                let ms = until.saturating_duration_since(Instant::now()).as_millis();
                let ms = u64::try_from(ms).unwrap_or(u64::MAX);
                (
                    Status::Degraded,
                    Some(format!("backing off: {reason}")),
                    Some(ms),
                )
            }
            (None | Some(Blocked::Pacing(_)), Status::Up) => (Status::Up, None, None),
            (None | Some(Blocked::Pacing(_)), _) => {
                (Status::Degraded, h.last_failure().map(str::to_owned), None)
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
