//! `kirq-hub node`'s configuration: a decentralized QRNG node (see [`crate::node`]), and the
//! hub's `[decentralized]` section that lists the nodes it asks.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::daemon::{HealthConfig, check_health};
use super::{ConfigError, SourceConfig, check_https, check_id, invalid, read_toml, resolve};

/// Most nodes a node lists as peers (itself included) or a hub asks: the node protocol's list
/// bound.
pub const MAX_NODES: usize = crate::wire::node::MAX_LIST;
/// Hard upper bound on one node's contribution to one round.
pub const MAX_NODE_CONTRIBUTION_BYTES: usize = 1 << 20;

/// A decentralized QRNG node's configuration file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id: what it signs with every commitment, and what hubs and peers list.
    pub id: String,
    /// Falcon-512 secret key file (`kirq-hub keygen`); its public half goes to hubs and peers.
    pub signing_key: PathBuf,
    /// Mutual-TLS listener for hubs' commit and reveal requests.
    pub listen: SocketAddr,
    /// Plain HTTP listener for `/metrics` and `/health` (loopback recommended).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    pub tls: NodeTlsConfig,
    /// This node's own entropy source: any `[[sources]]` entry the hub accepts.
    pub source: SourceConfig,
    /// The other nodes' Falcon-512 public keys: node id → public key file.
    pub peers: BTreeMap<String, PathBuf>,
    /// Distinct nodes' valid signed commitments (this node's included) a reveal must show.
    pub quorum: usize,
    /// Largest contribution one commit may ask for, bytes.
    #[serde(default = "d_max_contribution")]
    pub max_contribution_bytes: usize,
    /// Seconds a committed round is kept; then its bytes are zeroed and it can no longer be
    /// revealed.
    #[serde(default = "d_ttl")]
    pub round_ttl_secs: u64,
    /// Most rounds held at once (over all hubs): bounds memory.
    #[serde(default = "d_open_rounds")]
    pub max_open_rounds: usize,
    #[serde(default)]
    pub health: HealthConfig,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that issues the certificates of hubs allowed to ask this node.
    pub client_ca: PathBuf,
    #[serde(default)]
    pub pq_only: bool,
}

fn d_max_contribution() -> usize {
    64 * 1024
}
fn d_ttl() -> u64 {
    60
}
fn d_open_rounds() -> usize {
    256
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: Self = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        resolve(base, &mut c.signing_key);
        resolve(base, &mut c.tls.cert);
        resolve(base, &mut c.tls.key);
        resolve(base, &mut c.tls.client_ca);
        c.source.resolve_paths(base);
        for p in c.peers.values_mut() {
            resolve(base, p);
        }
        c.validate()?;
        Ok(c)
    }

    /// Nodes in the network, this one included.
    pub fn node_count(&self) -> usize {
        self.peers.len() + 1
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_id("id", &self.id)?;
        for id in self.peers.keys() {
            check_id("peers", id)?;
            if *id == self.id {
                return Err(invalid(
                    "peers",
                    format!("{id:?} is this node's own id; its key comes from signing_key"),
                ));
            }
        }
        if self.peers.is_empty() {
            return Err(invalid("peers", "list at least one other node"));
        }
        if self.node_count() > MAX_NODES {
            return Err(invalid("peers", format!("at most {} peers", MAX_NODES - 1)));
        }
        if !(2..=self.node_count()).contains(&self.quorum) {
            return Err(invalid(
                "quorum",
                format!(
                    "must be 2..={} (the peers and this node)",
                    self.node_count()
                ),
            ));
        }
        if !(1..=MAX_NODE_CONTRIBUTION_BYTES).contains(&self.max_contribution_bytes) {
            return Err(invalid(
                "max_contribution_bytes",
                format!("must be 1..={MAX_NODE_CONTRIBUTION_BYTES}"),
            ));
        }
        if !(1..=3600).contains(&self.round_ttl_secs) {
            return Err(invalid("round_ttl_secs", "must be 1..=3600"));
        }
        if !(1..=65_536).contains(&self.max_open_rounds) {
            return Err(invalid("max_open_rounds", "must be 1..=65536"));
        }
        self.source.validate()?;
        check_health(&self.health)
    }
}

