//! `kirq-hub node`: a decentralized QRNG node. It serves signed commitments and reveals of its own
//! source's bytes to hubs over mutual TLS ([`proto`] holds the messages).
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

pub mod rounds;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use self::rounds::{ClientId, Rounds};
use crate::config::NodeConfig;
use crate::crypto::falcon::{SigningKey, VerifyingKey};
use crate::crypto::stark::{self, MAX_ROUND};
use crate::crypto::{node_signing_digest, tagged_hash};
use crate::health::SourceHealth;
use crate::metrics::{Label1, Label2};
use crate::secret::SecretBytes;
use crate::sources::gate::Gate;
use crate::sources::{Source, SourceError, SourceSettings};
use crate::tls::{self, Identity, PeerCert};
use crate::wire::node::{
    self as proto, CommitRequest, CommitResponse, ErrorBody, MAX_COMMIT_BODY, MAX_LIST,
    MAX_REVEAL_BODY, RevealRequest, RevealResponse,
};

/// Deliberate misbehaviour, for tests only: lets a test run a real node process that breaks the
/// protocol the way a malicious or broken node would. Never use it in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// Never answers a reveal (the request hangs until the hub gives up).
    WithholdReveal,
    /// Reveals bytes other than the ones it committed to.
    WrongReveal,
}

/// The node's counters.
#[derive(Debug)]
pub struct NodeMetrics {
    pub registry: Registry,
    /// `kirq_node_requests_total{endpoint, outcome}`: `ok` or the refusal's reason.
    pub requests: Family<Label2, Counter>,
    pub open_rounds: Gauge,
    pub source_failures: Family<Label1, Counter>,
    pub tls_handshake_failures: Counter,
    pub tls_connections_refused: Family<Label1, Counter>,
}

impl NodeMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            requests: Family::default(),
            open_rounds: Gauge::default(),
            source_failures: Family::default(),
            tls_handshake_failures: Counter::default(),
            tls_connections_refused: Family::default(),
        };
        registry.register(
            "kirq_node_requests",
            "Commit and reveal requests, by endpoint and outcome (ok or the refusal's reason)",
            m.requests.clone(),
        );
        registry.register(
            "kirq_node_open_rounds",
            "Rounds held (committed, or revealed and awaiting expiry)",
            m.open_rounds.clone(),
        );
        registry.register(
            "kirq_node_source_failures",
            "Draws from the node's source that failed, by reason",
            m.source_failures.clone(),
        );
        registry.register(
            "kirq_tls_handshake_failures",
            "TLS handshakes refused or timed out on the node listener",
            m.tls_handshake_failures.clone(),
        );
        crate::metrics::register_refusals(&mut registry, "node", &m.tls_connections_refused);
        Self { registry, ..m }
    }

    pub fn request(&self, endpoint: &str, outcome: &str) {
        self.requests
            .get_or_create(&[
                ("endpoint", endpoint.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl tls::HandshakeObserver for NodeMetrics {
    fn handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    fn connection_refused(&self, reason: &'static str) {
        self.tls_connections_refused
            .get_or_create(&[("reason", reason.to_owned())])
            .inc();
    }
}

/// Everything a request handler needs.
pub struct NodeState {
    id: String,
    key: SigningKey,
    peers: HashMap<String, VerifyingKey>,
    quorum: usize,
    max_bytes: usize,
    source: Box<dyn Source>,
    settings: SourceSettings,
    health: Mutex<SourceHealth>,
    gate: Mutex<Gate>,
    /// Held for one draw: draws take turns at the source, and a repeated commit waiting here
    /// finds the first one's commitment instead of drawing again.
    draw_turn: tokio::sync::Mutex<()>,
    rounds: Mutex<Rounds>,
    /// This run's receipt epoch (random at start) and the reveals numbered per recipient.
    epoch: u64,
    sequences: Mutex<HashMap<String, u64>>,
    metrics: Arc<NodeMetrics>,
    fault: Option<Fault>,
    last_log_ms: AtomicU64,
}

/// Most recipients a node numbers reveals for (one counter each) before it refuses new ones.
pub const MAX_RECIPIENTS: usize = 100_000;

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeState {{ id: {:?}, .. }}", self.id)
    }
}

impl NodeState {
    /// The state for `cfg` with its keys loaded (`peers`: id → public key).
    pub fn new(
        cfg: &NodeConfig,
        key: SigningKey,
        peers: HashMap<String, VerifyingKey>,
        fault: Option<Fault>,
    ) -> anyhow::Result<Self> {
        let (source, settings) = crate::sources::make_source(&cfg.source).map_err(|e| {
            anyhow::anyhow!(
                "source {:?} ({}): {e}",
                cfg.source.id(),
                cfg.source.source.name()
            )
        })?;
        let health = SourceHealth::new(
            cfg.health.alpha_exponent,
            source.min_entropy_per_byte(),
            Duration::from_secs(cfg.health.quarantine_secs),
        );
        Ok(Self {
            id: cfg.id.clone(),
            key,
            peers,
            quorum: cfg.quorum,
            max_bytes: cfg.max_contribution_bytes,
            gate: Mutex::new(Gate::new(settings.policy)),
            source,
            settings,
            health: Mutex::new(health),
            draw_turn: tokio::sync::Mutex::new(()),
            rounds: Mutex::new(Rounds::new(
                Duration::from_secs(cfg.round_ttl_secs),
                cfg.max_open_rounds,
            )),
            epoch: {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
                // Never 0: 0 marks "no receipt" on the wire.
                u64::from_be_bytes(b).max(1)
            },
            sequences: Mutex::new(HashMap::new()),
            metrics: Arc::new(NodeMetrics::new()),
            fault,
            last_log_ms: AtomicU64::new(0),
        })
    }

    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.metrics
    }

    fn purge(&self) {
        let mut r = lock(&self.rounds);
        r.purge(Instant::now());
        self.metrics.open_rounds.set(r.open() as i64);
    }

    /// One log line per second at most for refused requests.
    fn log_refusal(&self, endpoint: &str, r: &Refusal) {
        let now = crate::util::now_ms();
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::info!(endpoint, reason = r.reason, status = %r.status, error = %r.msg,
                "request refused");
        }
    }
}

