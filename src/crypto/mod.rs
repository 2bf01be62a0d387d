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

/// Who made one commitment of a round's set: the hub (for one of its sources) or a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Committer {
    Hub,
    Node,
}

/// One digest for every commitment of a round, whatever the order they are listed in: the
/// entries `(committer, id, commitment)` sorted, then hashed. Nodes sign it in their receipts
/// (the set they were shown at reveal); the daemon recomputes it from the packet.
pub fn commitment_set_digest(entries: &[(Committer, &str, [u8; 32])]) -> [u8; 32] {
    let mut sorted: Vec<_> = entries.to_vec();
    sorted.sort();
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(sorted.len());
    for (who, id, c) in &sorted {
        let mut e = Vec::with_capacity(1 + id.len() + 32);
        e.push(match who {
            Committer::Hub => 0,
            Committer::Node => 1,
        });
        e.extend_from_slice(id.as_bytes());
        e.extend_from_slice(c);
        parts.push(e);
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    tagged_hash("kirq/commitment-set/v1", &refs)
}

/// What a node signs when it reveals: the round, the daemon the round's packet is for, the
/// node's run (`epoch`, random at each start) and its reveal number for that recipient in that
/// run (`sequence`, 1, 2, ...), and the digest of the whole commitment set it was shown.
pub fn node_receipt_digest(
    round: u64,
    recipient: &str,
    epoch: u64,
    sequence: u64,
    set: &[u8; 32],
) -> [u8; 32] {
    tagged_hash(
        "kirq/node-receipt/v1",
        &[
            &round.to_be_bytes(),
            recipient.as_bytes(),
            &epoch.to_be_bytes(),
            &sequence.to_be_bytes(),
            set,
        ],
    )
}

/// What a decentralized node's Falcon-512 key signs: its commitment to its contribution for
/// `round` ([`stark::commit`]), bound to the node's id.
pub fn node_signing_digest(round: u64, node_id: &str, commitment: &[u8; 32]) -> [u8; 32] {
    tagged_hash(
        "kirq/node-commitment/v1",
        &[&round.to_be_bytes(), node_id.as_bytes(), commitment],
    )
}
