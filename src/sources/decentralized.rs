//! Decentralized QRNG nodes as a hub source: one commit-reveal round over n nodes with a k-of-n
//! quorum ([`Decentralized::round`]); the node side is [`crate::node`].
//!
//! **Commit.** All n nodes (less the benched ones) are asked concurrently for a signed commitment
//! to `bytes_per_node` fresh bytes. A commitment counts only when its Falcon-512 signature over
//! [`crate::crypto::node_signing_digest`] verifies under the key configured for that node id.
//! Fewer than k within `commit_timeout_ms`: [`QuorumError::QuorumNotMet`], and nothing is revealed.
//!
//! **Reveal.** Each committed node is shown the whole signed set (and the hub's own commitments to
//! its sources for the round) and asked for its bytes; a node reveals only when it sees k valid
//! commitments. A reveal whose [`crate::crypto::stark::commit`] differs from the node's commitment
//! is excluded (`mismatch`), no reveal within `reveal_timeout_ms` is `withheld`. Fewer than k
//! valid reveals: `QuorumNotMet`, and no byte is returned.
//!
//! **Repeat offenders** ([`Offender`]): a node excluded from `bench_after` rounds in a row is
//! benched, not asked, for `bench_secs`; each further bench before a clean round doubles the
//! cooldown, up to `bench_max_secs`. A benched node that comes back is on probation: one more
//! exclusion benches it again. When fewer than k nodes are unbenched, the benched ones are asked
//! anyway (a bench must not by itself stop every round).
//!
//! **The weakness that remains.** Commitments fix every node's bytes before any reveal, so no node
//! can choose its bytes after seeing others'. But a node (or a coalition) that learns the other
//! reveals before its own can still *withhold* to drop its contribution, or abort a round when
//! fewer than k others revealed. The hub's answers: it mixes in its own sources' bytes, committed
//! before any reveal (`hub_commitments`) and never shown to nodes, so nodes cannot predict the
//! output and gain nothing by choosing between "with me" and "without me"; a withholder is
//! excluded and counted, and benched when it repeats; a round never reuses its number
//! ([`Decentralized::next_round`]), so an aborted round cannot be re-run for different bytes.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::{DecentralizedConfig, HubConfig, OffenderConfig};
use crate::crypto::falcon::{KeyError, VerifyingKey};
use crate::crypto::node_signing_digest;
use crate::crypto::stark::{self, Commitment, MAX_ROUND};
use crate::metrics::{Label1, Label2};
use crate::secret::SecretBytes;
use crate::tls::{self, Identity, TlsError};
use crate::util::lock;
use crate::wire::node::{
    self as proto, CommitRequest, CommitResponse, HubCommitment, MAX_COMMIT_ANSWER, MAX_LIST,
    RevealRequest, RevealResponse, SignedCommitment,
};

/// One node's valid contribution to a round.
#[derive(Debug)]
pub struct NodeContribution {
    pub node_id: String,
    pub commitment: Commitment,
    pub signature: Vec<u8>,
    pub bytes: SecretBytes,
    /// The node's receipt for this round, recipient and shown commitment set.
    pub receipt: crate::wire::NodeReceipt,
}

/// A node whose signed commitment was shown at reveal but whose bytes are not in the round
/// (withheld, mismatched): the packet still lists it, so daemons can recompute the set the
/// contributing nodes signed in their receipts.
#[derive(Debug)]
pub struct ShownOnly {
    pub node_id: String,
    pub commitment: Commitment,
    pub signature: Vec<u8>,
}

/// A completed round: at least k contributions, in configured node order.
#[derive(Debug)]
pub struct RoundOutcome {
    pub round: u64,
    pub contributions: Vec<NodeContribution>,
    pub shown_only: Vec<ShownOnly>,
    pub excluded: Vec<(String, Exclusion)>,
}

/// Why a node's contribution is not in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// No connection (refused, TLS failure, reset).
    Unreachable,
    /// No signed commitment within `commit_timeout_ms`.
    CommitTimeout,
    /// The commitment's signature does not verify under the node's configured key.
    BadSignature,
    /// No reveal within `reveal_timeout_ms`.
    Withheld,
    /// The revealed bytes do not match the node's commitment.
    Mismatch,
    /// An error status or a malformed answer.
    BadResponse,
    /// Not asked: benched as a repeat offender.
    Benched,
}

