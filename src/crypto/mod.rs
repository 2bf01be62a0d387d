//! Cryptographic building blocks: packet signatures ([`falcon`], the default, and [`mldsa`],
//! chosen per hub key through [`sig`]) and commitments.
//!
//! Commitments and key ids use SHA3-256 with a domain-separation label, so a hash made for one
//! purpose can never be taken for another.

pub mod falcon;
mod keyfile;
pub mod mldsa;
pub mod sig;
pub mod stark;

use sha3::{Digest, Sha3_256};

/// SHA3-256 of `label ‖ len(part) ‖ part ‖ …` (lengths as u64 big-endian): unambiguous framing.
pub fn tagged_hash(label: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha3_256::new();
    h.update((label.len() as u64).to_be_bytes());
    h.update(label.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// The hub's commitment to one source's raw contribution to a packet.
pub fn commit_contribution(source_id: &str, bytes: &[u8]) -> [u8; 32] {
    tagged_hash("kirq/commit/v1", &[source_id.as_bytes(), bytes])
}

/// What a decentralized node's Falcon-512 key signs: its commitment to its contribution for
/// `round` ([`stark::commit`]), bound to the node's id.
pub fn node_signing_digest(round: u64, node_id: &str, commitment: &[u8; 32]) -> [u8; 32] {
    tagged_hash(
        "kirq/node-commitment/v1",
        &[&round.to_be_bytes(), node_id.as_bytes(), commitment],
    )
}