/// A refused request: status, fixed reason (the metric label) and a precise message.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    msg: String,
}

fn refuse(status: StatusCode, reason: &'static str, msg: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason,
        msg: msg.into(),
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.msg,
                reason: self.reason.to_owned(),
            }),
        )
            .into_response()
    }
}

/// The mutual-TLS API. Each request must carry the [`PeerCert`] extension ([`tls::serve_mtls`]
/// adds it).
pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route(proto::COMMIT_PATH, post(commit))
        .route(proto::REVEAL_PATH, post(reveal))
        .with_state(state)
}

fn client_id(peer: &PeerCert) -> ClientId {
    tagged_hash("kirq/node-client/v1", &[peer.0.as_ref()])
}

/// Most bytes of an oversized body read before answering 413.
const DRAIN_CAP: usize = 1 << 20;

/// Reads a JSON body of at most `limit` bytes.
async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, Refusal> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.trim_start().starts_with("application/json") {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_content_type",
            "Content-Type must be application/json",
        ));
    }
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_CAP as u64) {
        return Err(too_large());
    }
    // A body over the limit is read (up to DRAIN_CAP) and dropped, so that the client, still
    // sending, reads the 413 instead of a reset connection.
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "cannot read the request body",
            )
        })?;
        total = total.saturating_add(chunk.len());
        if total <= limit {
            bytes.extend_from_slice(&chunk);
        } else if total > DRAIN_CAP {
            break;
        }
    }
    if total > limit {
        return Err(too_large());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("bad JSON: {e}"),
        )
    })
}

fn finish(state: &NodeState, endpoint: &'static str, r: Result<Response, Refusal>) -> Response {
    match r {
        Ok(resp) => {
            state.metrics.request(endpoint, "ok");
            resp
        }
        Err(refusal) => {
            state.metrics.request(endpoint, refusal.reason);
            state.log_refusal(endpoint, &refusal);
            refusal.into_response()
        }
    }
}

fn check_round(round: u64) -> Result<(), Refusal> {
    if round > MAX_ROUND {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_round",
            format!("round {round} is above 2^63 - 1"),
        ));
    }
    Ok(())
}

