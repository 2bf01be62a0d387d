//! The daemon's packet verifier: every check, in a fixed order, before a byte is admitted.
//!
//! Order: size → decode (structure, version) → recipient → time window → nonce not seen →
//! signature by a trusted hub key (whose algorithm must be the one the packet names) → each
//! decentralized node's signature on its commitment → node
//! quorum → proof policy and the mixing proof → health tests on the entropy → record the nonce.
//! Each failure is a distinct [`Reject`] with a stable reason label. Cheap checks come first so a
//! flood of bad packets costs little; the nonce is recorded only after the signature verified, so
//! unsigned junk cannot fill the replay cache.
//!
//! Success yields a [`VerifiedPacket`]. Its fields are private and this module is the only place
//! that constructs one; [`crate::pool::Pool::admit`] requires it, so skipping a check does not
//! compile.

pub mod journal;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use crate::crypto::falcon::{KeyId, VerifyingKey};
use crate::crypto::sig::{HubVerifyingKey, SigAlg};
use crate::crypto::stark::{self, PublicPart};
use crate::health::{HealthFailure, HealthTester};
use crate::secret::SecretBytes;
use crate::wire::Provenance;
use crate::wire::{
    DecodeError, MAX_LIFETIME_MS, MIX_RP64, PROOF_NONE, PROOF_STARK_RP64, Packet, SourceEntry,
    SourceKind,
};

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
    #[error("packet issued before this daemon started (replay floor; no trust.replay_state_file)")]
    IssuedBeforeStart,
    #[error("cannot record the nonce in the replay state file")]
    ReplayState(#[source] std::io::Error),
    #[error("replay cache full; refusing packets until entries expire")]
    ReplayCacheFull,
    #[error("packet signed by an unknown key {0}")]
    UnknownKey(KeyId),
    #[error("packet claims {packet} but its key {key} is a trusted {trusted} key")]
    AlgorithmMismatch {
        key: KeyId,
        packet: SigAlg,
        trusted: SigAlg,
    },
    #[error("signature does not verify")]
    BadSignature,
    #[error("node {node}: {why}")]
    BadNodeSignature { node: String, why: &'static str },
    #[error("node {node}: receipt {why}")]
    BadNodeReceipt { node: String, why: &'static str },
    #[error("the nodes' round is not within the packet lifetime and clock skew of its issue time")]
    StaleRound,
    #[error("round already admitted with nodes (replayed round)")]
    RoundReplayed,
    #[error("{have} trusted node commitments, at least {need} required")]
    QuorumNotMet { have: usize, need: usize },
    #[error("a mixing proof is required and the packet has none")]
    ProofRequired,
    #[error("proof algorithm {0} is not supported")]
    UnsupportedProof(u8),
    #[error("a STARK proof needs the Rescue-Prime mixer, the packet names mixer {0}")]
    ProofForOtherMixer(u8),
    #[error("mixing proof does not verify: {0}")]
    BadProof(#[source] crate::crypto::stark::VerifyError),
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
            Self::IssuedBeforeStart => "issued_before_start",
            Self::ReplayState(_) => "replay_state_failed",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::UnknownKey(_) => "unknown_key",
            Self::AlgorithmMismatch { .. } => "algorithm_mismatch",
            Self::BadSignature => "bad_signature",
            Self::BadNodeSignature { .. } => "bad_node_signature",
            Self::BadNodeReceipt { .. } => "bad_node_receipt",
            Self::StaleRound => "stale_round",
            Self::RoundReplayed => "round_replayed",
            Self::QuorumNotMet { .. } => "quorum_not_met",
            Self::ProofRequired => "proof_required",
            Self::UnsupportedProof(_) | Self::ProofForOtherMixer(_) | Self::BadProof(_) => {
                "bad_proof"
            }
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
        "issued_before_start",
        "replay_state_failed",
        "replay_cache_full",
        "unknown_key",
        "algorithm_mismatch",
        "bad_signature",
        "bad_node_signature",
        "bad_node_receipt",
        "stale_round",
        "round_replayed",
        "quorum_not_met",
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
    /// Packets must carry at least this many valid commitments from distinct trusted nodes.
    pub min_node_quorum: usize,
    pub replay_capacity: usize,
    pub alpha_exp: u32,
}

/// The replay-cache key of a round that nodes backed: rounds share the cache (and the journal)
/// with nonces, under a tag that no 16-byte nonce drawn at random will hit.
fn round_key(round: u64) -> [u8; 16] {
    let h = crate::crypto::tagged_hash("kirq/round/v1", &[&round.to_be_bytes()]);
    let mut k = [0u8; 16];
    k.copy_from_slice(&h[..16]);
    k
}

/// A verified packet whose nonce is not yet durable in the replay journal. [`Verifier::sync`]
/// turns a batch of these into [`VerifiedPacket`]s with one `fdatasync`.
#[derive(Debug)]
pub struct Unsynced(VerifiedPacket);

#[derive(Default)]
struct ReplayCache {
    seen: HashMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
    /// The latest expiry of a nonce forgotten by [`Self::prune`]: a packet expiring no later
    /// could be one whose nonce is gone, so it is refused as a replay. Pruning follows the wall
    /// clock, which can step: ahead, it forgets nonces of packets that are still live once it
    /// steps back (found by `tests/faults_root.rs`, `daemon_clock_stepped_two_minutes_both_ways`).
    horizon_ms: u64,
    /// The nonces on disk (see [`journal`]); `None` when the daemon keeps no replay state.
    journal: Option<journal::Journal>,
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
            self.horizon_ms = self.horizon_ms.max(exp);
        }
    }
}

/// Verifies packets for one daemon. Shared by all connections.
pub struct Verifier {
    policy: Policy,
    keys: RwLock<Arc<HashMap<KeyId, HubVerifyingKey>>>,
    /// Trusted decentralized nodes by id.
    nodes: RwLock<Arc<HashMap<String, VerifyingKey>>>,
    replay: Mutex<ReplayCache>,
    /// Journal records known durable ([`journal::Journal::appended`] at the last sync that
    /// returned); held through each `fdatasync`, so syncs run one at a time.
    synced: Mutex<u64>,
    /// A health tester that has seen nothing, with the policy's cutoffs: each packet's tests
    /// start from a clone of it.
    fresh_tester: HealthTester,
    /// Packets issued before this (Unix ms) are refused: the replay floor of a daemon that keeps
    /// no replay journal (0 = none).
    floor_ms: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(policy: Policy, trusted: Vec<impl Into<HubVerifyingKey>>) -> Self {
        let fresh_tester = HealthTester::new(policy.alpha_exp, 8.0);
        let v = Self {
            policy,
            keys: RwLock::new(Arc::new(HashMap::new())),
            nodes: RwLock::new(Arc::new(HashMap::new())),
            replay: Mutex::new(ReplayCache::default()),
            synced: Mutex::new(0),
            fresh_tester,
            floor_ms: 0,
        };
        v.set_trusted_keys(trusted);
        v
    }

    /// Keeps the replay cache in the journal at `path` across restarts: the live nonces it
    /// holds are loaded now, and every admitted nonce is synced to it before admission.
    pub fn with_replay_journal(
        self,
        path: &std::path::Path,
        now_ms: u64,
    ) -> Result<Self, journal::JournalError> {
        let (j, live) = journal::Journal::open(path, now_ms, self.policy.max_skew_ms)?;
        {
            let mut cache = self.replay();
            for (nonce, exp) in live {
                if cache.seen.insert(nonce, exp).is_none() {
                    cache.order.push_back((nonce, exp));
                }
            }
            // Records are in admission order, expiries nearly so; prune expects them sorted.
            cache.order.make_contiguous().sort_by_key(|&(_, exp)| exp);
            cache.journal = Some(j);
        }
        // A new journal counts its records from 0.
        *crate::util::lock(&self.synced) = 0;
        Ok(self)
    }

    /// Without a journal: refuses every packet issued before `floor_ms` (the daemon's start plus
    /// the allowed clock skew), so none admitted before a restart can be admitted after it.
    pub fn with_replay_floor(mut self, floor_ms: u64) -> Self {
        self.floor_ms = floor_ms;
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces the trusted hub keys (rotation: list old and new together), of either algorithm.
    pub fn set_trusted_keys(&self, trusted: Vec<impl Into<HubVerifyingKey>>) {
        let map = trusted
            .into_iter()
            .map(|k| {
                let k = k.into();
                (k.id(), k)
            })
            .collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
    }

    /// Replaces the trusted decentralized nodes (id and Falcon-512 key).
    pub fn set_trusted_nodes(&self, nodes: Vec<(String, VerifyingKey)>) {
        *self.nodes.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(nodes.into_iter().collect());
    }

    /// Checks each decentralized entry: its signed commitment, and for a contributing node its
    /// receipt over (round, this daemon, its epoch and sequence, the packet's whole commitment
    /// set). Returns how many distinct trusted nodes gave a valid receipt. A node shown at reveal
    /// that did not contribute needs no receipt, and need not be trusted (its commitment only
    /// completes the set); if it is trusted its commitment signature must still verify.
    fn check_nodes(&self, pkt: &Packet) -> Result<usize, Reject> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner()).clone();
        // First every signed commitment (a forged one is named as such), then the receipts.
        let mut listed = std::collections::HashSet::new();
        let mut signed = Vec::new();
        for s in pkt
            .provenance
            .iter()
            .filter(|s| s.kind == SourceKind::Decentralized)
        {
            let bad = |why| Reject::BadNodeSignature {
                node: s.id.clone(),
                why,
            };
            if !listed.insert(s.id.as_str()) {
                return Err(bad("listed twice"));
            }
            let key = match nodes.get(&s.id) {
                Some(k) => k,
                None if !s.contributes() => continue,
                None => return Err(bad("not a trusted node")),
            };
            let digest = crate::crypto::node_signing_digest(pkt.round, &s.id, &s.commitment);
            if !fuzzing::signatures_waived() && !key.verify(&digest, &s.node_signature) {
                return Err(bad("signature on its commitment does not verify"));
            }
            signed.push((s, key));
        }
        let mut set = None;
        let mut receipted = std::collections::HashSet::new();
        for (s, key) in signed {
            let Some(r) = &s.receipt else { continue };
            let set = *set.get_or_insert_with(|| crate::wire::commitment_set(&pkt.provenance));
            let digest = crate::crypto::node_receipt_digest(
                pkt.round,
                &self.policy.recipient,
                r.epoch,
                r.sequence,
                &set,
            );
            if !key.verify(&digest, &r.signature) {
                return Err(Reject::BadNodeReceipt {
                    node: s.id.clone(),
                    why: "does not verify for this round, this daemon and this commitment set",
                });
            }
            receipted.insert(s.id.as_str());
        }
        Ok(receipted.len())
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

    /// Runs every check on one encoded packet at time `now_ms` (Unix milliseconds) and makes
    /// its nonce durable.
    pub fn verify(&self, bytes: &[u8], now_ms: u64) -> Result<VerifiedPacket, Reject> {
        let u = self.verify_unsynced(bytes, now_ms)?;
        Ok(self.sync(vec![u])?.pop().expect("one packet in, one out"))
    }

    /// Makes the nonces of `batch` durable in the replay journal (one `fdatasync`); only then
    /// may their entropy be admitted. On an I/O error the whole batch is refused (its nonces stay
    /// remembered, so a resend is refused too).
    ///
    /// Group commit: the `fdatasync` runs without the replay lock, so other packets go on being
    /// checked and appended meanwhile, and one sync makes durable every record appended before it
    /// started. A caller whose records a sync already covered returns without one. This blocks
    /// for the length of a disk sync: call it off the async workers.
    pub fn sync(&self, batch: Vec<Unsynced>) -> Result<Vec<VerifiedPacket>, Reject> {
        // Every record of `batch` was appended before this: the ticket covers them.
        let ticket = self
            .replay()
            .journal
            .as_ref()
            .map(journal::Journal::appended);
        if let Some(ticket) = ticket {
            let mut synced = crate::util::lock(&self.synced);
            if *synced < ticket {
                let (upto, file) = self
                    .replay()
                    .journal
                    .as_ref()
                    .map(journal::Journal::sync_handle)
                    .expect("a journal, once set, stays");
                file.sync_data().map_err(Reject::ReplayState)?;
                *synced = upto;
            }
        }
        Ok(batch.into_iter().map(|u| u.0).collect())
    }

    /// Every check of [`Self::verify`]; the nonce is recorded (in memory and appended to the
    /// journal) but not yet synced.
    pub fn verify_unsynced(&self, bytes: &[u8], now_ms: u64) -> Result<Unsynced, Reject> {
        let decoded = Packet::decode(bytes)?;
        let pkt = decoded.packet;
        self.check_addressed_and_fresh(&pkt, now_ms)?;
        self.check_hub_signature(&pkt, decoded.signed)?;
        let with_nodes = pkt
            .provenance
            .iter()
            .any(|s| s.kind == SourceKind::Decentralized && s.contributes());
        if with_nodes {
            self.check_round_fresh(&pkt)?;
        }
        let have = self.check_nodes(&pkt)?;
        if have < self.policy.min_node_quorum {
            return Err(Reject::QuorumNotMet {
                have,
                need: self.policy.min_node_quorum,
            });
        }
        self.check_proof(&pkt)?;
        // Mixed output claims full entropy: test it as 8 bits per byte, fresh for each packet
        // (a clone of the fresh tester: its cutoffs are computed once, not per packet).
        self.fresh_tester
            .clone()
            .feed(pkt.entropy.expose())
            .map_err(|e| Reject::Health(pkt.key_id, e))?;
        self.remember(&pkt, with_nodes)?;
        let class = pkt.provenance_class();
        Ok(Unsynced(VerifiedPacket {
            entropy: pkt.entropy,
            class,
            key_id: pkt.key_id,
            nonce: pkt.nonce,
            sequence: pkt.sequence,
            provenance: pkt.provenance,
        }))
    }

    /// The cheap checks: recipient, time window, replay floor, nonce not seen yet.
    fn check_addressed_and_fresh(&self, pkt: &Packet, now_ms: u64) -> Result<(), Reject> {
        let p = &self.policy;
        if pkt.recipient != p.recipient {
            return Err(Reject::WrongRecipient);
        }
        if now_ms > pkt.expires_at_ms {
            return Err(Reject::Expired);
        }
        if pkt.issued_at_ms > now_ms.saturating_add(p.max_skew_ms) {
            return Err(Reject::IssuedInFuture);
        }
        if pkt.issued_at_ms < self.floor_ms {
            return Err(Reject::IssuedBeforeStart);
        }
        let mut cache = self.replay();
        cache.prune(now_ms, p.max_skew_ms);
        if cache.seen.contains_key(&pkt.nonce) || pkt.expires_at_ms <= cache.horizon_ms {
            return Err(Reject::Replayed);
        }
        Ok(())
    }

    /// The hub's signature over `signed`, by a trusted key of the algorithm the packet names.
    fn check_hub_signature(&self, pkt: &Packet, signed: &[u8]) -> Result<(), Reject> {
        let key = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pkt.key_id)
            .cloned()
            .ok_or(Reject::UnknownKey(pkt.key_id))?;
        if key.alg() != pkt.sig_alg {
            return Err(Reject::AlgorithmMismatch {
                key: pkt.key_id,
                packet: pkt.sig_alg,
                trusted: key.alg(),
            });
        }
        if !fuzzing::signatures_waived()
            && !key.verify(&crate::wire::signing_digest(signed), &pkt.signature)
        {
            return Err(Reject::BadSignature);
        }
        Ok(())
    }

    /// A packet with node contributions: its nodes' round is bound to the packet's issue time
    /// (rounds are the hub's clock in microseconds, so an old round cannot back a new packet)
    /// and has not backed another packet.
    fn check_round_fresh(&self, pkt: &Packet) -> Result<(), Reject> {
        let round_ms = pkt.round / 1000;
        if pkt.issued_at_ms.abs_diff(round_ms) > MAX_LIFETIME_MS + self.policy.max_skew_ms {
            return Err(Reject::StaleRound);
        }
        if self.replay().seen.contains_key(&round_key(pkt.round)) {
            return Err(Reject::RoundReplayed);
        }
        Ok(())
    }

    /// The proof policy, and the mixing proof when the packet carries one.
    fn check_proof(&self, pkt: &Packet) -> Result<(), Reject> {
        match pkt.proof_alg {
            PROOF_NONE if self.policy.require_proof => Err(Reject::ProofRequired),
            PROOF_NONE => Ok(()),
            PROOF_STARK_RP64 if pkt.mix_alg != MIX_RP64 => {
                Err(Reject::ProofForOtherMixer(pkt.mix_alg))
            }
            PROOF_STARK_RP64 => {
                let parts: Vec<PublicPart> = pkt
                    .provenance
                    .iter()
                    .filter(|s| s.contributes())
                    .map(|s| PublicPart {
                        id: s.id.clone(),
                        len: s.byte_count as usize,
                        commitment: s.commitment,
                    })
                    .collect();
                stark::verify(pkt.round, &parts, pkt.entropy.expose(), &pkt.proof)
                    .map_err(Reject::BadProof)
            }
            other => Err(Reject::UnsupportedProof(other)),
        }
    }

    /// Records the nonce (and the nodes' round) as seen, in memory and in the replay journal:
    /// the last step, so only packets that passed every check fill the cache.
    fn remember(&self, pkt: &Packet, with_nodes: bool) -> Result<(), Reject> {
        let mut cache = self.replay();
        if cache.seen.len() >= self.policy.replay_capacity {
            return Err(Reject::ReplayCacheFull);
        }
        let round = with_nodes.then(|| {
            // Kept while a packet naming this round could still pass the freshness check.
            let exp = (pkt.round / 1000).saturating_add(2 * MAX_LIFETIME_MS);
            (round_key(pkt.round), exp)
        });
        if let Some((k, _)) = round
            && cache.seen.contains_key(&k)
        {
            return Err(Reject::RoundReplayed);
        }
        // Insert-if-absent: of two concurrent copies of one packet, exactly one gets here first.
        if cache.seen.insert(pkt.nonce, pkt.expires_at_ms).is_some() {
            return Err(Reject::Replayed);
        }
        debug_assert!(pkt.expires_at_ms - pkt.issued_at_ms <= MAX_LIFETIME_MS);
        cache.order.push_back((pkt.nonce, pkt.expires_at_ms));
        let mut records = vec![(pkt.nonce, pkt.expires_at_ms)];
        if let Some((k, exp)) = round {
            cache.seen.insert(k, exp);
            cache.order.push_back((k, exp));
            records.push((k, exp));
        }
        let live = cache.order.len();
        let ReplayCache { order, journal, .. } = &mut *cache;
        if let Some(j) = journal.as_mut() {
            // On failure the nonce stays remembered in memory: refusing it again is safe.
            for (k, exp) in &records {
                j.append(k, *exp).map_err(Reject::ReplayState)?;
            }
            if j.wants_compaction(live)
                && let Err(e) = j.compact(&mut order.iter().copied())
            {
                tracing::warn!(error = %e, file = %j.path().display(), "replay journal compaction failed");
            }
        }
        Ok(())
    }

    /// Nonces currently remembered (for stats).
    pub fn replay_cache_len(&self) -> usize {
        self.replay().seen.len()
    }
}