impl Exclusion {
    pub const ALL: [Self; 7] = [
        Self::Unreachable,
        Self::CommitTimeout,
        Self::BadSignature,
        Self::Withheld,
        Self::Mismatch,
        Self::BadResponse,
        Self::Benched,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::CommitTimeout => "commit_timeout",
            Self::BadSignature => "bad_signature",
            Self::Withheld => "withheld",
            Self::Mismatch => "mismatch",
            Self::BadResponse => "bad_response",
            Self::Benched => "benched",
        }
    }
}

impl std::fmt::Display for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The phase a round failed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Commit,
    Reveal,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Commit => "commit",
            Self::Reveal => "reveal",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    #[error("quorum not met in the {phase} phase: {have} valid nodes, {need} required")]
    QuorumNotMet {
        phase: Phase,
        have: usize,
        need: usize,
        excluded: Vec<(String, Exclusion)>,
    },
    #[error("round {0} is above 2^63 - 1")]
    RoundOutOfRange(u64),
    #[error("round {0} was used before; every round needs a fresh number (next_round)")]
    StaleRound(u64),
    #[error("hub commitments: {0}")]
    BadHubCommitments(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DecentralizedError {
    #[error("node {node:?}: public key")]
    Key {
        node: String,
        #[source]
        source: KeyError,
    },
    #[error("node TLS")]
    Tls(#[from] TlsError),
}

/// One node's offender record. Time is passed in, so the policy is tested without sleeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offender {
    /// Rounds in a row this node was asked and excluded.
    pub strikes: u32,
    /// Benches since its last clean round (the cooldown doubles with each).
    pub benches: u32,
    pub benched_until: Option<Instant>,
}

impl Offender {
    pub fn is_benched(&self, now: Instant) -> bool {
        self.benched_until.is_some_and(|t| now < t)
    }

    /// Records a round the node was asked in; returns the cooldown when this benches it.
    pub fn record(&mut self, excluded: bool, now: Instant, p: &OffenderConfig) -> Option<Duration> {
        if !excluded {
            *self = Self::default();
            return None;
        }
        self.strikes = self.strikes.saturating_add(1);
        if self.strikes < p.bench_after {
            return None;
        }
        self.benches = self.benches.saturating_add(1);
        let shift = (self.benches - 1).min(30);
        let secs = p
            .bench_secs
            .saturating_mul(1u64 << shift)
            .min(p.bench_max_secs);
        let d = Duration::from_secs(secs);
        self.benched_until = Some(now + d);
        Some(d)
    }
}

struct Node {
    id: String,
    commit_url: String,
    reveal_url: String,
    key: VerifyingKey,
    offender: Mutex<Offender>,
}

/// One node's state for /health.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NodeReport {
    pub id: String,
    pub key_id: String,
    pub strikes: u32,
    pub benched: bool,
    pub benched_for_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct DecMetrics {
    exclusions: Family<Label2, Counter>,
    rounds: Family<Label1, Counter>,
    benched: Family<Label1, Gauge>,
    contributions: Family<Label1, Counter>,
}

/// Rounds the hub has started: a number is used at most once.
#[derive(Debug, Clone, Default)]
struct UsedRounds {
    floor: Option<u64>,
    recent: BTreeSet<u64>,
}

const USED_ROUNDS_KEPT: usize = 4096;

impl UsedRounds {
    fn claim(&mut self, round: u64) -> bool {
        if self.floor.is_some_and(|f| round <= f) || !self.recent.insert(round) {
            return false;
        }
        if self.recent.len() > USED_ROUNDS_KEPT
            && let Some(oldest) = self.recent.pop_first()
        {
            self.floor = Some(oldest);
        }
        true
    }
}

/// The hub's client for a set of decentralized QRNG nodes.
pub struct Decentralized {
    nodes: Vec<Node>,
    quorum: usize,
    bytes_per_node: usize,
    commit_timeout: Duration,
    reveal_timeout: Duration,
    offenders: OffenderConfig,
    client: reqwest::Client,
    last_issued: AtomicU64,
    used: Mutex<UsedRounds>,
    m: DecMetrics,
}

impl std::fmt::Debug for Decentralized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        write!(
            f,
            "Decentralized {{ nodes: {ids:?}, quorum: {} }}",
            self.quorum
        )
    }
}

