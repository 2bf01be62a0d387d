//! The daemon's packet verifier: every check, in a fixed order, before a byte is admitted.
//!
//! Order: size → decode (structure, version) → recipient → time window → nonce not seen →
//! signature by a trusted hub key → proof policy → health tests on the entropy → record the nonce.
//! Each failure is a distinct [`Reject`] with a stable reason label. Cheap checks come first so a
//! flood of bad packets costs little; the nonce is recorded only after the signature verified, so
//! unsigned junk cannot fill the replay cache.
//!
//! Success yields a [`VerifiedPacket`]. Its fields are private and this module is the only place
//! that constructs one; [`crate::pool::Pool::admit`] requires it, so skipping a check does not
//! compile.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use crate::crypto::falcon::{KeyId, VerifyingKey};
use crate::health::{HealthFailure, HealthTester};
use crate::pool::Provenance;
use crate::secret::SecretBytes;
use crate::wire::{DecodeError, MAX_LIFETIME_MS, PROOF_NONE, Packet, SourceEntry};

pub const DEFAULT_MAX_SKEW_MS: u64 = 5_000;
pub const DEFAULT_REPLAY_CAPACITY: usize = 262_144;

/// Why a packet was refused.
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("packet is addressed to another daemon")]
    WrongRecipient,
    #[error("packet expired")]
    Expired,
    #[error("packet issued in the future beyond the allowed clock skew")]
    IssuedInFuture,
    #[error("nonce already seen (replay)")]
    Replayed,
    #[error("replay cache full; refusing packets until entries expire")]
    ReplayCacheFull,
    #[error("packet signed by an unknown key {0}")]
    UnknownKey(KeyId),
    #[error("signature does not verify")]
    BadSignature,
    #[error("a mixing proof is required and the packet has none")]
    ProofRequired,
    #[error("proof algorithm {0} is not supported")]
    UnsupportedProof(u8),
    #[error("entropy from key {0} failed health tests")]
    Health(KeyId, #[source] HealthFailure),
}

impl Reject {
    /// Stable label for responses, stats and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Decode(e) => e.reason(),
            Self::WrongRecipient => "wrong_recipient",
            Self::Expired => "expired",
            Self::IssuedInFuture => "issued_in_future",
            Self::Replayed => "replayed",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::ProofRequired => "proof_required",
            Self::UnsupportedProof(_) => "bad_proof",
            Self::Health(..) => "health_failed",
        }
    }

    /// Every reason label, so metrics can be pre-registered at zero.
    pub const REASONS: &'static [&'static str] = &[
        "body_too_large",
        "truncated",
        "unknown_version",
        "trailing_bytes",
        "malformed",
        "wrong_recipient",
        "expired",
        "issued_in_future",
        "replayed",
        "replay_cache_full",
        "unknown_key",
        "bad_signature",
        "proof_required",
        "bad_proof",
        "health_failed",
        "pool_full",
    ];
}

/// A packet that passed every check. Only [`Verifier::verify`] makes one.
#[derive(Debug)]
pub struct VerifiedPacket {
    entropy: SecretBytes,
    class: Provenance,
    key_id: KeyId,
    nonce: [u8; 16],
    sequence: u64,
    provenance: Vec<SourceEntry>,
}

impl VerifiedPacket {
    pub fn nonce(&self) -> [u8; 16] {
        self.nonce
    }
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    pub fn class(&self) -> Provenance {
        self.class
    }
    pub fn provenance(&self) -> &[SourceEntry] {
        &self.provenance
    }
    pub fn len(&self) -> usize {
        self.entropy.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entropy.is_empty()
    }
    pub(crate) fn into_entropy(self) -> (SecretBytes, Provenance) {
        (self.entropy, self.class)
    }
}

/// Verification policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// This daemon's id: packets must name it as recipient.
    pub recipient: String,
    pub max_skew_ms: u64,
    pub require_proof: bool,
    pub replay_capacity: usize,
    pub alpha_exp: u32,
}