/// The test-only verifier policy of the packet fuzz target (`fuzz/fuzz_targets/packet_verify.rs`):
/// with `--cfg fuzzing`, which cargo-fuzz sets and no normal or release build does, the target may
/// waive the hub's and the nodes' signature checks, so random packets reach every check after
/// them (quorum, proof, health, replay). Without that cfg this is a constant `false`.
#[doc(hidden)]
pub mod fuzzing {
    #[cfg(fuzzing)]
    pub static WAIVE_SIGNATURES: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    #[inline]
    pub(super) fn signatures_waived() -> bool {
        #[cfg(fuzzing)]
        return WAIVE_SIGNATURES.load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(fuzzing))]
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::falcon::SigningKey;
    use crate::wire::{SourceKind, sample_packet};

    fn policy(quorum: usize) -> Policy {
        Policy {
            recipient: "kirqd-t".into(),
            max_skew_ms: DEFAULT_MAX_SKEW_MS,
            require_proof: false,
            min_node_quorum: quorum,
            replay_capacity: 1024,
            alpha_exp: 30,
        }
    }

    fn verifier(hub: &SigningKey, quorum: usize, nodes: &[(&str, &SigningKey)]) -> Verifier {
        let v = Verifier::new(policy(quorum), vec![hub.verifying_key().clone()]);
        v.set_trusted_nodes(
            nodes
                .iter()
                .map(|(id, k)| ((*id).to_owned(), k.verifying_key().clone()))
                .collect(),
        );
        v
    }

    /// A round the way hubs number them: the clock in microseconds.
    fn fresh_round() -> u64 {
        crate::util::now_ms() * 1000
    }

    /// Each node's commitment, signature and receipt for `recipient` over the packet's whole
    /// commitment set, as honest nodes would make them at reveal (sequence `seq`).
    fn sign_nodes(p: &mut Packet, nodes: &[(&str, &SigningKey)], recipient: &str, seq: u64) {
        for (id, k) in nodes {
            let commitment = [id.len() as u8; 32];
            p.provenance.push(SourceEntry {
                kind: SourceKind::Decentralized,
                id: (*id).to_owned(),
                byte_count: 64,
                commitment,
                node_signature: k.sign(&crate::crypto::node_signing_digest(
                    p.round,
                    id,
                    &commitment,
                )),
                receipt: None,
            });
        }
        receipt_all(p, nodes, recipient, seq);
    }

    /// (Re)signs every node's receipt over the packet's commitment set as it is now.
    fn receipt_all(p: &mut Packet, nodes: &[(&str, &SigningKey)], recipient: &str, seq: u64) {
        let set = crate::wire::commitment_set(&p.provenance);
        let round = p.round;
        for s in p.provenance.iter_mut() {
            if let Some((_, k)) = nodes.iter().find(|(id, _)| *id == s.id) {
                let digest = crate::crypto::node_receipt_digest(round, recipient, 7, seq, &set);
                s.receipt = Some(crate::wire::NodeReceipt {
                    epoch: 7,
                    sequence: seq,
                    signature: k.sign(&digest),
                });
            }
        }
    }

    /// A packet with one node entry per `(id, signer)`, each signing its commitment and its
    /// receipt.
    fn with_nodes(hub: &SigningKey, nodes: &[(&str, &SigningKey)]) -> Vec<u8> {
        let mut p = sample_packet(hub, "kirqd-t", 256, SourceKind::Qrng);
        p.round = fresh_round();
        sign_nodes(&mut p, nodes, "kirqd-t", 1);
        p.encode_signed(hub).to_vec()
    }

    /// A wall clock that steps ahead and back must not make a verifier forget a live nonce.
    #[test]
    fn a_clock_step_ahead_and_back_does_not_reopen_a_replay() {
        let hub = SigningKey::generate();
        let v = verifier(&hub, 0, &[]);
        let now = crate::util::now_ms();
        let early = sample_packet(&hub, "kirqd-t", 64, SourceKind::Qrng).encode_signed(&hub);
        assert!(v.verify(&early, now).is_ok());
        // Two minutes ahead: a packet valid by that clock prunes the cache.
        let mut ahead = sample_packet(&hub, "kirqd-t", 64, SourceKind::Qrng);
        ahead.issued_at_ms += 120_000;
        ahead.expires_at_ms += 120_000;
        assert!(v.verify(&ahead.encode_signed(&hub), now + 120_000).is_ok());
        // Back: the early packet is still inside its lifetime, and still a replay.
        assert_eq!(
            v.verify(&early, now + 1_000).unwrap_err().reason(),
            "replayed"
        );
        // A fresh packet is admitted.
        let fresh = sample_packet(&hub, "kirqd-t", 64, SourceKind::Qrng).encode_signed(&hub);
        assert!(v.verify(&fresh, crate::util::now_ms()).is_ok());
    }

    #[test]
    fn node_signatures_and_quorum() {
        let hub = SigningKey::generate();
        let (a, b, stranger) = (
            SigningKey::generate(),
            SigningKey::generate(),
            SigningKey::generate(),
        );
        let now = crate::util::now_ms();
        let v = verifier(&hub, 2, &[("node-a", &a), ("node-bb", &b)]);
        let good = with_nodes(&hub, &[("node-a", &a), ("node-bb", &b)]);
        assert!(v.verify(&good, now).is_ok());

        let reason = |bytes: &[u8]| v.verify(bytes, now).unwrap_err().reason();
        // One trusted node is below the quorum of two.
        assert_eq!(
            reason(&with_nodes(&hub, &[("node-a", &a)])),
            "quorum_not_met"
        );
        // A trusted id whose entry another key signed.
        let forged = with_nodes(&hub, &[("node-a", &a), ("node-bb", &stranger)]);
        assert_eq!(reason(&forged), "bad_node_signature");
        // A node the daemon does not know.
        let unknown = with_nodes(
            &hub,
            &[("node-a", &a), ("node-bb", &b), ("node-c", &stranger)],
        );
        assert_eq!(reason(&unknown), "bad_node_signature");
        // The same node twice does not make a quorum.
        let twice = with_nodes(&hub, &[("node-a", &a), ("node-a", &a)]);
        assert_eq!(reason(&twice), "bad_node_signature");
        // A signature made for another round does not verify for this one.
        let mut p = Packet::decode(&good).unwrap().packet;
        p.round += 1;
        p.nonce[0] ^= 1;
        assert_eq!(reason(&p.encode_signed(&hub)), "bad_node_signature");
        // None of the refused packets reached the replay cache (one nonce, one round).
        assert_eq!(v.replay_cache_len(), 2);
    }

    /// A hub that, having seen the nodes' reveals, changes its own contribution (and so its
    /// commitment, re-signing the packet) is refused: the receipts name the set shown at reveal.
    #[test]
    fn a_hub_that_grinds_its_contribution_after_the_reveals_is_refused() {
        let hub = SigningKey::generate();
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let nodes = [("node-a", &a), ("node-bb", &b)];
        let v = verifier(&hub, 2, &nodes);
        let mut p = sample_packet(&hub, "kirqd-t", 256, SourceKind::Qrng);
        p.round = fresh_round();
        sign_nodes(&mut p, &nodes, "kirqd-t", 1);
        p.provenance[0].commitment[0] ^= 1;
        let r = v.verify(&p.encode_signed(&hub), crate::util::now_ms());
        assert_eq!(r.unwrap_err().reason(), "bad_node_receipt");
        // A node added after the reveals (a late, colluding commitment) breaks them the same way.
        let late = SigningKey::generate();
        let v = verifier(&hub, 2, &[("node-a", &a), ("node-bb", &b), ("late", &late)]);
        let mut p = sample_packet(&hub, "kirqd-t", 256, SourceKind::Qrng);
        p.round = fresh_round();
        sign_nodes(&mut p, &nodes, "kirqd-t", 1);
        let mut q = p.provenance[1].clone();
        q.id = "late".into();
        q.node_signature = late.sign(&crate::crypto::node_signing_digest(
            p.round,
            "late",
            &q.commitment,
        ));
        q.receipt = None;
        q.byte_count = 0;
        p.provenance.push(q);
        let r = v.verify(&p.encode_signed(&hub), crate::util::now_ms());
        assert_eq!(r.unwrap_err().reason(), "bad_node_receipt");
    }

    /// Node signatures and receipts made for one packet cannot back another: not for another
    /// daemon, not for another round, and a round is admitted once.
    #[test]
    fn reused_node_signatures_and_replayed_rounds_are_refused() {
        let hub = SigningKey::generate();
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let nodes = [("node-a", &a), ("node-bb", &b)];
        let v = verifier(&hub, 2, &nodes);
        let now = crate::util::now_ms();
        // Receipts made for another daemon, put in a packet for this one.
        let mut p = sample_packet(&hub, "kirqd-t", 256, SourceKind::Qrng);
        p.round = fresh_round();
        sign_nodes(&mut p, &nodes, "kirqd-other", 1);
        let r = v.verify(&p.encode_signed(&hub), now);
        assert_eq!(r.unwrap_err().reason(), "bad_node_receipt");
        // A good packet, then the same round and node signatures in a fresh packet.
        let good = with_nodes(&hub, &nodes);
        let first = Packet::decode(&good).unwrap().packet;
        assert!(v.verify(&good, now).is_ok());
        let mut again = sample_packet(&hub, "kirqd-t", 256, SourceKind::Qrng);
        again.round = first.round;
        again.provenance = first.provenance.clone();
        let r = v.verify(&again.encode_signed(&hub), now);
        assert_eq!(r.unwrap_err().reason(), "round_replayed");
        // An old round (two minutes before the packet's issue time).
        let mut old = sample_packet(&hub, "kirqd-t", 256, SourceKind::Qrng);
        old.round = fresh_round() - 120_000_000;
        sign_nodes(&mut old, &nodes, "kirqd-t", 2);
        let r = v.verify(&old.encode_signed(&hub), now);
        assert_eq!(r.unwrap_err().reason(), "stale_round");
    }

    /// A node shown at reveal that then withheld is listed with no bytes and no receipt; the
    /// others' receipts cover it, and the packet verifies with their quorum.
    #[test]
    fn a_shown_node_that_withheld_is_listed_without_bytes() {
        let hub = SigningKey::generate();
        let (a, b, c) = (
            SigningKey::generate(),
            SigningKey::generate(),
            SigningKey::generate(),
        );
        let v = verifier(&hub, 2, &[("node-a", &a), ("node-bb", &b), ("node-c", &c)]);
        let mut p = sample_packet(&hub, "kirqd-t", 256, SourceKind::Qrng);
        p.round = fresh_round();
        sign_nodes(
            &mut p,
            &[("node-a", &a), ("node-bb", &b), ("node-c", &c)],
            "kirqd-t",
            1,
        );
        let withheld = p.provenance.iter_mut().find(|s| s.id == "node-c").unwrap();
        withheld.byte_count = 0;
        withheld.receipt = None;
        assert!(
            v.verify(&p.encode_signed(&hub), crate::util::now_ms())
                .is_ok()
        );
        // Dropping it from the list instead changes the set: the receipts no longer verify.
        let mut q = sample_packet(&hub, "kirqd-t", 256, SourceKind::Qrng);
        q.round = fresh_round() + 1;
        sign_nodes(
            &mut q,
            &[("node-a", &a), ("node-bb", &b), ("node-c", &c)],
            "kirqd-t",
            2,
        );
        q.provenance.retain(|s| s.id != "node-c");
        let r = v.verify(&q.encode_signed(&hub), crate::util::now_ms());
        assert_eq!(r.unwrap_err().reason(), "bad_node_receipt");
    }

    /// ML-DSA-65 packets verify under a trusted ML-DSA-65 key; the algorithm id in the packet
    /// selects the verifier, and a key of the other algorithm never verifies it.
    #[test]
    fn signature_algorithm_selects_the_verifier() {
        use crate::crypto::mldsa;
        let falcon = SigningKey::generate();
        let ml = mldsa::SigningKey::generate();
        let stranger = mldsa::SigningKey::generate();
        let v = Verifier::new(
            policy(0),
            vec![
                HubVerifyingKey::from(falcon.verifying_key().clone()),
                HubVerifyingKey::from(ml.verifying_key().clone()),
            ],
        );
        let now = crate::util::now_ms();
        let reject = |bytes: &[u8]| v.verify(bytes, now).unwrap_err();

        // Each algorithm's packets verify under its own trusted key.
        let p = sample_packet(&ml, "kirqd-t", 256, SourceKind::Qrng);
        assert_eq!(p.sig_alg, SigAlg::MlDsa65);
        let bytes = p.encode_signed(&ml);
        let decoded = Packet::decode(&bytes).unwrap();
        assert_eq!(decoded.packet.signature.len(), mldsa::SIGNATURE_BYTES);
        assert_eq!(
            v.verify(&bytes, now).unwrap().key_id(),
            ml.verifying_key().id()
        );
        let f = sample_packet(&falcon, "kirqd-t", 256, SourceKind::Qrng);
        assert!(v.verify(&f.encode_signed(&falcon), now).is_ok());

        // Claims ML-DSA-65 under the Falcon key's id (an ML-DSA signature of the right length).
        let mut p = sample_packet(&ml, "kirqd-t", 256, SourceKind::Qrng);
        p.key_id = falcon.verifying_key().id();
        let e = reject(&p.encode_signed(&ml));
        assert_eq!(e.reason(), "algorithm_mismatch");
        assert_eq!(
            e.to_string(),
            format!(
                "packet claims ml-dsa-65 but its key {} is a trusted falcon512 key",
                falcon.verifying_key().id()
            )
        );
        // Claims Falcon-512 under the ML-DSA key's id, signed with Falcon.
        let mut p = sample_packet(&falcon, "kirqd-t", 256, SourceKind::Qrng);
        p.key_id = ml.verifying_key().id();
        assert_eq!(
            reject(&p.encode_signed(&falcon)).reason(),
            "algorithm_mismatch"
        );
        // Claims ML-DSA-65 under the Falcon key's id, signed with Falcon: the signature's length
        // is not ML-DSA-65's, refused while decoding.
        let mut p = sample_packet(&falcon, "kirqd-t", 256, SourceKind::Qrng);
        p.sig_alg = SigAlg::MlDsa65;
        let e = reject(&p.encode_signed(&falcon));
        assert_eq!(e.reason(), "malformed");
        assert!(e.to_string().contains("field signature has length"), "{e}");
        assert!(e.to_string().contains("allowed 3309..=3309"), "{e}");
        // The trusted ML-DSA key's id, signed by another ML-DSA key.
        let mut p = sample_packet(&stranger, "kirqd-t", 256, SourceKind::Qrng);
        p.key_id = ml.verifying_key().id();
        assert_eq!(
            reject(&p.encode_signed(&stranger)).reason(),
            "bad_signature"
        );
        // An ML-DSA key nobody trusts.
        let p = sample_packet(&stranger, "kirqd-t", 256, SourceKind::Qrng);
        assert_eq!(reject(&p.encode_signed(&stranger)).reason(), "unknown_key");
        // An unknown algorithm id.
        let mut raw = f.encode_signed(&falcon).to_vec();
        raw[5] = 3;
        assert_eq!(reject(&raw).to_string(), "unknown sig_alg 3",);
        // Only the two good packets were recorded.
        assert_eq!(v.replay_cache_len(), 2);
    }
}
