//! The node's counters, served at `/metrics` on its local listener.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::{Label1, Label2};
use crate::tls;

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
