//! The node protocol's JSON messages, shared by the node (server, [`crate::node`]) and the hub
//! (client, [`crate::sources::decentralized`]), and the parsers both sides use for their fields.
//! They live with the wire types so that neither side imports the other.
//!
//! Commitments travel as 64 lowercase hex digits, signatures and revealed bytes as standard
//! base64. Every list is bounded ([`MAX_LIST`]) and every body too, before anything is parsed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::crypto::falcon::MAX_SIGNATURE_BYTES;
use crate::crypto::stark::{self, Commitment};

pub const COMMIT_PATH: &str = "/api/node/commit";
pub const REVEAL_PATH: &str = "/api/node/reveal";
/// Largest commit request body.
pub const MAX_COMMIT_BODY: usize = 1024;
/// Most entries in a reveal request's `commitments` and in its `hub_commitments`: the most nodes
/// a decentralized setup may list (`crate::config::MAX_NODES` is this number).
pub const MAX_LIST: usize = 64;
/// Largest reveal request body: two full lists with the largest signatures fit well within it.
pub const MAX_REVEAL_BODY: usize = 256 * 1024;
/// Largest commit answer a hub reads.
pub const MAX_COMMIT_ANSWER: usize = 4096;

/// `POST /api/node/commit`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    pub round: u64,
    pub bytes: usize,
}

/// The answer to a commit: the node's Falcon-512 signature over
/// [`crate::crypto::node_signing_digest`]`(round, node_id, commitment)`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitResponse {
    pub node_id: String,
    pub round: u64,
    pub commitment: String,
    pub signature: String,
}

/// One node's signed commitment, as a reveal request shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedCommitment {
    pub node_id: String,
    pub commitment: String,
    pub signature: String,
}

/// The hub's own commitment to one of its sources' contributions to the round.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HubCommitment {
    pub source_id: String,
    pub commitment: String,
}

/// `POST /api/node/reveal`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealRequest {
    pub round: u64,
    /// The daemon the round's packet is for: named in the node's receipt.
    pub recipient: String,
    pub commitments: Vec<SignedCommitment>,
    pub hub_commitments: Vec<HubCommitment>,
}

/// The answer to a reveal: the committed bytes (base64), and the node's receipt: its signature
/// over [`crate::crypto::node_receipt_digest`]`(round, recipient, epoch, sequence, set)`, where
/// `set` is the digest of every commitment the request showed. `Debug` hides the bytes.
#[derive(Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealResponse {
    pub node_id: String,
    pub round: u64,
    pub bytes: String,
    pub epoch: u64,
    pub sequence: u64,
    pub receipt: String,
}

impl std::fmt::Debug for RevealResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RevealResponse {{ node_id: {:?}, round: {}, sequence: {}, .. }}",
            self.node_id, self.round, self.sequence
        )
    }
}

/// The commitment set a reveal request shows, as [`crate::crypto::commitment_set_digest`]
/// takes it; `None` when a commitment does not parse.
pub fn shown_set(req: &RevealRequest) -> Option<[u8; 32]> {
    use crate::crypto::Committer;
    let mut entries = Vec::with_capacity(req.hub_commitments.len() + req.commitments.len());
    for h in &req.hub_commitments {
        entries.push((
            Committer::Hub,
            h.source_id.as_str(),
            parse_commitment(&h.commitment)?,
        ));
    }
    for c in &req.commitments {
        entries.push((
            Committer::Node,
            c.node_id.as_str(),
            parse_commitment(&c.commitment)?,
        ));
    }
    Some(crate::crypto::commitment_set_digest(&entries))
}

/// Every refusal: a message for people and a fixed reason (also the metric label).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub reason: String,
}

/// A commitment from hex; `None` unless 64 hex digits of a canonical digest.
pub fn parse_commitment(s: &str) -> Option<Commitment> {
    let mut c = [0u8; 32];
    hex::decode_to_slice(s, &mut c).ok()?;
    stark::digest_elements(&c).map(|_| c)
}

/// A signature from base64; `None` unless 1..=[`MAX_SIGNATURE_BYTES`] bytes.
pub fn parse_signature(s: &str) -> Option<Vec<u8>> {
    if s.len() > MAX_SIGNATURE_BYTES.div_ceil(3) * 4 {
        return None;
    }
    let sig = B64.decode(s).ok()?;
    (1..=MAX_SIGNATURE_BYTES)
        .contains(&sig.len())
        .then_some(sig)
}

pub fn encode_signature(sig: &[u8]) -> String {
    B64.encode(sig)
}

pub fn encode_bytes(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn decode_bytes(s: &str) -> Option<Vec<u8>> {
    B64.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_parsers_bound_and_check() {
        let c = stark::commit(1, "n", b"x").unwrap();
        assert_eq!(parse_commitment(&hex::encode(c)), Some(c));
        assert_eq!(parse_commitment(&hex::encode([0xff; 32])), None);
        assert_eq!(parse_commitment("abc"), None);
        assert_eq!(parse_signature(""), None);
        assert_eq!(parse_signature("!!"), None);
        assert_eq!(parse_signature(&B64.encode([1u8; 753])), None);
        assert_eq!(parse_signature(&B64.encode([1u8; 752])).unwrap().len(), 752);
        let r = RevealResponse {
            node_id: "n".into(),
            round: 1,
            bytes: "c2VjcmV0".into(),
            epoch: 1,
            sequence: 1,
            receipt: String::new(),
        };
        assert!(!format!("{r:?}").contains("c2VjcmV0"));
    }
}
