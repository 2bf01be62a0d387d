//! `kirq-hub node`: a decentralized QRNG node. It serves signed commitments and reveals of its own
//! source's bytes to hubs over mutual TLS ([`crate::wire::node`] holds the messages).
//!
//! - `POST /api/node/commit {round, bytes}`: draws `bytes` fresh bytes from the node's source
//!   (health-tested), keeps them for (client, round), and answers the algebraic commitment
//!   [`crate::crypto::stark::commit`]`(round, node_id, bytes)` with a Falcon-512 signature over
//!   [`crate::crypto::node_signing_digest`]. Asked again for the same round, it answers the same
//!   commitment and never draws twice.
//! - `POST /api/node/reveal {round, commitments, hub_commitments}`: reveals the bytes, once, and
//!   only when the list shows at least `quorum` distinct nodes' commitments for the round with
//!   valid signatures under the configured keys, this node's own (matching what it committed)
//!   among them. So every commitment a hub can mix is fixed before any byte is revealed.
//!
//! The one design choice a reader must know: the client is the TLS client certificate (a hash of
//! it), so each hub has its own rounds; [`rounds`] keeps them and refuses a round number a hub has
//! used before. Bytes are zeroed on reveal or when the round's TTL ends.
//!
//! Files by concern: [`api`] (routers, body reading, health, OpenAPI), `commit` and `reveal` (the
//! two handlers' logic), `error` ([`NodeError`]), `state` ([`NodeState`] and the source draw),
//! `metrics` ([`NodeMetrics`]), `service` (start, run, check).

pub mod api;
mod commit;
mod error;
mod metrics;
mod reveal;
pub mod rounds;
mod service;
mod state;

use crate::util::lock;

pub use api::{NodeHealth, NodeSourceHealth, document, local_router, router};
pub use error::NodeError;
pub use metrics::NodeMetrics;
pub use service::{RunningNode, check, load_peers, run, start};
pub use state::{MAX_RECIPIENTS, NodeState};

/// Deliberate misbehaviour, for tests only: lets a test run a real node process that breaks the
/// protocol the way a malicious or broken node would. Never use it in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// Never answers a reveal (the request hangs until the hub gives up).
    WithholdReveal,
    /// Reveals bytes other than the ones it committed to.
    WrongReveal,
}