/// The hub's `[decentralized]` section: the nodes it asks each round and the quorum it needs.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecentralizedConfig {
    pub nodes: Vec<NodeEndpoint>,
    /// Valid reveals a round needs (and valid signed commitments before any reveal is asked).
    pub quorum: usize,
    /// CA that issues the nodes' server certificates.
    pub node_ca: PathBuf,
    /// Bytes asked of each node per round.
    #[serde(default = "d_bytes_per_node")]
    pub bytes_per_node: usize,
    /// Longest the commit phase waits for the nodes' signed commitments, milliseconds.
    #[serde(default = "d_phase_timeout")]
    pub commit_timeout_ms: u64,
    /// Longest the reveal phase waits for the nodes' reveals, milliseconds.
    #[serde(default = "d_phase_timeout")]
    pub reveal_timeout_ms: u64,
    #[serde(default)]
    pub offenders: OffenderConfig,
}

/// One node as the hub knows it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEndpoint {
    pub id: String,
    /// Base URL of the node's mutual-TLS listener (`https://host:port`).
    pub url: String,
    /// The node's Falcon-512 public key file.
    pub public_key: PathBuf,
}

/// Repeat offenders: a node excluded from `bench_after` rounds in a row is not asked for
/// `bench_secs`; each further bench (without a clean round between) doubles that, up to
/// `bench_max_secs`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OffenderConfig {
    pub bench_after: u32,
    pub bench_secs: u64,
    pub bench_max_secs: u64,
}

impl Default for OffenderConfig {
    fn default() -> Self {
        Self {
            bench_after: 3,
            bench_secs: 60,
            bench_max_secs: 3600,
        }
    }
}

fn d_bytes_per_node() -> usize {
    64
}
fn d_phase_timeout() -> u64 {
    2000
}