async fn commit(
    State(state): State<Arc<NodeState>>,
    Extension(peer): Extension<PeerCert>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = commit_inner(&state, &peer, &headers, body).await;
    finish(&state, "commit", r)
}

async fn commit_inner(
    state: &NodeState,
    peer: &PeerCert,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let req: CommitRequest = read_json(headers, body, MAX_COMMIT_BODY).await?;
    check_round(req.round)?;
    if !(1..=state.max_bytes).contains(&req.bytes) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_size",
            format!("bytes must be 1..={}", state.max_bytes),
        ));
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
    let bytes = draw(state, req.bytes).await?;
    let commitment = stark::commit(req.round, &state.id, bytes.expose())
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, "bad_round", e.to_string()))?;
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

fn existing(
    state: &NodeState,
    client: &ClientId,
    req: &CommitRequest,
) -> Result<Option<Response>, Refusal> {
    let rounds = lock(&state.rounds);
    match rounds.existing(client, req.round, req.bytes) {
        Ok(Some((c, s))) => Ok(Some(commit_response(state, req.round, c, s))),
        Ok(None) => Ok(None),
        Err(e) => {
            let status = match e {
                rounds::CommitRefusal::TooMany(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::CONFLICT,
            };
            Err(refuse(status, e.reason(), e.to_string()))
        }
    }
}

fn commit_response(state: &NodeState, round: u64, c: &[u8; 32], sig: &[u8]) -> Response {
    Json(CommitResponse {
        node_id: state.id.clone(),
        round,
        commitment: hex::encode(c),
        signature: proto::encode_signature(sig),
    })
    .into_response()
}

/// Draws `n` fresh bytes from the node's source, within its timeout, and health-tests them.
async fn draw(state: &NodeState, n: usize) -> Result<SecretBytes, Refusal> {
    let unavailable = |reason, msg: String| refuse(StatusCode::SERVICE_UNAVAILABLE, reason, msg);
    if lock(&state.health).is_quarantined() {
        return Err(unavailable(
            "source_quarantined",
            "the node's source failed its health tests and is quarantined".into(),
        ));
    }
    if let Err(b) = lock(&state.gate).check(Instant::now()) {
        use crate::sources::gate::Blocked;
        if !matches!(b, Blocked::Pacing(_)) {
            return Err(unavailable(
                "source_unavailable",
                "the node's source is backing off after failures".into(),
            ));
        }
    }
    let timeout = state.settings.timeout;
    let result = match tokio::time::timeout(timeout, state.source.fetch(n)).await {
        Ok(Ok(b)) if b.len() == n => Ok(b),
        Ok(Ok(b)) => Err(SourceError::BadResponse(format!(
            "returned {} of {n} bytes",
            b.len()
        ))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(SourceError::Timeout(timeout)),
    };
    let bytes = match result {
        Ok(b) => b,
        Err(e) => {
            lock(&state.gate).failure(&e, Instant::now());
            lock(&state.health).record_error(e.to_string());
            state
                .metrics
                .source_failures
                .get_or_create(&[("reason", e.reason().to_owned())])
                .inc();
            tracing::warn!(error = %e, "source fetch failed");
            return Err(unavailable(
                "source_unavailable",
                format!("the node's source failed: {}", e.reason()),
            ));
        }
    };
    lock(&state.gate).success(Instant::now());
    if let Err(e) = lock(&state.health).check_block(bytes.expose()) {
        state
            .metrics
            .source_failures
            .get_or_create(&[("reason", "health".to_owned())])
            .inc();
        tracing::warn!(error = %e, "source failed health tests; quarantined");
        return Err(unavailable(
            "source_unhealthy",
            "the node's source failed its health tests".into(),
        ));
    }
    Ok(bytes)
}

async fn reveal(
    State(state): State<Arc<NodeState>>,
    Extension(peer): Extension<PeerCert>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = reveal_inner(&state, &peer, &headers, body).await;
    finish(&state, "reveal", r)
}

/// What a reveal request showed, after checking every field.
struct Shown {
    valid: usize,
    unknown: usize,
    bad_signature: usize,
    own: Option<[u8; 32]>,
}

fn bad_field(msg: String) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "bad_field", msg)
}