/// What one node did in one phase.
enum Answer<T> {
    Ok(T),
    Excluded(Exclusion),
}

impl Decentralized {
    /// The client for `cfg`, presenting `identity` (the hub's TLS certificate) to the nodes.
    pub fn new(
        cfg: &DecentralizedConfig,
        identity: &Identity,
        pq_only: bool,
    ) -> Result<Self, DecentralizedError> {
        let node_ca = tls::load_certs(&cfg.node_ca)?;
        let timeout = Duration::from_millis(cfg.commit_timeout_ms.max(cfg.reveal_timeout_ms));
        let client = tls::https_client(tls::client_config(identity, &node_ca, pq_only)?, timeout);
        let mut nodes = Vec::with_capacity(cfg.nodes.len());
        for n in &cfg.nodes {
            let key =
                VerifyingKey::load(&n.public_key).map_err(|source| DecentralizedError::Key {
                    node: n.id.clone(),
                    source,
                })?;
            let base = n.url.trim_end_matches('/');
            nodes.push(Node {
                id: n.id.clone(),
                commit_url: format!("{base}{}", proto::COMMIT_PATH),
                reveal_url: format!("{base}{}", proto::REVEAL_PATH),
                key,
                offender: Mutex::new(Offender::default()),
            });
        }
        let m = DecMetrics {
            exclusions: Family::default(),
            rounds: Family::default(),
            benched: Family::default(),
            contributions: Family::default(),
        };
        for n in &nodes {
            m.benched.get_or_create(&l1("node", &n.id)).set(0);
        }
        Ok(Self {
            nodes,
            quorum: cfg.quorum,
            bytes_per_node: cfg.bytes_per_node,
            commit_timeout: Duration::from_millis(cfg.commit_timeout_ms),
            reveal_timeout: Duration::from_millis(cfg.reveal_timeout_ms),
            offenders: cfg.offenders.clone(),
            client,
            last_issued: AtomicU64::new(0),
            used: Mutex::new(UsedRounds::default()),
            m,
        })
    }

    /// The client for a hub config's `[decentralized]` section, if it has one.
    pub fn from_hub_config(cfg: &HubConfig) -> anyhow::Result<Option<Self>> {
        let Some(d) = &cfg.decentralized else {
            return Ok(None);
        };
        let identity = Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
        Ok(Some(Self::new(d, &identity, cfg.tls.pq_only)?))
    }

    pub fn quorum(&self) -> usize {
        self.quorum
    }

    pub fn bytes_per_node(&self) -> usize {
        self.bytes_per_node
    }

    /// Adds the quorum's metrics to the hub's registry.
    pub fn register_metrics(&self, r: &mut Registry) {
        r.register(
            "kirq_hub_node_exclusions",
            "Nodes left out of a round, by node and reason",
            self.m.exclusions.clone(),
        );
        r.register(
            "kirq_hub_node_rounds",
            "Decentralized rounds, by outcome",
            self.m.rounds.clone(),
        );
        r.register(
            "kirq_hub_node_benched",
            "1 while a node is benched as a repeat offender",
            self.m.benched.clone(),
        );
        r.register(
            "kirq_hub_node_contributions",
            "Valid contributions each node made to completed rounds",
            self.m.contributions.clone(),
        );
    }

    /// Takes over what `old` (the client of the config before a reload) learned: its metric
    /// handles (they are the ones registered), the rounds it issued and used, and the offender
    /// record of every node that is still configured.
    pub fn carry_over(&mut self, old: &Self) {
        self.m = old.m.clone();
        for n in &self.nodes {
            let _ = self.m.benched.get_or_create(&l1("node", &n.id));
        }
        self.last_issued
            .fetch_max(old.last_issued.load(Ordering::SeqCst), Ordering::SeqCst);
        *lock(&self.used) = lock(&old.used).clone();
        for n in &self.nodes {
            if let Some(o) = old.nodes.iter().find(|o| o.id == n.id) {
                *lock(&n.offender) = lock(&o.offender).clone();
            }
        }
    }

    /// A fresh round number: above every one issued before, and at least the wall clock in
    /// microseconds, so a restarted hub does not reuse the numbers of its previous run.
    pub fn next_round(&self) -> u64 {
        stark::fresh_round(&self.last_issued)
    }

