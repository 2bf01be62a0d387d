//! The packet: Kirq's canonical, versioned binary encoding of one delivery of entropy.
//!
//! Big-endian, length-prefixed, no optional padding, so each packet has exactly one encoding:
//!
//! ```text
//! magic "KIRQ" | version u8 = 3 | sig_alg u8 (1 = Falcon-512, 2 = ML-DSA-65)
//! mix_alg u8 (1 = SHAKE256, 2 = Rescue-Prime duplex) | proof_alg u8 (0 = none, 1 = STARK) | key_id [8]
//! recipient_len u8 (1..=64) | recipient (ASCII [A-Za-z0-9._-])
//! sequence u64 | nonce [16] | issued_at_ms u64 | expires_at_ms u64 (0 < lifetime <= 60 s)
//! round u64 (< 2^63: the mixing round that commitments and node signatures name)
//! n_sources u8 (1..=16), each: kind u8 | id_len u8 (1..=64) | id | byte_count u32 | commitment [32]
//!     and for kind 3 (decentralized) only: node_sig_len u16 (1..=752) | node's Falcon-512 signature
//!     | receipt_epoch u64 | receipt_sequence u64 | receipt_len u16 (0..=752) | node's receipt
//!     (byte_count 0 = a node shown at reveal that did not contribute: no receipt, epoch and
//!     sequence 0; only decentralized entries may have it, and at least one entry contributes)
//! entropy_len u32 (1..=1 MiB) | entropy
//! proof_len u32 (0 when proof_alg = 0, else 1..=512 KiB) | proof
//! sig_len u16 (Falcon-512: 1..=752, ML-DSA-65: exactly 3309) | the hub's signature over every
//!     byte before sig_len (see below), in the algorithm sig_alg names
//! ```
//!
//! The signature covers every byte before `sig_len` through a prehash: the hub's key signs the
//! 32-byte [`signing_digest`], a domain-tagged SHA3-256 of those bytes. Falcon hashes its message
//! with PQClean's reference SHAKE256, which cost 443 us for a 64 KiB packet here against 89 us for
//! 4 KiB; the prehash makes the signature's cost independent of the packet size.
//!
//! Every length is checked against its bound before anything is allocated, and trailing bytes are
//! an error. Decoding checks structure only; [`crate::verify`] checks meaning (recipient, time,
//! replay, signature).

mod codec;
pub mod node;
mod provenance;
pub mod refill;

pub use codec::DecodeError;
use codec::{Reader, Writer};
pub use provenance::Provenance;

use crate::crypto::falcon::{self, KeyId};
use crate::crypto::mldsa;
use crate::crypto::sig::PacketSigner;
pub use crate::crypto::sig::SigAlg;
use crate::secret::SecretBytes;

pub const MAGIC: [u8; 4] = *b"KIRQ";
/// 3: node receipts (version 2 packets are refused as `unknown_version`).
pub const VERSION: u8 = 3;
pub const SIG_FALCON512: u8 = 1;
pub const SIG_ML_DSA_65: u8 = 2;
/// SHAKE256 over the framed contributions ([`crate::mix`]); commitments are SHA3-256.
pub const MIX_SHAKE256: u8 = 1;
/// The Rescue-Prime duplex that a STARK can prove ([`crate::crypto::stark::mix`]); commitments are
/// [`crate::crypto::stark::commit`].
pub const MIX_RP64: u8 = 2;
pub const PROOF_NONE: u8 = 0;
/// A winterfell STARK that the output is the [`MIX_RP64`] mix of the committed contributions.
pub const PROOF_STARK_RP64: u8 = 1;
/// Rounds are field elements in the proof: below 2^63.
pub const MAX_ROUND: u64 = crate::crypto::stark::MAX_ROUND;

pub const MAX_RECIPIENT_LEN: usize = 64;
pub const MAX_SOURCES: usize = 16;
pub const MAX_SOURCE_ID_LEN: usize = 64;
pub const MAX_ENTROPY_BYTES: usize = 1 << 20;
pub const MAX_PROOF_BYTES: usize = 512 * 1024;
/// Most raw bytes one source may claim to have contributed to one packet.
pub const MAX_CONTRIBUTION_BYTES: u32 = 16 << 20;
/// A packet lives at most this long after its issue time.
pub const MAX_LIFETIME_MS: u64 = 60_000;