#[derive(Default)]
struct ReplayCache {
    seen: HashMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
}

impl ReplayCache {
    /// Forgets nonces whose packets can no longer pass the expiry check.
    fn prune(&mut self, now_ms: u64, skew_ms: u64) {
        while let Some(&(nonce, exp)) = self.order.front() {
            if exp.saturating_add(skew_ms) >= now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&nonce);
        }
    }
}

/// Verifies packets for one daemon. Shared by all connections.
pub struct Verifier {
    policy: Policy,
    keys: RwLock<Arc<HashMap<KeyId, VerifyingKey>>>,
    replay: Mutex<ReplayCache>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(policy: Policy, trusted: Vec<VerifyingKey>) -> Self {
        let v = Self {
            policy,
            keys: RwLock::new(Arc::new(HashMap::new())),
            replay: Mutex::new(ReplayCache::default()),
        };
        v.set_trusted_keys(trusted);
        v
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces the trusted hub keys (rotation: list old and new together).
    pub fn set_trusted_keys(&self, trusted: Vec<VerifyingKey>) {
        let map = trusted.into_iter().map(|k| (k.id(), k)).collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
    }

    pub fn trusted_key_ids(&self) -> Vec<KeyId> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    fn replay(&self) -> std::sync::MutexGuard<'_, ReplayCache> {
        self.replay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs every check on one encoded packet at time `now_ms` (Unix milliseconds).
    pub fn verify(&self, bytes: &[u8], now_ms: u64) -> Result<VerifiedPacket, Reject> {
        let p = &self.policy;
        let decoded = Packet::decode(bytes)?;
        let pkt = decoded.packet;
        if pkt.recipient != p.recipient {
            return Err(Reject::WrongRecipient);
        }
        if now_ms > pkt.expires_at_ms {
            return Err(Reject::Expired);
        }
        if pkt.issued_at_ms > now_ms.saturating_add(p.max_skew_ms) {
            return Err(Reject::IssuedInFuture);
        }
        {
            let mut cache = self.replay();
            cache.prune(now_ms, p.max_skew_ms);
            if cache.seen.contains_key(&pkt.nonce) {
                return Err(Reject::Replayed);
            }
        }
        let key = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pkt.key_id)
            .cloned()
            .ok_or(Reject::UnknownKey(pkt.key_id))?;
        if !key.verify(&crate::wire::signing_digest(decoded.signed), &pkt.signature) {
            return Err(Reject::BadSignature);
        }
        match pkt.proof_alg {
            PROOF_NONE if p.require_proof => return Err(Reject::ProofRequired),
            PROOF_NONE => {}
            other => return Err(Reject::UnsupportedProof(other)),
        }
        // Mixed output claims full entropy: test it as 8 bits per byte, fresh for each packet.
        HealthTester::new(p.alpha_exp, 8.0)
            .feed(pkt.entropy.expose())
            .map_err(|e| Reject::Health(pkt.key_id, e))?;
        {
            let mut cache = self.replay();
            if cache.seen.len() >= p.replay_capacity {
                return Err(Reject::ReplayCacheFull);
            }
            // Insert-if-absent: of two concurrent copies of one packet, exactly one gets here first.
            if cache.seen.insert(pkt.nonce, pkt.expires_at_ms).is_some() {
                return Err(Reject::Replayed);
            }
            debug_assert!(pkt.expires_at_ms - pkt.issued_at_ms <= MAX_LIFETIME_MS);
            cache.order.push_back((pkt.nonce, pkt.expires_at_ms));
        }
        let class = pkt.provenance_class();
        Ok(VerifiedPacket {
            entropy: pkt.entropy,
            class,
            key_id: pkt.key_id,
            nonce: pkt.nonce,
            sequence: pkt.sequence,
            provenance: pkt.provenance,
        })
    }

    /// Nonces currently remembered (for stats).
    pub fn replay_cache_len(&self) -> usize {
        self.replay().seen.len()
    }
}
