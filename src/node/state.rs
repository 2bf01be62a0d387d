//! What the node's handlers share: its keys, its source behind a gate and health tests, the
//! open rounds, and the reveal numbering.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::NodeError;
use super::metrics::NodeMetrics;
use super::rounds::{ClientId, Rounds};
use super::{Fault, lock};
use crate::config::NodeConfig;
use crate::crypto::falcon::{SigningKey, VerifyingKey};
use crate::crypto::tagged_hash;
use crate::health::SourceHealth;
use crate::secret::SecretBytes;
use crate::sources::gate::{Blocked, Gate};
use crate::sources::{Source, SourceError, SourceSettings, make_source};
use crate::tls::PeerCert;

/// Most recipients a node numbers reveals for (one counter each) before it refuses new ones.
pub const MAX_RECIPIENTS: usize = 100_000;

/// Everything a request handler needs.
pub struct NodeState {
    pub(super) id: String,
    pub(super) key: SigningKey,
    pub(super) peers: HashMap<String, VerifyingKey>,
    pub(super) quorum: usize,
    pub(super) max_bytes: usize,
    pub(super) source: Box<dyn Source>,
    settings: SourceSettings,
    pub(super) health: Mutex<SourceHealth>,
    gate: Mutex<Gate>,
    /// Held for one draw: draws take turns at the source, and a repeated commit waiting here
    /// finds the first one's commitment instead of drawing again.
    pub(super) draw_turn: tokio::sync::Mutex<()>,
    pub(super) rounds: Mutex<Rounds>,
    /// This run's receipt epoch (random at start) and the reveals numbered per recipient.
    pub(super) epoch: u64,
    pub(super) sequences: Mutex<HashMap<String, u64>>,
    pub(super) metrics: Arc<NodeMetrics>,
    pub(super) fault: Option<Fault>,
    last_log_ms: AtomicU64,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeState {{ id: {:?}, .. }}", self.id)
    }
}

impl NodeState {
    /// The state for `cfg` with its keys loaded (`peers`: id → public key).
    pub fn new(
        cfg: &NodeConfig,
        key: SigningKey,
        peers: HashMap<String, VerifyingKey>,
        fault: Option<Fault>,
    ) -> anyhow::Result<Self> {
        let (source, settings) = make_source(&cfg.source).map_err(|e| {
            anyhow::anyhow!(
                "source {:?} ({}): {e}",
                cfg.source.id(),
                cfg.source.source.name()
            )
        })?;
        let health = SourceHealth::new(
            cfg.health.alpha_exponent,
            source.min_entropy_per_byte(),
            Duration::from_secs(cfg.health.quarantine_secs),
        );
        Ok(Self {
            id: cfg.id.clone(),
            key,
            peers,
            quorum: cfg.quorum,
            max_bytes: cfg.max_contribution_bytes,
            gate: Mutex::new(Gate::new(settings.policy)),
            source,
            settings,
            health: Mutex::new(health),
            draw_turn: tokio::sync::Mutex::new(()),
            rounds: Mutex::new(Rounds::new(
                Duration::from_secs(cfg.round_ttl_secs),
                cfg.max_open_rounds,
            )),
            epoch: receipt_epoch()?,
            sequences: Mutex::new(HashMap::new()),
            metrics: Arc::new(NodeMetrics::new()),
            fault,
            last_log_ms: AtomicU64::new(0),
        })
    }

    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.metrics
    }

    /// Zeroes and forgets the rounds whose TTL ended.
    pub(super) fn purge(&self) {
        let mut r = lock(&self.rounds);
        r.purge(Instant::now());
        self.metrics.open_rounds.set(r.open() as i64);
    }

    /// One log line per second at most for refused requests.
    pub(super) fn log_refusal(&self, endpoint: &str, e: &NodeError) {
        let now = crate::util::now_ms();
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::info!(endpoint, reason = e.reason(), status = %e.status(), error = %e,
                "request refused");
        }
    }

    /// Draws `n` fresh bytes from the node's source, within its timeout, and health-tests them.
    pub(super) async fn draw(&self, n: usize) -> Result<SecretBytes, NodeError> {
        if lock(&self.health).is_quarantined() {
            return Err(NodeError::SourceQuarantined);
        }
        if let Err(b) = lock(&self.gate).check(Instant::now())
            && !matches!(b, Blocked::Pacing(_))
        {
            return Err(NodeError::SourceBackingOff);
        }
        let bytes = match self.fetch(n).await {
            Ok(b) => b,
            Err(e) => {
                lock(&self.gate).failure(&e, Instant::now());
                lock(&self.health).record_error(e.to_string());
                self.metrics
                    .source_failures
                    .get_or_create(&[("reason", e.reason().to_owned())])
                    .inc();
                tracing::warn!(error = %e, "source fetch failed");
                return Err(NodeError::SourceFailed(e.reason()));
            }
        };
        lock(&self.gate).success(Instant::now());
        if let Err(e) = lock(&self.health).check_block(bytes.expose()) {
            self.metrics
                .source_failures
                .get_or_create(&[("reason", "health".to_owned())])
                .inc();
            tracing::warn!(error = %e, "source failed health tests; quarantined");
            return Err(NodeError::SourceUnhealthy);
        }
        Ok(bytes)
    }

    /// Exactly `n` bytes from the source within its timeout, or why not.
    async fn fetch(&self, n: usize) -> Result<SecretBytes, SourceError> {
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, self.source.fetch(n)).await {
            Ok(Ok(b)) if b.len() == n => Ok(b),
            Ok(Ok(b)) => Err(SourceError::BadResponse(format!(
                "returned {} of {n} bytes",
                b.len()
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SourceError::Timeout(timeout)),
        }
    }
}

/// A random receipt epoch for this run, never 0 (0 marks "no receipt" on the wire).
fn receipt_epoch() -> anyhow::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    Ok(u64::from_be_bytes(b).max(1))
}

/// The client a request comes from: a hash of its TLS client certificate.
pub(super) fn client_id(peer: &PeerCert) -> ClientId {
    tagged_hash("kirq/node-client/v1", &[peer.0.as_ref()])
}