/// Checks every field of a reveal request and counts the valid signed commitments.
fn examine(state: &NodeState, req: &RevealRequest) -> Result<Shown, Refusal> {
    check_round(req.round)?;
    if !crate::wire::is_valid_id(&req.recipient) {
        return Err(bad_field(
            "recipient must be 1-64 characters from [A-Za-z0-9._-]".into(),
        ));
    }
    if req.commitments.len() > MAX_LIST || req.hub_commitments.len() > MAX_LIST {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "too_many_entries",
            format!("commitments and hub_commitments hold at most {MAX_LIST} entries each"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
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
    let mut shown = Shown {
        valid: 0,
        unknown: 0,
        bad_signature: 0,
        own: None,
    };
    let mut seen = std::collections::HashSet::new();
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

async fn reveal_inner(
    state: &NodeState,
    peer: &PeerCert,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let req: RevealRequest = read_json(headers, body, MAX_REVEAL_BODY).await?;
    let shown = examine(state, &req)?;
    if state.fault == Some(Fault::WithholdReveal) {
        tracing::warn!(round = req.round, "test fault: withholding the reveal");
        std::future::pending::<()>().await;
    }
    let client = client_id(peer);
    state.purge();
    let mut rounds = lock(&state.rounds);
    let committed = rounds
        .get(&client, req.round)
        .map(|e| e.commitment)
        .map_err(|e| {
            let status = match e {
                rounds::RevealRefusal::Unknown(_) => StatusCode::NOT_FOUND,
                rounds::RevealRefusal::Gone(_) => StatusCode::GONE,
                rounds::RevealRefusal::AlreadyRevealed(_) => StatusCode::CONFLICT,
            };
            refuse(status, e.reason(), e.to_string())
        })?;
    match shown.own {
        None => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "own_commitment_missing",
                format!(
                    "the list does not hold this node's ({}) commitment",
                    state.id
                ),
            ));
        }
        Some(c) if c != committed => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "own_commitment_mismatch",
                "the listed commitment for this node is not the one it made for this round",
            ));
        }
        Some(_) => {}
    }
    if shown.valid < state.quorum {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "quorum_not_shown",
            format!(
                "{} valid signed commitments from distinct nodes are needed, {} shown \
                 ({} from unknown nodes, {} with bad signatures)",
                state.quorum, shown.valid, shown.unknown, shown.bad_signature
            ),
        ));
    }
    let set =
        proto::shown_set(&req).ok_or_else(|| bad_field("a commitment does not parse".into()))?;
    let mut seqs = lock(&state.sequences);
    if seqs.len() >= MAX_RECIPIENTS && !seqs.contains_key(&req.recipient) {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_recipients",
            format!("this node numbers reveals for at most {MAX_RECIPIENTS} recipients"),
        ));
    }
    let mut bytes = rounds
        .take(&client, req.round)
        .map_err(|e| refuse(StatusCode::CONFLICT, e.reason(), e.to_string()))?;
    drop(rounds);
    // Numbered only once the bytes are out: every number a daemon can miss was revealed.
    let sequence = {
        let n = seqs.entry(req.recipient.clone()).or_insert(0);
        *n += 1;
        *n
    };
    drop(seqs);
    let receipt = state.key.sign(&crate::crypto::node_receipt_digest(
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
    let answer = RevealResponse {
        node_id: state.id.clone(),
        round: req.round,
        bytes: proto::encode_bytes(bytes.expose()),
        epoch: state.epoch,
        sequence,
        receipt: proto::encode_signature(&receipt),
    };
    bytes.wipe();
    let body = zeroize::Zeroizing::new(serde_json::to_vec(&answer).unwrap_or_default());
    let mut text = answer.bytes;
    zeroize::Zeroize::zeroize(&mut text);
    Ok(([(header::CONTENT_TYPE, "application/json")], body.to_vec()).into_response())
}

/// A started node. Dropping it does not stop it; call [`RunningNode::stop`].
#[derive(Debug)]
pub struct RunningNode {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub state: Arc<NodeState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Loads the peers' public keys.
pub fn load_peers(cfg: &NodeConfig) -> anyhow::Result<HashMap<String, VerifyingKey>> {
    cfg.peers
        .iter()
        .map(|(id, path)| {
            VerifyingKey::load(path)
                .map(|k| (id.clone(), k))
                .with_context(|| format!("peer {id:?}"))
        })
        .collect()
}

/// Starts the node and returns once its listeners are bound.
pub async fn start(
    cfg: NodeConfig,
    key: SigningKey,
    fault: Option<Fault>,
) -> anyhow::Result<RunningNode> {
    let identity = Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
    let client_ca = tls::load_certs(&cfg.tls.client_ca)?;
    let server_cfg = tls::server_config(&identity, &client_ca, cfg.tls.pq_only)?;
    let peers = load_peers(&cfg)?;
    let state = Arc::new(NodeState::new(&cfg, key, peers, fault)?);
    let metrics = state.metrics.clone();
    let mut tasks = Vec::new();
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on listen = {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tasks.push(tokio::spawn(tls::serve_mtls(
        listener,
        server_cfg,
        router(state.clone()),
        metrics,
    )));
    // Expired rounds are zeroed within a second even when no request comes.
    let s = state.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            s.purge();
        }
    }));
    let metrics_addr = match cfg.metrics_listen {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on metrics_listen = {a}"))?;
            let bound = l.local_addr()?;
            let r = Router::new()
                .route("/metrics", get(node_metrics))
                .route("/health", get(node_health))
                .with_state(state.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(l, r).await {
                    tracing::error!(error = %e, "node metrics listener failed");
                }
            }));
            Some(bound)
        }
        None => None,
    };
    Ok(RunningNode {
        addr,
        metrics_addr,
        state,
        tasks,
    })
}