    /// Each node's offender state.
    pub fn report(&self) -> Vec<NodeReport> {
        let now = Instant::now();
        self.nodes
            .iter()
            .map(|n| {
                let o = lock(&n.offender);
                let left = o
                    .benched_until
                    .filter(|&t| now < t)
                    .map(|t| u64::try_from((t - now).as_millis()).unwrap_or(u64::MAX));
                NodeReport {
                    id: n.id.clone(),
                    key_id: n.key.id().to_string(),
                    strikes: o.strikes,
                    benched: left.is_some(),
                    benched_for_ms: left,
                }
            })
            .collect()
    }

    /// Runs one commit-reveal round. `round` must never have been used (see
    /// [`Self::next_round`]); `hub_commitments` are the hub's own commitments to its sources'
    /// contributions to this round, `(source_id, commitment)`, shown to the nodes at reveal.
    pub async fn round(
        &self,
        round: u64,
        recipient: &str,
        hub_commitments: &[(String, Commitment)],
    ) -> Result<RoundOutcome, QuorumError> {
        let r = self.round_inner(round, recipient, hub_commitments).await;
        let outcome = match &r {
            Ok(_) => "complete",
            Err(QuorumError::QuorumNotMet {
                phase: Phase::Commit,
                ..
            }) => "commit_quorum_not_met",
            Err(QuorumError::QuorumNotMet { .. }) => "reveal_quorum_not_met",
            Err(_) => "refused",
        };
        self.m.rounds.get_or_create(&l1("outcome", outcome)).inc();
        r
    }

    async fn round_inner(
        &self,
        round: u64,
        recipient: &str,
        hub_commitments: &[(String, Commitment)],
    ) -> Result<RoundOutcome, QuorumError> {
        if round > MAX_ROUND {
            return Err(QuorumError::RoundOutOfRange(round));
        }
        let hub_commitments = check_hub_commitments(hub_commitments)?;
        if !lock(&self.used).claim(round) {
            return Err(QuorumError::StaleRound(round));
        }
        let (asked, mut excluded) = self.who_to_ask(round);
        let committed = self.commit_phase(round, &asked, &mut excluded).await;
        if committed.len() < self.quorum {
            let have = committed.len();
            return Err(self.fail(round, Phase::Commit, have, &asked, excluded));
        }
        let (contributions, shown_only) = self
            .reveal_phase(round, recipient, committed, hub_commitments, &mut excluded)
            .await;
        if contributions.len() < self.quorum {
            let have = contributions.len();
            // Dropping the contributions zeroes their bytes: none of them is used.
            drop(contributions);
            return Err(self.fail(round, Phase::Reveal, have, &asked, excluded));
        }
        self.settle(round, &asked, &excluded);
        for c in &contributions {
            self.m
                .contributions
                .get_or_create(&l1("node", &c.node_id))
                .inc();
        }
        Ok(RoundOutcome {
            round,
            contributions,
            shown_only,
            excluded: self.named(excluded),
        })
    }

    /// Who is asked (by index): the unbenched nodes, or everyone when they are fewer than the
    /// quorum; the benched ones left out are excluded as such.
    fn who_to_ask(&self, round: u64) -> (Vec<usize>, Vec<(usize, Exclusion)>) {
        let now = Instant::now();
        let benched: Vec<bool> = self
            .nodes
            .iter()
            .map(|n| lock(&n.offender).is_benched(now))
            .collect();
        let available = benched.iter().filter(|b| !**b).count();
        let parole = available < self.quorum;
        if parole && available < self.nodes.len() {
            tracing::warn!(
                round,
                available,
                need = self.quorum,
                "fewer unbenched nodes than the quorum: asking benched nodes too"
            );
        }
        let mut asked = Vec::new();
        let mut excluded = Vec::new();
        for (i, &b) in benched.iter().enumerate() {
            if b && !parole {
                excluded.push((i, Exclusion::Benched));
            } else {
                asked.push(i);
            }
        }
        (asked, excluded)
    }

