//! `POST /api/node/reveal`: reveal a round's bytes, once, and only when the request shows a
//! quorum of validly signed commitments for the round, this node's own (as it made it) among
//! them. The answer carries the node's receipt over everything the request showed.

use std::collections::HashSet;

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::commit::check_round;
use super::error::NodeError;
use super::rounds::ClientId;
use super::state::{MAX_RECIPIENTS, NodeState, client_id};
use super::{Fault, lock};
use crate::crypto::{node_receipt_digest, node_signing_digest};
use crate::secret::SecretBytes;
use crate::tls::PeerCert;
use crate::wire::node::{self as proto, MAX_LIST, RevealRequest, RevealResponse};

/// Answers one reveal request.
pub(super) async fn reveal(
    state: &NodeState,
    peer: &PeerCert,
    req: RevealRequest,
) -> Result<Response, NodeError> {
    let shown = examine(state, &req)?;
    if state.fault == Some(Fault::WithholdReveal) {
        tracing::warn!(round = req.round, "test fault: withholding the reveal");
        std::future::pending::<()>().await;
    }
    let client = client_id(peer);
    state.purge();
    let Released {
        mut bytes,
        sequence,
        set,
    } = release(state, &client, &req, &shown)?;
    let receipt = state.key.sign(&node_receipt_digest(
        req.round,
        &req.recipient,
        state.epoch,
        sequence,
        &set,
    ));
    tracing::info!(
        round = req.round,
        commitments = shown.valid,
        hub_commitments = req.hub_commitments.len(),
        "revealed"
    );
    if state.fault == Some(Fault::WrongReveal) {
        tracing::warn!(round = req.round, "test fault: revealing other bytes");
        if let Some(b) = bytes.expose_mut().first_mut() {
            *b ^= 0x01;
        }
    }
    Ok(answer(state, req.round, bytes, sequence, &receipt))
}

/// What a reveal request showed, after checking every field.
struct Shown {
    valid: usize,
    unknown: usize,
    bad_signature: usize,
    own: Option<[u8; 32]>,
}

/// A round's bytes, taken out of the node, and the numbers its receipt signs.
struct Released {
    bytes: SecretBytes,
    sequence: u64,
    /// The digest of every commitment the request showed.
    set: [u8; 32],
}

fn bad_field(msg: String) -> NodeError {
    NodeError::BadField(msg)
}

/// Checks every field of a reveal request and counts the valid signed commitments.
fn examine(state: &NodeState, req: &RevealRequest) -> Result<Shown, NodeError> {
    check_round(req.round)?;
    if !crate::wire::is_valid_id(&req.recipient) {
        return Err(bad_field(
            "recipient must be 1-64 characters from [A-Za-z0-9._-]".into(),
        ));
    }
    if req.commitments.len() > MAX_LIST || req.hub_commitments.len() > MAX_LIST {
        return Err(NodeError::TooManyEntries);
    }
    check_hub_commitments(req)?;
    count_signed(state, req)
}

/// Each hub commitment names a distinct valid source id and parses.
fn check_hub_commitments(req: &RevealRequest) -> Result<(), NodeError> {
    let mut seen = HashSet::new();
    for (i, h) in req.hub_commitments.iter().enumerate() {
        if !crate::wire::is_valid_id(&h.source_id) {
            return Err(bad_field(format!(
                "hub_commitments[{i}].source_id must be 1-64 characters from [A-Za-z0-9._-]"
            )));
        }
        if !seen.insert(h.source_id.as_str()) {
            return Err(bad_field(format!(
                "hub_commitments[{i}].source_id is listed twice"
            )));
        }
        if proto::parse_commitment(&h.commitment).is_none() {
            return Err(bad_field(format!(
                "hub_commitments[{i}].commitment is not 64 hex digits of a commitment"
            )));
        }
    }
    Ok(())
}

