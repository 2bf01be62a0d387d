//! Verification and admission: every packet that reaches the daemon (pushed, pulled or from a
//! spool) passes [`Intake`], which verifies it, records its hub key's health and its nodes' round
//! continuity, and admits its entropy to the pool. Every outcome is counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::health::SourceHealth;
use crate::metrics::DaemonMetrics;
use crate::pool::{Pool, PoolError};
use crate::util::now_ms;
use crate::verify::{Reject, VerifiedPacket, Verifier};
use crate::wire::refill::{FrameError, Frames};

use super::continuity::Continuity;
use super::lock;

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

/// The verifier in front of the pool, and what it has seen.
pub struct Intake {
    pub verifier: Verifier,
    pool: Arc<Pool>,
    metrics: Arc<DaemonMetrics>,
    alpha_exponent: u32,
    /// Last time a packet from a hub passed verification (start time before the first).
    last_contact: Mutex<Instant>,
    /// Last time a verified packet's bytes went into the pool.
    last_packet: Mutex<Option<Instant>>,
    /// Health-test record of packets per hub key id.
    hub_quality: Mutex<HashMap<String, SourceHealth>>,
    /// Each trusted node's round numbers, to see rounds a hub discarded.
    continuity: Mutex<Continuity>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("trusted_keys", &self.verifier.trusted_key_ids())
            .finish_non_exhaustive()
    }
}

impl Intake {
    /// `alpha_exponent` is the health tests' false-alarm exponent (`health.alpha_exponent`).
    pub fn new(
        verifier: Verifier,
        pool: Arc<Pool>,
        metrics: Arc<DaemonMetrics>,
        alpha_exponent: u32,
    ) -> Self {
        Self {
            verifier,
            pool,
            metrics,
            alpha_exponent,
            last_contact: Mutex::new(Instant::now()),
            last_packet: Mutex::new(None),
            hub_quality: Mutex::new(HashMap::new()),
            continuity: Mutex::new(Continuity::default()),
        }
    }

    /// Verifies one encoded packet and admits its entropy.
    pub fn receive(&self, bytes: &[u8]) -> Result<([u8; 16], usize), ReceiveError> {
        let verified = self
            .verifier
            .verify(bytes, now_ms())
            .map_err(|r| self.rejected(r))?;
        self.admit(verified)
    }

    /// Verifies and admits a run of frames (a refill answer or a spool) with one sync of the
    /// replay journal for the whole run. A packet that fails verification is skipped (and
    /// counted). Returns (packets admitted, bytes admitted), or the framing error; nothing after
    /// a framing error is admitted.
    pub fn receive_frames(&self, bytes: &[u8]) -> Result<(usize, usize), FrameError> {
        let now = now_ms();
        let mut pending = Vec::new();
        let mut framing = Ok(());
        for f in Frames::new(bytes) {
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
        let verified = self.verifier.sync(pending).unwrap_or_else(|r| {
            self.rejected(r);
            Vec::new()
        });
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
            self.record_quality(&format!("hub:{key_id}"), |h| h.record_error(e.to_string()));
        }
        self.metrics.reject(r.reason());
        tracing::info!(reason = r.reason(), error = %r, "packet rejected");
        r.into()
    }

    fn record_quality(&self, key: &str, f: impl FnOnce(&mut SourceHealth)) {
        let mut q = lock(&self.hub_quality);
        let h = q
            .entry(key.to_owned())
            .or_insert_with(|| SourceHealth::new(self.alpha_exponent, 8.0, Duration::ZERO));
        f(h);
        self.metrics.observe_quality(key, h.quality());
    }

    /// Admits a packet that passed every check (its nonce durable). A verified packet is what
    /// ends the silence that starts the fallback, even when the pool is too full to take it.
    fn admit(&self, verified: VerifiedPacket) -> Result<([u8; 16], usize), ReceiveError> {
        let nonce = verified.nonce();
        let class = verified.class();
        self.check_continuity(&verified);
        // The verifier already ran the health tests on these bytes; record the pass.
        self.record_quality(
            &format!("hub:{}", verified.key_id()),
            SourceHealth::record_pass,
        );
        *lock(&self.last_contact) = Instant::now();
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
    fn check_continuity(&self, verified: &VerifiedPacket) {
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

    /// Verifies and admits a seed spool handed over out of band (e.g. by a VM host): a file of
    /// frames as in a refill answer. The file is consumed first (unlinked, and the unlink synced)
    /// so a restart can never admit it again, then its packets are verified and admitted. A
    /// missing spool is not an error (a restarted daemon finds its spool already consumed).
    /// Needs the replay journal (`journaled`). Returns (packets admitted, bytes admitted), or
    /// `None` when there was no spool.
    pub fn admit_spool(
        &self,
        path: &std::path::Path,
        journaled: bool,
    ) -> anyhow::Result<Option<(usize, usize)>> {
        use anyhow::Context;
        // Without a journal the replay floor refuses every packet issued before this start, a
        // spool's included, and nothing would stop a re-supplied copy of it: refuse plainly.
        anyhow::ensure!(
            journaled,
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

    /// Time since the last verified packet from any hub (or since start).
    pub fn silence(&self) -> Duration {
        lock(&self.last_contact).elapsed()
    }

    pub fn last_packet_age(&self) -> Option<Duration> {
        lock(&self.last_packet).map(|t| t.elapsed())
    }

    /// Quality per hub key (`hub:<key id>`), sorted.
    pub fn hub_quality(&self) -> Vec<(String, f64, crate::health::Status)> {
        let mut out: Vec<_> = lock(&self.hub_quality)
            .iter()
            .map(|(k, h)| (k.clone(), h.quality(), h.status()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