async fn node_metrics(State(state): State<Arc<NodeState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn node_health(State(state): State<Arc<NodeState>>) -> Json<serde_json::Value> {
    let h = lock(&state.health);
    let mut peers: Vec<&String> = state.peers.keys().collect();
    peers.sort();
    Json(serde_json::json!({
        "node": state.id,
        "key_id": state.key.verifying_key().id().to_string(),
        "quorum": state.quorum,
        "peers": peers,
        "open_rounds": lock(&state.rounds).open(),
        "source": {
            "id": state.source.id(),
            "kind": state.source.kind().as_str(),
            "status": h.status(),
            "quality": h.quality(),
            "reason": h.last_failure(),
        },
    }))
}

/// Loads a node's config and every file it names (keys, certificates, the source's files) without
/// starting it; returns a one-line summary.
pub fn check(config_path: &Path) -> anyhow::Result<String> {
    let cfg = NodeConfig::load(config_path)?;
    let key = SigningKey::load(&cfg.signing_key)?;
    let identity = Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
    tls::server_config(
        &identity,
        &tls::load_certs(&cfg.tls.client_ca)?,
        cfg.tls.pq_only,
    )?;
    let peers = load_peers(&cfg)?;
    crate::sources::make_source(&cfg.source).map_err(|e| {
        anyhow::anyhow!(
            "source {:?} ({}): {e}",
            cfg.source.id(),
            cfg.source.source.name()
        )
    })?;
    Ok(format!(
        "{}: ok (node {}, key id {}, {} peers, quorum {})",
        config_path.display(),
        cfg.id,
        key.verifying_key().id(),
        peers.len(),
        cfg.quorum
    ))
}

/// Runs a node from its config file until SIGINT/SIGTERM.
pub async fn run(config_path: &Path, fault: Option<Fault>) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(config_path)?;
    let key = SigningKey::load(&cfg.signing_key)?;
    if let Some(f) = fault {
        tracing::warn!(fault = ?f, "TEST FAULT ACTIVE: this node misbehaves on purpose");
    }
    let node = start(cfg, key, fault).await?;
    tracing::info!(
        node = %node.state.id,
        listen = %node.addr,
        key_id = %node.state.key.verifying_key().id(),
        "kirq node running; Ctrl-C to stop"
    );
    crate::service::shutdown_signal().await;
    tracing::info!("kirq node stopping");
    node.stop();
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
