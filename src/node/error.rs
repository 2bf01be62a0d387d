//! Every refusal the node answers: one [`NodeError`], its status, its fixed reason (the metric
//! label and the `reason` field of [`ErrorBody`]) and a precise message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::rounds::{CommitRefusal, RevealRefusal};
use super::state::MAX_RECIPIENTS;
use crate::wire::node::{ErrorBody, MAX_LIST};

/// A refused request.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("Content-Type must be application/json")]
    BadContentType,
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("cannot read the request body")]
    BadBody,
    #[error("bad JSON: {0}")]
    BadJson(serde_json::Error),
    #[error("round {0} is above 2^63 - 1")]
    RoundTooLarge(u64),
    /// The round does not make a commitment (the commitment scheme refused it).
    #[error("{0}")]
    BadRound(String),
    #[error("bytes must be 1..={max}")]
    BadSize { max: usize },
    /// A field of a reveal request, named in the message.
    #[error("{0}")]
    BadField(String),
    #[error("commitments and hub_commitments hold at most {MAX_LIST} entries each")]
    TooManyEntries,
    #[error("the list does not hold this node's ({node}) commitment")]
    OwnCommitmentMissing { node: String },
    #[error("the listed commitment for this node is not the one it made for this round")]
    OwnCommitmentMismatch,
    #[error(
        "{need} valid signed commitments from distinct nodes are needed, {valid} shown \
         ({unknown} from unknown nodes, {bad_signature} with bad signatures)"
    )]
    QuorumNotShown {
        need: usize,
        valid: usize,
        unknown: usize,
        bad_signature: usize,
    },
    #[error("this node numbers reveals for at most {MAX_RECIPIENTS} recipients")]
    TooManyRecipients,
    #[error("the node's source failed its health tests and is quarantined")]
    SourceQuarantined,
    #[error("the node's source is backing off after failures")]
    SourceBackingOff,
    /// A draw failed; the source error's fixed reason.
    #[error("the node's source failed: {0}")]
    SourceFailed(&'static str),
    #[error("the node's source failed its health tests")]
    SourceUnhealthy,
    #[error("{0}")]
    Commit(CommitRefusal),
    #[error("{0}")]
    Reveal(RevealRefusal),
    /// The bytes were gone when the reveal came to take them.
    #[error("{0}")]
    Taken(RevealRefusal),
}

impl NodeError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadBody
            | Self::BadJson(_)
            | Self::RoundTooLarge(_)
            | Self::BadRound(_)
            | Self::BadSize { .. }
            | Self::BadField(_)
            | Self::TooManyEntries => StatusCode::BAD_REQUEST,
            Self::OwnCommitmentMissing { .. }
            | Self::OwnCommitmentMismatch
            | Self::QuorumNotShown { .. } => StatusCode::FORBIDDEN,
            Self::TooManyRecipients
            | Self::SourceQuarantined
            | Self::SourceBackingOff
            | Self::SourceFailed(_)
            | Self::SourceUnhealthy
            | Self::Commit(CommitRefusal::TooMany(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Commit(_) | Self::Taken(_) => StatusCode::CONFLICT,
            Self::Reveal(RevealRefusal::Unknown(_)) => StatusCode::NOT_FOUND,
            Self::Reveal(RevealRefusal::Gone(_)) => StatusCode::GONE,
            Self::Reveal(RevealRefusal::AlreadyRevealed(_)) => StatusCode::CONFLICT,
        }
    }

    /// The fixed reason: the metric label and the body's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadContentType => "bad_content_type",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BadBody => "bad_body",
            Self::BadJson(_) => "bad_json",
            Self::RoundTooLarge(_) | Self::BadRound(_) => "bad_round",
            Self::BadSize { .. } => "bad_size",
            Self::BadField(_) => "bad_field",
            Self::TooManyEntries => "too_many_entries",
            Self::OwnCommitmentMissing { .. } => "own_commitment_missing",
            Self::OwnCommitmentMismatch => "own_commitment_mismatch",
            Self::QuorumNotShown { .. } => "quorum_not_shown",
            Self::TooManyRecipients => "too_many_recipients",
            Self::SourceQuarantined => "source_quarantined",
            Self::SourceBackingOff | Self::SourceFailed(_) => "source_unavailable",
            Self::SourceUnhealthy => "source_unhealthy",
            Self::Commit(e) => e.reason(),
            Self::Reveal(e) | Self::Taken(e) => e.reason(),
        }
    }
}

impl IntoResponse for NodeError {
    fn into_response(self) -> Response {
        (
            self.status(),
            Json(ErrorBody {
                error: self.to_string(),
                reason: self.reason().to_owned(),
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_reasons_are_the_wire_ones() {
        let cases = [
            (NodeError::BadContentType, 415, "bad_content_type"),
            (
                NodeError::BodyTooLarge { limit: 1024 },
                413,
                "body_too_large",
            ),
            (NodeError::RoundTooLarge(1 << 63), 400, "bad_round"),
            (
                NodeError::OwnCommitmentMismatch,
                403,
                "own_commitment_mismatch",
            ),
            (
                NodeError::SourceFailed("timeout"),
                503,
                "source_unavailable",
            ),
            (
                NodeError::Commit(CommitRefusal::TooMany(3)),
                503,
                "too_many_rounds",
            ),
            (
                NodeError::Commit(CommitRefusal::AlreadyRevealed(1)),
                409,
                "already_revealed",
            ),
            (
                NodeError::Reveal(RevealRefusal::Unknown(1)),
                404,
                "unknown_round",
            ),
            (
                NodeError::Reveal(RevealRefusal::Gone(1)),
                410,
                "expired_round",
            ),
            (
                NodeError::Taken(RevealRefusal::Gone(1)),
                409,
                "expired_round",
            ),
        ];
        for (e, status, reason) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.reason(), reason, "{e}");
        }
        assert_eq!(
            NodeError::BodyTooLarge { limit: 1024 }.to_string(),
            "request body larger than 1024 bytes"
        );
        assert_eq!(
            NodeError::QuorumNotShown {
                need: 2,
                valid: 1,
                unknown: 1,
                bad_signature: 0
            }
            .to_string(),
            "2 valid signed commitments from distinct nodes are needed, 1 shown \
             (1 from unknown nodes, 0 with bad signatures)"
        );
    }
}