    /// Asks every node in `asked` to commit, concurrently; returns the valid signed
    /// commitments (node index, commitment, signature) and adds the rest to `excluded`.
    async fn commit_phase(
        &self,
        round: u64,
        asked: &[usize],
        excluded: &mut Vec<(usize, Exclusion)>,
    ) -> Vec<(usize, Commitment, Vec<u8>)> {
        let req = CommitRequest {
            round,
            bytes: self.bytes_per_node,
        };
        let answers = futures::future::join_all(asked.iter().map(|&i| {
            let req = &req;
            async move { (i, self.commit_one(&self.nodes[i], req).await) }
        }))
        .await;
        let mut committed = Vec::new();
        for (i, a) in answers {
            match a {
                Answer::Ok((c, s)) => committed.push((i, c, s)),
                Answer::Excluded(e) => excluded.push((i, e)),
            }
        }
        committed
    }

    /// Shows every committed node the full list and asks each to reveal, concurrently. Returns
    /// the contributions and the nodes that were shown but did not contribute, both in node
    /// order; those are also added to `excluded`.
    async fn reveal_phase(
        &self,
        round: u64,
        recipient: &str,
        committed: Vec<(usize, Commitment, Vec<u8>)>,
        hub_commitments: Vec<HubCommitment>,
        excluded: &mut Vec<(usize, Exclusion)>,
    ) -> (Vec<NodeContribution>, Vec<ShownOnly>) {
        let reveal = RevealRequest {
            round,
            recipient: recipient.to_owned(),
            commitments: committed
                .iter()
                .map(|(i, c, s)| SignedCommitment {
                    node_id: self.nodes[*i].id.clone(),
                    commitment: hex::encode(c),
                    signature: proto::encode_signature(s),
                })
                .collect(),
            hub_commitments,
        };
        let answers = futures::future::join_all(committed.into_iter().map(|(i, c, s)| {
            let reveal = &reveal;
            async move {
                let a = self.reveal_one(&self.nodes[i], round, &c, reveal).await;
                (i, c, s, a)
            }
        }))
        .await;
        let mut contributions = Vec::new();
        let mut shown_only = Vec::new();
        for (i, commitment, signature, a) in answers {
            let node_id = self.nodes[i].id.clone();
            match a {
                Answer::Ok((bytes, receipt)) => contributions.push((
                    i,
                    NodeContribution {
                        node_id,
                        commitment,
                        signature,
                        bytes,
                        receipt,
                    },
                )),
                Answer::Excluded(e) => {
                    excluded.push((i, e));
                    shown_only.push((
                        i,
                        ShownOnly {
                            node_id,
                            commitment,
                            signature,
                        },
                    ));
                }
            }
        }
        contributions.sort_by_key(|(i, _)| *i);
        shown_only.sort_by_key(|(i, _)| *i);
        (
            contributions.into_iter().map(|(_, c)| c).collect(),
            shown_only.into_iter().map(|(_, s)| s).collect(),
        )
    }

    fn named(&self, mut excluded: Vec<(usize, Exclusion)>) -> Vec<(String, Exclusion)> {
        excluded.sort_by_key(|(i, _)| *i);
        excluded
            .into_iter()
            .map(|(i, e)| (self.nodes[i].id.clone(), e))
            .collect()
    }

    fn fail(
        &self,
        round: u64,
        phase: Phase,
        have: usize,
        asked: &[usize],
        excluded: Vec<(usize, Exclusion)>,
    ) -> QuorumError {
        self.settle(round, asked, &excluded);
        tracing::warn!(round, %phase, have, need = self.quorum, "quorum not met; no bytes");
        QuorumError::QuorumNotMet {
            phase,
            have,
            need: self.quorum,
            excluded: self.named(excluded),
        }
    }

    /// Counts and logs the exclusions, and updates every asked node's offender record.
    fn settle(&self, round: u64, asked: &[usize], excluded: &[(usize, Exclusion)]) {
        let now = Instant::now();
        for &(i, e) in excluded {
            let id = &self.nodes[i].id;
            self.m
                .exclusions
                .get_or_create(&[("node", id.clone()), ("reason", e.as_str().to_owned())])
                .inc();
            tracing::warn!(round, node = %id, reason = %e, "node excluded from round");
        }
        for &i in asked {
            let n = &self.nodes[i];
            let bad = excluded.iter().any(|&(j, _)| j == i);
            let mut o = lock(&n.offender);
            if let Some(d) = o.record(bad, now, &self.offenders) {
                tracing::warn!(node = %n.id, strikes = o.strikes, cooldown = ?d,
                    "node benched as a repeat offender");
            }
            let benched = o.is_benched(now);
            drop(o);
            self.m
                .benched
                .get_or_create(&l1("node", &n.id))
                .set(i64::from(benched));
        }
    }

