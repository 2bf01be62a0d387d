//! Prometheus metrics (prometheus-client) for the daemon and the hub.
//!
//! The counters here are the single source of truth: `/api/rng/stats` reads them back rather than
//! keeping a second set. Labels are fixed strings (reasons, consumers, provenance classes, source
//! ids from config); no label or value ever carries entropy or key material.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::pool::{Consumer, Snapshot};
use crate::verify::Reject;
use crate::wire::Provenance;

pub type Label1 = [(&'static str, String); 1];
pub type Label2 = [(&'static str, String); 2];

fn l1(k: &'static str, v: &str) -> Label1 {
    [(k, v.to_owned())]
}

/// Buckets for quality scores in [0, 1].
const QUALITY_BUCKETS: [f64; 7] = [0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0];

fn quality_histogram() -> Histogram {
    Histogram::new(QUALITY_BUCKETS)
}

/// Everything kirqd exports.
#[derive(Debug)]
pub struct DaemonMetrics {
    pub registry: Registry,
    pub pool_bytes: Gauge,
    pub pool_provenance_bytes: Family<Label1, Gauge>,
    pub requests: Family<Label2, Counter>,
    pub served_bytes: Family<Label1, Counter>,
    pub admitted_bytes: Family<Label1, Counter>,
    pub packets_accepted: Counter,
    pub packets_rejected: Family<Label1, Counter>,
    pub quality: Family<Label1, Histogram, fn() -> Histogram>,
    pub source_quality: Family<Label1, Gauge<f64, AtomicU64>>,
    pub fallback_active: Gauge,
    pub hub_last_packet_age: Gauge<f64, AtomicU64>,
    pub tls_handshake_failures: Counter,
    pub tls_connections_refused: Family<Label1, Counter>,
    pub http_rejected: Family<Label1, Counter>,
    /// Node rounds seen in admitted packets, and the rounds a node numbered that never arrived.
    pub node_rounds: Family<Label1, Counter>,
    pub node_round_gaps: Family<Label1, Counter>,
    /// `entropy_requests_total{consumer="http",outcome="ok"}`, resolved once for the hot path.
    pub http_ok: Counter,
    /// `entropy_served_bytes_total{consumer="http"}`, resolved once for the hot path.
    pub http_served: Counter,
}

impl DaemonMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            pool_bytes: Gauge::default(),
            pool_provenance_bytes: Family::default(),
            requests: Family::default(),
            served_bytes: Family::default(),
            admitted_bytes: Family::default(),
            packets_accepted: Counter::default(),
            packets_rejected: Family::default(),
            quality: Family::new_with_constructor(quality_histogram as fn() -> Histogram),
            source_quality: Family::default(),
            fallback_active: Gauge::default(),
            hub_last_packet_age: Gauge::default(),
            tls_handshake_failures: Counter::default(),
            tls_connections_refused: Family::default(),
            http_rejected: Family::default(),
            node_rounds: Family::default(),
            node_round_gaps: Family::default(),
            http_ok: Counter::default(),
            http_served: Counter::default(),
        };
        m.register_all(&mut registry);
        m.create_fixed_labels();
        let http_ok = m
            .requests
            .get_or_create(&[
                ("consumer", "http".to_owned()),
                ("outcome", "ok".to_owned()),
            ])
            .clone();
        let http_served = m
            .served_bytes
            .get_or_create(&l1("consumer", "http"))
            .clone();
        Self {
            registry,
            http_ok,
            http_served,
            ..m
        }
    }

    /// Names and describes every metric in `registry`.
    fn register_all(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "entropy_pool_bytes",
            "Unserved bytes in the pool",
            m.pool_bytes.clone(),
        );
        registry.register(
            "entropy_pool_provenance_bytes",
            "Unserved bytes in the pool by provenance class",
            m.pool_provenance_bytes.clone(),
        );
        registry.register(
            "entropy_requests",
            "Requests for entropy by consumer and outcome",
            m.requests.clone(),
        );
        registry.register(
            "entropy_served_bytes",
            "Bytes handed to consumers",
            m.served_bytes.clone(),
        );
        registry.register(
            "entropy_admitted_bytes",
            "Bytes admitted to the pool by provenance class",
            m.admitted_bytes.clone(),
        );
        registry.register(
            "kirq_packets_accepted",
            "Packets that passed verification and were admitted",
            m.packets_accepted.clone(),
        );
        registry.register(
            "kirq_packets_rejected",
            "Packets refused, by reason",
            m.packets_rejected.clone(),
        );
        registry.register(
            "entropy_quality_score",
            "Quality score in [0,1] per source, observed per tested block",
            m.quality.clone(),
        );
        registry.register(
            "kirq_source_quality",
            "Current quality score in [0,1] per source",
            m.source_quality.clone(),
        );
        registry.register(
            "kirq_fallback_active",
            "1 while the daemon serves its own local entropy because no hub answers",
            m.fallback_active.clone(),
        );
        registry.register(
            "kirq_hub_last_packet_age_seconds",
            "Seconds since the last packet from any hub was admitted",
            m.hub_last_packet_age.clone(),
        );
        registry.register(
            "kirq_tls_handshake_failures",
            "TLS handshakes refused or timed out on the packet listener",
            m.tls_handshake_failures.clone(),
        );
        register_refusals(registry, "packet", &m.tls_connections_refused);
        registry.register(
            "kirq_node_rounds",
            "Decentralized rounds with a node's receipt in admitted packets, by node",
            m.node_rounds.clone(),
        );
        registry.register(
            "kirq_node_round_gaps",
            "Rounds a node revealed for this daemon (its receipt numbers) that never arrived: \
             a hub that discards rounds to pick outputs shows up here",
            m.node_round_gaps.clone(),
        );
        registry.register(
            "kirq_http_rejected",
            "HTTP API requests refused, by reason",
            m.http_rejected.clone(),
        );
    }

    /// Every reason and provenance class is exported from the start, at zero.
    fn create_fixed_labels(&self) {
        let m = self;
        for r in Reject::REASONS {
            let _ = m.packets_rejected.get_or_create(&l1("reason", r));
        }
        for p in Provenance::ALL {
            let _ = m
                .pool_provenance_bytes
                .get_or_create(&l1("provenance", p.as_str()));
            let _ = m
                .admitted_bytes
                .get_or_create(&l1("provenance", p.as_str()));
        }
    }

    /// The counters of one consumer, for the face that serves it.
    pub fn consumer(&self, consumer: Consumer) -> ConsumerMetrics {
        let c = consumer.as_str();
        ConsumerMetrics {
            consumer,
            served: self.served_bytes.get_or_create(&l1("consumer", c)).clone(),
            ok: self
                .requests
                .get_or_create(&[("consumer", c.to_owned()), ("outcome", "ok".to_owned())])
                .clone(),
            requests: self.requests.clone(),
        }
    }

    pub fn reject(&self, reason: &str) {
        self.packets_rejected
            .get_or_create(&l1("reason", reason))
            .inc();
    }

    pub fn rejected_count(&self, reason: &str) -> u64 {
        self.packets_rejected
            .get_or_create(&l1("reason", reason))
            .get()
    }

    pub fn request(&self, consumer: &str, outcome: &str) {
        self.requests
            .get_or_create(&[
                ("consumer", consumer.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    pub fn served(&self, consumer: &str, n: usize) {
        self.served_bytes
            .get_or_create(&l1("consumer", consumer))
            .inc_by(n as u64);
    }

    pub fn admitted(&self, class: Provenance, n: usize) {
        self.admitted_bytes
            .get_or_create(&l1("provenance", class.as_str()))
            .inc_by(n as u64);
    }

    pub fn observe_quality(&self, source: &str, q: f64) {
        self.quality.get_or_create(&l1("source", source)).observe(q);
        self.source_quality
            .get_or_create(&l1("source", source))
            .set(q);
    }

    pub fn http_reject(&self, reason: &str) {
        self.http_rejected
            .get_or_create(&l1("reason", reason))
            .inc();
    }

    pub fn set_pool(&self, s: &Snapshot) {
        self.pool_bytes.set(s.total_bytes as i64);
        for (p, n) in &s.by_provenance {
            self.pool_provenance_bytes
                .get_or_create(&l1("provenance", p))
                .set(*n as i64);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// One consumer's counters (`consumer="device"`, `"kernel"`, `"keys"`, ...): the part of the
/// daemon's metrics a serving face writes, resolved once so a read allocates no labels.
#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    consumer: Consumer,
    served: Counter,
    ok: Counter,
    requests: Family<Label2, Counter>,
}

impl ConsumerMetrics {
    pub fn consumer(&self) -> Consumer {
        self.consumer
    }

    /// `n` bytes handed to this consumer.
    pub fn served(&self, n: usize) {
        self.served.inc_by(n as u64);
    }

    /// One request answered with bytes.
    pub fn ok(&self) {
        self.ok.inc();
    }

    /// One request with another outcome (`insufficient`, `bad_request`, `would_block`, ...).
    pub fn request(&self, outcome: &str) {
        self.requests
            .get_or_create(&[
                ("consumer", self.consumer.as_str().to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }
}

impl Default for DaemonMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::tls::HandshakeObserver for DaemonMetrics {
    fn handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    fn connection_refused(&self, reason: &'static str) {
        self.tls_connections_refused
            .get_or_create(&l1("reason", reason))
            .inc();
    }
}

/// Everything kirq-hub exports.
#[derive(Debug)]
pub struct HubMetrics {
    pub registry: Registry,
    pub packets_built: Counter,
    pub deliveries: Family<Label2, Counter>,
    pub delivered_packets: Family<Label1, Counter>,
    pub reloads: Family<Label1, Counter>,
    pub quality: Family<Label1, Histogram, fn() -> Histogram>,
    pub source_quality: Family<Label1, Gauge<f64, AtomicU64>>,
    pub source_failures: Family<Label2, Counter>,
    pub tls_handshake_failures: Counter,
    pub tls_connections_refused: Family<Label1, Counter>,
}

impl HubMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            packets_built: Counter::default(),
            deliveries: Family::default(),
            delivered_packets: Family::default(),
            reloads: Family::default(),
            quality: Family::new_with_constructor(quality_histogram as fn() -> Histogram),
            source_quality: Family::default(),
            source_failures: Family::default(),
            tls_handshake_failures: Counter::default(),
            tls_connections_refused: Family::default(),
        };
        registry.register(
            "kirq_hub_packets_built",
            "Packets signed",
            m.packets_built.clone(),
        );
        registry.register(
            "kirq_hub_deliveries",
            "Delivery attempts by class (pull: refill answers; push) and outcome; per class, not \
             per daemon, so the label set stays small for any number of daemons",
            m.deliveries.clone(),
        );
        registry.register(
            "kirq_hub_delivered_packets",
            "Packets handed to daemons, by class (pull, push)",
            m.delivered_packets.clone(),
        );
        registry.register(
            "kirq_hub_config_reloads",
            "SIGHUP config reloads, by outcome (applied, refused)",
            m.reloads.clone(),
        );
        for outcome in ["applied", "refused"] {
            let _ = m.reloads.get_or_create(&l1("outcome", outcome));
        }
        registry.register(
            "entropy_quality_score",
            "Quality score in [0,1] per source, observed per tested block",
            m.quality.clone(),
        );
        registry.register(
            "kirq_source_quality",
            "Current quality score in [0,1] per source",
            m.source_quality.clone(),
        );
        registry.register(
            "kirq_hub_source_failures",
            "Source fetches that failed, by source and reason",
            m.source_failures.clone(),
        );
        registry.register(
            "kirq_tls_handshake_failures",
            "TLS handshakes refused or timed out on the pull listener",
            m.tls_handshake_failures.clone(),
        );
        register_refusals(&mut registry, "pull", &m.tls_connections_refused);
        Self { registry, ..m }
    }

    /// One delivery attempt of `class` (`pull` or `push`).
    pub fn delivery(&self, class: &str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&[("class", class.to_owned()), ("outcome", outcome.to_owned())])
            .inc();
    }

    /// `packets` packets handed over by one delivery of `class`.
    pub fn delivered(&self, class: &str, packets: usize) {
        self.delivered_packets
            .get_or_create(&l1("class", class))
            .inc_by(packets as u64);
    }

    /// One SIGHUP reload, `applied` or `refused`.
    pub fn reload(&self, outcome: &'static str) {
        self.reloads.get_or_create(&l1("outcome", outcome)).inc();
    }

    pub fn observe_quality(&self, source: &str, q: f64) {
        self.quality.get_or_create(&l1("source", source)).observe(q);
        self.source_quality
            .get_or_create(&l1("source", source))
            .set(q);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::tls::HandshakeObserver for HubMetrics {
    fn handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    fn connection_refused(&self, reason: &'static str) {
        self.tls_connections_refused
            .get_or_create(&l1("reason", reason))
            .inc();
    }
}

/// Registers `kirq_tls_connections_refused` (connections a mutual-TLS listener closed before
/// their handshake) with every reason present from the start.
pub fn register_refusals(
    registry: &mut Registry,
    listener: &str,
    family: &Family<Label1, Counter>,
) {
    registry.register(
        "kirq_tls_connections_refused",
        format!(
            "Connections the {listener} listener closed before their TLS handshake (over a \
             connection cap, or accept failed), by reason"
        ),
        family.clone(),
    );
    for r in crate::tls::REFUSAL_REASONS {
        let _ = family.get_or_create(&l1("reason", r));
    }
}
