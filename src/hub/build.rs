//! Building one packet: fetch from every healthy source concurrently, health-test, commit, mix,
//! sign.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::crypto::commit_contribution;
use crate::crypto::falcon::SigningKey;
use crate::health::SourceHealth;
use crate::metrics::HubMetrics;
use crate::mix::{Contribution, mix};
use crate::secret::SecretBytes;
use crate::sources::Source;
use crate::util::now_ms;
use crate::wire::{Packet, SourceEntry};

/// How long one source may take for one packet's bytes.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no healthy source delivered bytes for this packet")]
    NoHealthySource,
}

/// A source with its health state.
#[derive(Debug)]
pub struct TrackedSource {
    pub source: Box<dyn Source>,
    pub health: Mutex<SourceHealth>,
}

/// Makes signed packets from the hub's sources.
#[derive(Debug)]
pub struct PacketFactory {
    key: SigningKey,
    sources: Vec<TrackedSource>,
    sequence: AtomicU64,
    lifetime_ms: u64,
}

impl PacketFactory {
    pub fn new(
        key: SigningKey,
        sources: Vec<Box<dyn Source>>,
        alpha_exp: u32,
        quarantine: Duration,
        lifetime_ms: u64,
    ) -> Self {
        let sources = sources
            .into_iter()
            .map(|s| {
                let h = SourceHealth::new(alpha_exp, s.min_entropy_per_byte(), quarantine);
                TrackedSource {
                    source: s,
                    health: Mutex::new(h),
                }
            })
            .collect();
        Self {
            key,
            sources,
            sequence: AtomicU64::new(0),
            lifetime_ms,
        }
    }

    pub fn sources(&self) -> &[TrackedSource] {
        &self.sources
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Builds one signed packet of `n` entropy bytes addressed to `recipient`.
    pub async fn build(
        &self,
        recipient: &str,
        n: usize,
        metrics: &HubMetrics,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, BuildError> {
        let healthy: Vec<&TrackedSource> = self
            .sources
            .iter()
            .filter(|s| !lock(&s.health).is_quarantined())
            .collect();
        let fetches = healthy.iter().map(|s| async move {
            let r = tokio::time::timeout(SOURCE_TIMEOUT, s.source.fetch(n)).await;
            (s, r)
        });
        let mut parts: Vec<(&TrackedSource, SecretBytes)> = Vec::new();
        for (s, r) in futures::future::join_all(fetches).await {
            let id = s.source.id();
            let bytes = match r {
                Ok(Ok(b)) if b.len() == n => b,
                Ok(Ok(b)) => {
                    self.fail(
                        s,
                        metrics,
                        "short",
                        format!("returned {} of {n} bytes", b.len()),
                    );
                    continue;
                }
                Ok(Err(e)) => {
                    self.fail(s, metrics, "error", e.to_string());
                    continue;
                }
                Err(_) => {
                    self.fail(
                        s,
                        metrics,
                        "timeout",
                        format!("timed out after {SOURCE_TIMEOUT:?}"),
                    );
                    continue;
                }
            };
            let mut h = lock(&s.health);
            let verdict = h.check_block(bytes.expose());
            metrics.observe_quality(id, h.quality());
            drop(h);
            match verdict {
                Ok(()) => parts.push((s, bytes)),
                Err(e) => {
                    metrics
                        .source_failures
                        .get_or_create(&[("source", id.to_owned()), ("reason", "health".into())])
                        .inc();
                    tracing::warn!(source = id, error = %e, "source failed health tests; quarantined");
                }
            }
        }
        if parts.is_empty() {
            return Err(BuildError::NoHealthySource);
        }
        let contributions: Vec<Contribution<'_>> = parts
            .iter()
            .map(|(s, b)| Contribution {
                source_id: s.source.id(),
                bytes: b,
            })
            .collect();
        let entropy = mix(&contributions, n);
        let provenance = parts
            .iter()
            .map(|(s, b)| SourceEntry {
                kind: s.source.kind(),
                id: s.source.id().to_owned(),
                byte_count: b.len() as u32,
                commitment: commit_contribution(s.source.id(), b.expose()),
            })
            .collect();
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("the OS RNG is available");
        let issued_at_ms = now_ms();
        let packet = Packet {
            key_id: self.key.verifying_key().id(),
            proof_alg: crate::wire::PROOF_NONE,
            recipient: recipient.to_owned(),
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
            nonce,
            issued_at_ms,
            expires_at_ms: issued_at_ms + self.lifetime_ms,
            provenance,
            entropy,
            proof: Vec::new(),
            signature: Vec::new(),
        };
        metrics.packets_built.inc();
        Ok(packet.encode_signed(&self.key))
    }

    fn fail(&self, s: &TrackedSource, metrics: &HubMetrics, reason: &str, detail: String) {
        let id = s.source.id();
        tracing::warn!(source = id, reason, detail = %detail, "source fetch failed");
        let mut h = lock(&s.health);
        h.record_error(detail);
        metrics.observe_quality(id, h.quality());
        metrics
            .source_failures
            .get_or_create(&[("source", id.to_owned()), ("reason", reason.to_owned())])
            .inc();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