/// The longest packet signature of any algorithm (ML-DSA-65's fixed length).
pub const MAX_SIGNATURE_BYTES: usize = if mldsa::SIGNATURE_BYTES > falcon::MAX_SIGNATURE_BYTES {
    mldsa::SIGNATURE_BYTES
} else {
    falcon::MAX_SIGNATURE_BYTES
};

const FIXED_HEADER: usize = 4 + 4 + 8 + 1 + 8 + 16 + 8 + 8 + 8 + 1;
/// Node signatures and receipts are Falcon-512.
const MAX_SOURCE_ENTRY: usize = 1
    + 1
    + MAX_SOURCE_ID_LEN
    + 4
    + 32
    + 2
    + falcon::MAX_SIGNATURE_BYTES
    + 8
    + 8
    + 2
    + falcon::MAX_SIGNATURE_BYTES;
/// The largest well-formed packet: every field at its bound.
pub const MAX_PACKET_BYTES: usize = FIXED_HEADER
    + MAX_RECIPIENT_LEN
    + MAX_SOURCES * MAX_SOURCE_ENTRY
    + 4
    + MAX_ENTROPY_BYTES
    + 4
    + MAX_PROOF_BYTES
    + 2
    + MAX_SIGNATURE_BYTES;

/// What kind of source a contribution came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Qrng = 1,
    Hsm = 2,
    Decentralized = 3,
    Local = 4,
}

impl SourceKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Qrng,
            2 => Self::Hsm,
            3 => Self::Decentralized,
            4 => Self::Local,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qrng => "qrng",
            Self::Hsm => "hsm",
            Self::Decentralized => "decentralized",
            Self::Local => "local",
        }
    }
}

/// One source's part in a packet: who, what kind, how many raw bytes, and the commitment to them.
/// For a decentralized node, the commitment is the node's own and `node_signature` is the node's
/// Falcon-512 signature over [`crate::crypto::node_signing_digest`]; for other kinds it is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    pub kind: SourceKind,
    pub id: String,
    pub byte_count: u32,
    pub commitment: [u8; 32],
    pub node_signature: Vec<u8>,
    /// A contributing node's receipt; `None` for other kinds and for a node that was shown at
    /// reveal but did not contribute (`byte_count` 0).
    pub receipt: Option<NodeReceipt>,
}

/// A node's signature, made when it revealed, over
/// [`crate::crypto::node_receipt_digest`]`(round, recipient, epoch, sequence, set)`: the set is the
/// digest of every commitment of the round it was shown (the hub's included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReceipt {
    /// Random per node run.
    pub epoch: u64,
    /// The node's reveal number for this recipient in this run: 1, 2, ...
    pub sequence: u64,
    pub signature: Vec<u8>,
}

impl SourceEntry {
    /// True when this entry's bytes are part of the mix (every entry but a shown-only node).
    pub fn contributes(&self) -> bool {
        self.byte_count > 0
    }
}

/// The digest of a packet's whole commitment set (every entry, decentralized ones as nodes, the
/// others as the hub's), as nodes sign it in their receipts.
pub fn commitment_set(provenance: &[SourceEntry]) -> [u8; 32] {
    use crate::crypto::Committer;
    let entries: Vec<(Committer, &str, [u8; 32])> = provenance
        .iter()
        .map(|s| {
            let who = if s.kind == SourceKind::Decentralized {
                Committer::Node
            } else {
                Committer::Hub
            };
            (who, s.id.as_str(), s.commitment)
        })
        .collect();
    crate::crypto::commitment_set_digest(&entries)
}