    async fn commit_one(&self, node: &Node, req: &CommitRequest) -> Answer<(Commitment, Vec<u8>)> {
        let fut = async {
            let resp = self.client.post(&node.commit_url).json(req).send().await;
            let body = read_answer(resp, MAX_COMMIT_ANSWER, &node.id, Phase::Commit).await?;
            let a: CommitResponse =
                serde_json::from_slice(&body).map_err(|_| Exclusion::BadResponse)?;
            if a.node_id != node.id || a.round != req.round {
                return Err(Exclusion::BadResponse);
            }
            let c = proto::parse_commitment(&a.commitment).ok_or(Exclusion::BadResponse)?;
            let s = proto::parse_signature(&a.signature).ok_or(Exclusion::BadSignature)?;
            if !node
                .key
                .verify(&node_signing_digest(req.round, &node.id, &c), &s)
            {
                return Err(Exclusion::BadSignature);
            }
            Ok((c, s))
        };
        match tokio::time::timeout(self.commit_timeout, fut).await {
            Ok(Ok(v)) => Answer::Ok(v),
            Ok(Err(Exclusion::Withheld)) | Err(_) => Answer::Excluded(Exclusion::CommitTimeout),
            Ok(Err(e)) => Answer::Excluded(e),
        }
    }

    async fn reveal_one(
        &self,
        node: &Node,
        round: u64,
        commitment: &Commitment,
        req: &RevealRequest,
    ) -> Answer<(SecretBytes, crate::wire::NodeReceipt)> {
        let limit = self.bytes_per_node.div_ceil(3) * 4 + 2048;
        let fut = async {
            let resp = self.client.post(&node.reveal_url).json(req).send().await;
            let body = read_answer(resp, limit, &node.id, Phase::Reveal).await?;
            let mut a: RevealResponse =
                serde_json::from_slice(&body).map_err(|_| Exclusion::BadResponse)?;
            let bytes = proto::decode_bytes(&a.bytes).map(SecretBytes::new);
            zeroize::Zeroize::zeroize(&mut a.bytes);
            let bytes = bytes.ok_or(Exclusion::BadResponse)?;
            if a.node_id != node.id
                || a.round != round
                || bytes.len() != self.bytes_per_node
                || a.epoch == 0
                || a.sequence == 0
            {
                return Err(Exclusion::BadResponse);
            }
            match stark::commit(round, &node.id, bytes.expose()) {
                Ok(c) if c == *commitment => {}
                _ => return Err(Exclusion::Mismatch),
            }
            // The receipt must be the node's, over exactly what it was shown: a daemon refuses
            // the packet otherwise.
            let sig = proto::parse_signature(&a.receipt).ok_or(Exclusion::BadSignature)?;
            let set = proto::shown_set(req).ok_or(Exclusion::BadResponse)?;
            let digest = crate::crypto::node_receipt_digest(
                round,
                &req.recipient,
                a.epoch,
                a.sequence,
                &set,
            );
            if !node.key.verify(&digest, &sig) {
                return Err(Exclusion::BadSignature);
            }
            Ok((
                bytes,
                crate::wire::NodeReceipt {
                    epoch: a.epoch,
                    sequence: a.sequence,
                    signature: sig,
                },
            ))
        };
        match tokio::time::timeout(self.reveal_timeout, fut).await {
            Ok(Ok(v)) => Answer::Ok(v),
            Ok(Err(e)) => Answer::Excluded(e),
            Err(_) => Answer::Excluded(Exclusion::Withheld),
        }
    }
}