/// Checks each node commitment's fields and counts those validly signed by a known node
/// (this node included).
fn count_signed(state: &NodeState, req: &RevealRequest) -> Result<Shown, NodeError> {
    let mut shown = Shown {
        valid: 0,
        unknown: 0,
        bad_signature: 0,
        own: None,
    };
    let mut seen = HashSet::new();
    for (i, c) in req.commitments.iter().enumerate() {
        if !crate::wire::is_valid_id(&c.node_id) {
            return Err(bad_field(format!(
                "commitments[{i}].node_id must be 1-64 characters from [A-Za-z0-9._-]"
            )));
        }
        if !seen.insert(c.node_id.as_str()) {
            return Err(bad_field(format!(
                "commitments[{i}].node_id is listed twice"
            )));
        }
        let commitment = proto::parse_commitment(&c.commitment).ok_or_else(|| {
            bad_field(format!(
                "commitments[{i}].commitment is not 64 hex digits of a commitment"
            ))
        })?;
        let signature = proto::parse_signature(&c.signature).ok_or_else(|| {
            bad_field(format!(
                "commitments[{i}].signature is not a base64 Falcon-512 signature"
            ))
        })?;
        let key = if c.node_id == state.id {
            shown.own = Some(commitment);
            Some(state.key.verifying_key())
        } else {
            state.peers.get(&c.node_id)
        };
        match key {
            None => shown.unknown += 1,
            Some(k) => {
                let digest = node_signing_digest(req.round, &c.node_id, &commitment);
                if k.verify(&digest, &signature) {
                    shown.valid += 1;
                } else {
                    shown.bad_signature += 1;
                }
            }
        }
    }
    Ok(shown)
}

/// The request must show this node's own commitment as it made it, and a quorum.
fn check_shown(state: &NodeState, shown: &Shown, committed: [u8; 32]) -> Result<(), NodeError> {
    match shown.own {
        None => {
            return Err(NodeError::OwnCommitmentMissing {
                node: state.id.clone(),
            });
        }
        Some(c) if c != committed => return Err(NodeError::OwnCommitmentMismatch),
        Some(_) => {}
    }
    if shown.valid < state.quorum {
        return Err(NodeError::QuorumNotShown {
            need: state.quorum,
            valid: shown.valid,
            unknown: shown.unknown,
            bad_signature: shown.bad_signature,
        });
    }
    Ok(())
}

/// Under the rounds lock: checks what the request showed against what the node committed,
/// takes the bytes out (once) and numbers the reveal for its recipient.
fn release(
    state: &NodeState,
    client: &ClientId,
    req: &RevealRequest,
    shown: &Shown,
) -> Result<Released, NodeError> {
    let mut rounds = lock(&state.rounds);
    let committed = rounds
        .get(client, req.round)
        .map(|e| e.commitment)
        .map_err(NodeError::Reveal)?;
    check_shown(state, shown, committed)?;
    let set =
        proto::shown_set(req).ok_or_else(|| bad_field("a commitment does not parse".into()))?;
    let mut seqs = lock(&state.sequences);
    if seqs.len() >= MAX_RECIPIENTS && !seqs.contains_key(&req.recipient) {
        return Err(NodeError::TooManyRecipients);
    }
    let bytes = rounds.take(client, req.round).map_err(NodeError::Taken)?;
    drop(rounds);
    // Numbered only once the bytes are out: every number a daemon can miss was revealed.
    let n = seqs.entry(req.recipient.clone()).or_insert(0);
    *n += 1;
    Ok(Released {
        bytes,
        sequence: *n,
        set,
    })
}

/// The JSON answer; the bytes are wiped from every buffer but the body once it is built.
fn answer(
    state: &NodeState,
    round: u64,
    mut bytes: SecretBytes,
    sequence: u64,
    receipt: &[u8],
) -> Response {
    let answer = RevealResponse {
        node_id: state.id.clone(),
        round,
        bytes: proto::encode_bytes(bytes.expose()),
        epoch: state.epoch,
        sequence,
        receipt: proto::encode_signature(receipt),
    };
    bytes.wipe();
    let body = zeroize::Zeroizing::new(serde_json::to_vec(&answer).unwrap_or_default());
    let mut text = answer.bytes;
    zeroize::Zeroize::zeroize(&mut text);
    ([(header::CONTENT_TYPE, "application/json")], body.to_vec()).into_response()
}