/// A decoded packet. Its `Debug` never shows the entropy (see [`SecretBytes`]).
#[derive(Debug)]
pub struct Packet {
    /// The algorithm of the hub key that signs this packet.
    pub sig_alg: SigAlg,
    pub key_id: KeyId,
    pub mix_alg: u8,
    pub proof_alg: u8,
    pub recipient: String,
    pub sequence: u64,
    pub nonce: [u8; 16],
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    pub round: u64,
    pub provenance: Vec<SourceEntry>,
    pub entropy: SecretBytes,
    pub proof: Vec<u8>,
    pub signature: Vec<u8>,
}

/// A decoded packet plus the exact bytes its signature covers.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub packet: Packet,
    pub signed: &'a [u8],
}

fn valid_name(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A well-formed packet of `n` fresh random bytes from one source of `kind`, issued now and valid
/// for 60 s, for `key` to sign. For tests, benches and examples; the hub builds real packets in
/// [`crate::hub::PacketFactory`].
pub fn sample_packet(
    key: &impl PacketSigner,
    recipient: &str,
    n: usize,
    kind: SourceKind,
) -> Packet {
    let mut entropy = SecretBytes::zeroed(n);
    getrandom::fill(entropy.expose_mut()).expect("the OS RNG is available");
    let mut nonce = [0; 16];
    getrandom::fill(&mut nonce).expect("the OS RNG is available");
    let now = crate::util::now_ms();
    Packet {
        sig_alg: key.sig_alg(),
        key_id: key.key_id(),
        mix_alg: MIX_SHAKE256,
        proof_alg: PROOF_NONE,
        recipient: recipient.into(),
        sequence: 0,
        nonce,
        issued_at_ms: now,
        expires_at_ms: now + MAX_LIFETIME_MS,
        round: 0,
        provenance: vec![SourceEntry {
            kind,
            id: format!("sample-{}", kind.as_str()),
            byte_count: n as u32,
            commitment: crate::crypto::commit_contribution("sample", entropy.expose()),
            node_signature: Vec::new(),
            receipt: None,
        }],
        entropy,
        proof: Vec::new(),
        signature: Vec::new(),
    }
}

/// What the hub's key signs for a packet: a tagged SHA3-256 of its bytes before `sig_len`.
pub fn signing_digest(signed_prefix: &[u8]) -> [u8; 32] {
    crate::crypto::tagged_hash("kirq/packet-signature/v1", &[signed_prefix])
}

/// True when `s` may be used as a recipient or source id.
pub fn is_valid_id(s: &str) -> bool {
    s.len() <= MAX_RECIPIENT_LEN && valid_name(s.as_bytes())
}

/// Magic, version and the three algorithm ids: (sig_alg, mix_alg, proof_alg).
fn decode_algorithms(r: &mut Reader<'_>) -> Result<(SigAlg, u8, u8), DecodeError> {
    if r.array::<4>("magic")? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let raw_sig_alg = r.u8("sig_alg")?;
    let sig_alg = SigAlg::from_wire(raw_sig_alg).ok_or(DecodeError::UnknownAlgorithm {
        field: "sig_alg",
        value: raw_sig_alg,
    })?;
    let mix_alg = r.u8("mix_alg")?;
    if mix_alg != MIX_SHAKE256 && mix_alg != MIX_RP64 {
        return Err(DecodeError::UnknownAlgorithm {
            field: "mix_alg",
            value: mix_alg,
        });
    }
    let proof_alg = r.u8("proof_alg")?;
    Ok((sig_alg, mix_alg, proof_alg))
}

/// The signed source list: 1..=[`MAX_SOURCES`] entries, at least one contributing bytes.
fn decode_sources(r: &mut Reader<'_>) -> Result<Vec<SourceEntry>, DecodeError> {
    let n_sources = usize::from(r.u8("n_sources")?);
    if n_sources == 0 || n_sources > MAX_SOURCES {
        return Err(DecodeError::CountOutOfRange {
            field: "n_sources",
            value: n_sources as u64,
            min: 1,
            max: MAX_SOURCES as u64,
        });
    }
    let provenance = (0..n_sources)
        .map(|_| decode_source(r))
        .collect::<Result<Vec<_>, _>>()?;
    if !provenance.iter().any(SourceEntry::contributes) {
        return Err(DecodeError::CountOutOfRange {
            field: "contributing sources",
            value: 0,
            min: 1,
            max: MAX_SOURCES as u64,
        });
    }
    Ok(provenance)
}

/// One source entry. Only a decentralized node may contribute no bytes (shown, not mixed).
fn decode_source(r: &mut Reader<'_>) -> Result<SourceEntry, DecodeError> {
    let raw_kind = r.u8("source.kind")?;
    let kind = SourceKind::from_u8(raw_kind).ok_or(DecodeError::UnknownSourceKind(raw_kind))?;
    let id = r.name_u8("source.id", MAX_SOURCE_ID_LEN)?;
    let byte_count = r.u32("source.byte_count")?;
    let node = kind == SourceKind::Decentralized;
    let min = u32::from(!node);
    if byte_count < min || byte_count > MAX_CONTRIBUTION_BYTES {
        return Err(DecodeError::CountOutOfRange {
            field: "source.byte_count",
            value: u64::from(byte_count),
            min: u64::from(min),
            max: u64::from(MAX_CONTRIBUTION_BYTES),
        });
    }
    let commitment = r.array::<32>("source.commitment")?;
    let (node_signature, receipt) = if node {
        decode_node_fields(r, byte_count > 0)?
    } else {
        (Vec::new(), None)
    };
    Ok(SourceEntry {
        kind,
        id,
        byte_count,
        commitment,
        node_signature,
        receipt,
    })
}

/// A node's commitment signature and its receipt (present exactly when it contributes).
fn decode_node_fields(
    r: &mut Reader<'_>,
    contributes: bool,
) -> Result<(Vec<u8>, Option<NodeReceipt>), DecodeError> {
    let n = r.len_u16("source.node_signature", 1, falcon::MAX_SIGNATURE_BYTES)?;
    let sig = r.take(n, "source.node_signature")?.to_vec();
    let epoch = r.u64("source.receipt_epoch")?;
    let sequence = r.u64("source.receipt_sequence")?;
    let max = if contributes {
        falcon::MAX_SIGNATURE_BYTES
    } else {
        0
    };
    let n = r.len_u16("source.receipt", usize::from(contributes), max)?;
    let receipt = r.take(n, "source.receipt")?.to_vec();
    if !contributes && (epoch != 0 || sequence != 0) {
        return Err(DecodeError::CountOutOfRange {
            field: "source.receipt_sequence",
            value: sequence.max(epoch),
            min: 0,
            max: 0,
        });
    }
    let receipt = contributes.then_some(NodeReceipt {
        epoch,
        sequence,
        signature: receipt,
    });
    Ok((sig, receipt))
}

impl Packet {
    /// Decodes one packet; `bytes` must be exactly one packet.
    pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, DecodeError> {
        if bytes.len() > MAX_PACKET_BYTES {
            return Err(DecodeError::TooLarge { len: bytes.len() });
        }
        let mut r = Reader::new(bytes);
        let (sig_alg, mix_alg, proof_alg) = decode_algorithms(&mut r)?;
        let key_id = KeyId(r.array::<8>("key_id")?);
        let recipient = r.name_u8("recipient", MAX_RECIPIENT_LEN)?;
        let sequence = r.u64("sequence")?;
        let nonce = r.array::<16>("nonce")?;
        let issued_at_ms = r.u64("issued_at")?;
        let expires_at_ms = r.u64("expires_at")?;
        if expires_at_ms <= issued_at_ms || expires_at_ms - issued_at_ms > MAX_LIFETIME_MS {
            return Err(DecodeError::LifetimeOutOfRange);
        }
        let round = r.u64("round")?;
        if round > MAX_ROUND {
            return Err(DecodeError::CountOutOfRange {
                field: "round",
                value: round,
                min: 0,
                max: MAX_ROUND,
            });
        }
        let provenance = decode_sources(&mut r)?;
        let entropy_len = r.len_u32("entropy", 1, MAX_ENTROPY_BYTES)?;
        let entropy = SecretBytes::new(r.take(entropy_len, "entropy")?.to_vec());
        let (proof_min, proof_max) = if proof_alg == PROOF_NONE {
            (0, 0)
        } else {
            (1, MAX_PROOF_BYTES)
        };
        let proof_len = r.len_u32("proof", proof_min, proof_max)?;
        let proof = r.take(proof_len, "proof")?.to_vec();
        let signed = &bytes[..r.position()];
        let (sig_min, sig_max) = sig_alg.signature_len();
        let sig_len = r.len_u16("signature", sig_min, sig_max)?;
        let signature = r.take(sig_len, "signature")?.to_vec();
        r.finish()?;
        let packet = Packet {
            sig_alg,
            key_id,
            mix_alg,
            proof_alg,
            recipient,
            sequence,
            nonce,
            issued_at_ms,
            expires_at_ms,
            round,
            provenance,
            entropy,
            proof,
            signature,
        };
        Ok(Decoded { packet, signed })
    }

    /// Encodes and signs with `key`. Fields are taken as given, `sig_alg` and `key_id` too (a test
    /// may build an invalid packet, e.g. one claiming the other algorithm); the encoding itself
    /// always follows the layout. The result holds entropy: it is zeroed on drop.
    pub fn encode_signed(&self, key: &impl PacketSigner) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = self.encode_unsigned();
        let sig = key.sign(&signing_digest(&out));
        let mut w = Writer(&mut out);
        w.u16(sig.len() as u16);
        w.bytes(&sig);
        out
    }

    /// The signed prefix: every field before the signature length.
    pub fn encode_unsigned(&self) -> zeroize::Zeroizing<Vec<u8>> {
        // Reserved up front for every field and the largest signature, so the buffer never
        // reallocates: a reallocation would free a copy of the entropy without zeroing it.
        let provenance: usize = self
            .provenance
            .iter()
            .map(|s| {
                1 + 1
                    + s.id.len()
                    + 4
                    + 32
                    + 2
                    + s.node_signature.len()
                    + 8
                    + 8
                    + 2
                    + s.receipt.as_ref().map_or(0, |r| r.signature.len())
            })
            .sum();
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(
            FIXED_HEADER
                + self.recipient.len()
                + provenance
                + 8
                + self.entropy.len()
                + self.proof.len()
                + 2
                + MAX_SIGNATURE_BYTES,
        ));
        let mut w = Writer(&mut out);
        w.bytes(&MAGIC);
        w.u8(VERSION);
        w.u8(self.sig_alg.wire_id());
        w.u8(self.mix_alg);
        w.u8(self.proof_alg);
        w.bytes(&self.key_id.0);
        w.u8(self.recipient.len() as u8);
        w.bytes(self.recipient.as_bytes());
        w.u64(self.sequence);
        w.bytes(&self.nonce);
        w.u64(self.issued_at_ms);
        w.u64(self.expires_at_ms);
        w.u64(self.round);
        w.u8(self.provenance.len() as u8);
        for s in &self.provenance {
            w.u8(s.kind as u8);
            w.u8(s.id.len() as u8);
            w.bytes(s.id.as_bytes());
            w.u32(s.byte_count);
            w.bytes(&s.commitment);
            if s.kind == SourceKind::Decentralized {
                w.u16(s.node_signature.len() as u16);
                w.bytes(&s.node_signature);
                let (epoch, sequence, sig) = match &s.receipt {
                    Some(r) => (r.epoch, r.sequence, r.signature.as_slice()),
                    None => (0, 0, &[][..]),
                };
                w.u64(epoch);
                w.u64(sequence);
                w.u16(sig.len() as u16);
                w.bytes(sig);
            }
        }
        w.u32(self.entropy.len() as u32);
        w.bytes(self.entropy.expose());
        w.u32(self.proof.len() as u32);
        w.bytes(&self.proof);
        out
    }

    /// The provenance class of the whole packet: the sources' common kind, or hybrid.
    pub fn provenance_class(&self) -> Provenance {
        Provenance::of_sources(self.provenance.iter().map(|s| s.kind))
    }
}

#[cfg(test)]
mod tests;