/// Reads a node's answer of at most `limit` bytes; an error status or a transport failure is an
/// exclusion (`Withheld` stands for "timed out" and is mapped per phase by the caller).
async fn read_answer(
    resp: Result<reqwest::Response, reqwest::Error>,
    limit: usize,
    node: &str,
    phase: Phase,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Exclusion> {
    let mut resp = resp.map_err(|e| {
        if e.is_timeout() {
            Exclusion::Withheld
        } else if e.is_connect() {
            Exclusion::Unreachable
        } else {
            Exclusion::BadResponse
        }
    })?;
    let status = resp.status();
    if !status.is_success() {
        // The node's reason is a fixed token from our protocol; anything else is not logged.
        let reason = resp
            .json::<proto::ErrorBody>()
            .await
            .ok()
            .map(|b| b.reason)
            .filter(|r| r.len() <= 32 && r.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'))
            .unwrap_or_default();
        tracing::warn!(node, %phase, %status, reason, "node refused");
        return Err(Exclusion::BadResponse);
    }
    let mut body = zeroize::Zeroizing::new(Vec::new());
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if body.len() + c.len() > limit {
                    return Err(Exclusion::BadResponse);
                }
                if body.capacity() < body.len() + c.len() {
                    // Grow by hand so no unzeroed copy is left behind.
                    let mut bigger = zeroize::Zeroizing::new(Vec::with_capacity(limit));
                    bigger.extend_from_slice(&body);
                    body = bigger;
                }
                body.extend_from_slice(&c);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err(Exclusion::Withheld),
            Err(_) => return Err(Exclusion::BadResponse),
        }
    }
}

fn check_hub_commitments(h: &[(String, Commitment)]) -> Result<Vec<HubCommitment>, QuorumError> {
    if h.len() > MAX_LIST {
        return Err(QuorumError::BadHubCommitments(format!(
            "at most {MAX_LIST}"
        )));
    }
    let mut seen = HashSet::new();
    h.iter()
        .map(|(id, c)| {
            if !crate::wire::is_valid_id(id) {
                return Err(QuorumError::BadHubCommitments(format!(
                    "{id:?} is not a valid source id"
                )));
            }
            if !seen.insert(id.as_str()) {
                return Err(QuorumError::BadHubCommitments(format!(
                    "{id:?} is listed twice"
                )));
            }
            if stark::digest_elements(c).is_none() {
                return Err(QuorumError::BadHubCommitments(format!(
                    "{id:?}: not a commitment"
                )));
            }
            Ok(HubCommitment {
                source_id: id.clone(),
                commitment: hex::encode(c),
            })
        })
        .collect()
}

fn l1(k: &'static str, v: &str) -> Label1 {
    [(k, v.to_owned())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offenders_are_benched_with_doubling_cooldowns_and_cleared_by_a_clean_round() {
        let p = OffenderConfig {
            bench_after: 2,
            bench_secs: 10,
            bench_max_secs: 25,
        };
        let t = Instant::now();
        let mut o = Offender::default();
        assert_eq!(o.record(true, t, &p), None);
        assert!(!o.is_benched(t));
        assert_eq!(o.record(true, t, &p), Some(Duration::from_secs(10)));
        assert!(o.is_benched(t + Duration::from_secs(9)));
        assert!(!o.is_benched(t + Duration::from_secs(10)));
        // On probation: the next exclusion benches it again, for twice as long, then the cap.
        assert_eq!(o.record(true, t, &p), Some(Duration::from_secs(20)));
        assert_eq!(o.record(true, t, &p), Some(Duration::from_secs(25)));
        o.record(false, t, &p);
        assert_eq!(o, Offender::default());
        assert_eq!(o.record(true, t, &p), None);
    }

    #[test]
    fn round_numbers_are_used_once() {
        let mut u = UsedRounds::default();
        assert!(u.claim(5));
        assert!(!u.claim(5));
        assert!(u.claim(3));
        for r in 10..(10 + USED_ROUNDS_KEPT as u64) {
            assert!(u.claim(r));
        }
        // Forgotten rounds sit below the floor and stay refused.
        assert!(!u.claim(3));
        assert!(!u.claim(4));
    }

    #[test]
    fn hub_commitments_are_checked() {
        let c = stark::commit(1, "s", b"x").unwrap();
        assert!(check_hub_commitments(&[("s".into(), c)]).is_ok());
        assert!(check_hub_commitments(&[("s".into(), c), ("s".into(), c)]).is_err());
        assert!(check_hub_commitments(&[("bad id".into(), c)]).is_err());
        assert!(check_hub_commitments(&[("s".into(), [0xff; 32])]).is_err());
    }
}
