//! `POST /api/node/commit`: draw fresh bytes once per (client, round), keep them, answer the
//! signed commitment. A repeat of the same round answers the same commitment and never draws.

use std::time::Instant;

use super::error::NodeError;
use super::lock;
use super::rounds::ClientId;
use super::state::{NodeState, client_id};
use crate::crypto::node_signing_digest;
use crate::crypto::stark::{self, MAX_ROUND};
use crate::tls::PeerCert;
use crate::wire::node::{self as proto, CommitRequest, CommitResponse};

/// A round number the wire format can carry.
pub(super) fn check_round(round: u64) -> Result<(), NodeError> {
    if round > MAX_ROUND {
        return Err(NodeError::RoundTooLarge(round));
    }
    Ok(())
}

/// Answers one commit request.
pub(super) async fn commit(
    state: &NodeState,
    peer: &PeerCert,
    req: CommitRequest,
) -> Result<CommitResponse, NodeError> {
    check_round(req.round)?;
    if !(1..=state.max_bytes).contains(&req.bytes) {
        return Err(NodeError::BadSize {
            max: state.max_bytes,
        });
    }
    let client = client_id(peer);
    state.purge();
    if let Some(resp) = existing(state, &client, &req)? {
        return Ok(resp);
    }
    let _turn = state.draw_turn.lock().await;
    // A repeat that waited for the turn finds the first request's commitment here.
    if let Some(resp) = existing(state, &client, &req)? {
        return Ok(resp);
    }
    let bytes = state.draw(req.bytes).await?;
    let commitment = stark::commit(req.round, &state.id, bytes.expose())
        .map_err(|e| NodeError::BadRound(e.to_string()))?;
    let signature = state
        .key
        .sign(&node_signing_digest(req.round, &state.id, &commitment));
    let resp = commit_response(state, req.round, &commitment, &signature);
    let mut rounds = lock(&state.rounds);
    rounds.insert(
        client,
        req.round,
        commitment,
        signature,
        bytes,
        Instant::now(),
    );
    state.metrics.open_rounds.set(rounds.open() as i64);
    Ok(resp)
}

/// The commitment already made for this client's round, if any.
fn existing(
    state: &NodeState,
    client: &ClientId,
    req: &CommitRequest,
) -> Result<Option<CommitResponse>, NodeError> {
    let rounds = lock(&state.rounds);
    match rounds.existing(client, req.round, req.bytes) {
        Ok(Some((c, s))) => Ok(Some(commit_response(state, req.round, c, s))),
        Ok(None) => Ok(None),
        Err(e) => Err(NodeError::Commit(e)),
    }
}

fn commit_response(state: &NodeState, round: u64, c: &[u8; 32], sig: &[u8]) -> CommitResponse {
    CommitResponse {
        node_id: state.id.clone(),
        round,
        commitment: hex::encode(c),
        signature: proto::encode_signature(sig),
    }
}