impl DecentralizedConfig {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        resolve(base, &mut self.node_ca);
        for n in &mut self.nodes {
            resolve(base, &mut n.public_key);
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes.is_empty() || self.nodes.len() > MAX_NODES {
            return Err(invalid(
                "decentralized.nodes",
                format!("list 1..={MAX_NODES} nodes"),
            ));
        }
        let mut ids = HashSet::new();
        for n in &self.nodes {
            check_id("decentralized.nodes.id", &n.id)?;
            if !ids.insert(n.id.as_str()) {
                return Err(invalid(
                    "decentralized.nodes.id",
                    format!("{:?} is listed twice", n.id),
                ));
            }
            check_https("decentralized.nodes.url", &n.url)?;
        }
        if !(2..=self.nodes.len()).contains(&self.quorum) {
            return Err(invalid(
                "decentralized.quorum",
                format!("must be 2..={} (the number of nodes)", self.nodes.len()),
            ));
        }
        if !(1..=MAX_NODE_CONTRIBUTION_BYTES).contains(&self.bytes_per_node) {
            return Err(invalid(
                "decentralized.bytes_per_node",
                format!("must be 1..={MAX_NODE_CONTRIBUTION_BYTES}"),
            ));
        }
        for (key, ms) in [
            ("decentralized.commit_timeout_ms", self.commit_timeout_ms),
            ("decentralized.reveal_timeout_ms", self.reveal_timeout_ms),
        ] {
            if !(100..=60_000).contains(&ms) {
                return Err(invalid(key, "must be 100..=60000"));
            }
        }
        let o = &self.offenders;
        if !(1..=1000).contains(&o.bench_after) {
            return Err(invalid(
                "decentralized.offenders.bench_after",
                "must be 1..=1000",
            ));
        }
        if !(1..=86_400).contains(&o.bench_secs) {
            return Err(invalid(
                "decentralized.offenders.bench_secs",
                "must be 1..=86400",
            ));
        }
        if !(o.bench_secs..=7 * 86_400).contains(&o.bench_max_secs) {
            return Err(invalid(
                "decentralized.offenders.bench_max_secs",
                "must be bench_secs..=604800",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"
id = "node-1"
signing_key = "node-1.falcon"
listen = "127.0.0.1:8445"
quorum = 2
[tls]
cert = "node-1.crt"
key = "node-1.key"
client_ca = "hub-ca.pem"
[source]
type = "local"
[peers]
node-2 = "node-2.pub"
"#;

    fn node(text: &str) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.toml");
        std::fs::write(&p, text).unwrap();
        NodeConfig::load(&p)
    }

    fn key_of(r: Result<NodeConfig, ConfigError>) -> &'static str {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn node_defaults_and_paths() {
        let c = node(NODE).unwrap();
        assert_eq!(c.max_contribution_bytes, 65536);
        assert_eq!(c.round_ttl_secs, 60);
        assert_eq!(c.max_open_rounds, 256);
        assert!(c.peers["node-2"].is_absolute());
        assert_eq!(c.source.id(), "local");
    }

    #[test]
    fn node_rules_name_their_keys() {
        assert_eq!(
            key_of(node(&NODE.replace("quorum = 2", "quorum = 3"))),
            "quorum"
        );
        assert_eq!(
            key_of(node(&NODE.replace("quorum = 2", "quorum = 1"))),
            "quorum"
        );
        assert_eq!(
            key_of(node(&NODE.replace("node-2 = ", "node-1 = "))),
            "peers"
        );
        assert_eq!(
            key_of(node(&format!("max_contribution_bytes = 0\n{NODE}"))),
            "max_contribution_bytes"
        );
        assert_eq!(
            key_of(node(&format!("round_ttl_secs = 0\n{NODE}"))),
            "round_ttl_secs"
        );
        assert_eq!(
            key_of(node(
                &NODE.replace("type = \"local\"", "type = \"local\"\nweight = 0")
            )),
            "sources.weight"
        );
        assert!(matches!(
            node(&format!("colour = 1\n{NODE}")),
            Err(ConfigError::Parse { .. })
        ));
    }

    const DEC: &str = r#"
quorum = 2
node_ca = "node-ca.pem"
[[nodes]]
id = "node-1"
url = "https://node-1.example:8445"
public_key = "node-1.pub"
[[nodes]]
id = "node-2"
url = "https://node-2.example:8445"
public_key = "node-2.pub"
"#;

    fn dec(text: &str) -> Result<(), ConfigError> {
        toml::from_str::<DecentralizedConfig>(text)
            .unwrap()
            .validate()
    }

    #[test]
    fn decentralized_rules_name_their_keys() {
        dec(DEC).unwrap();
        let c: DecentralizedConfig = toml::from_str(DEC).unwrap();
        assert_eq!(c.offenders.bench_after, 3);
        assert_eq!(c.commit_timeout_ms, 2000);
        let k = |t: &str| match dec(t) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            k(&DEC.replace("quorum = 2", "quorum = 3")),
            "decentralized.quorum"
        );
        assert_eq!(
            k(&DEC.replace("node-2\"", "node-1\"")),
            "decentralized.nodes.id"
        );
        assert_eq!(
            k(&DEC.replace("https://node-2", "http://node-2")),
            "decentralized.nodes.url"
        );
        assert_eq!(
            k(&format!("reveal_timeout_ms = 5\n{DEC}")),
            "decentralized.reveal_timeout_ms"
        );
        assert_eq!(
            k(&format!("bytes_per_node = 0\n{DEC}")),
            "decentralized.bytes_per_node"
        );
        assert_eq!(
            k(&format!(
                "{DEC}\n[offenders]\nbench_secs = 10\nbench_max_secs = 5\n"
            )),
            "decentralized.offenders.bench_max_secs"
        );
    }
}
