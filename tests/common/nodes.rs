//! Decentralized QRNG nodes as real `kirq-hub node` processes on loopback: their keys and
//! certificates, their configs (every node trusts every other), their processes, and the hub and
//! daemon config tables that make a proven, node-backed delivery. Used by tests/nodes.rs and
//! tests/faults_nodes.rs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kirq::crypto::falcon::SigningKey;

use super::{Fleet, Proc, wait_for_port};

/// The id of node `i` (from 0): `node-1`, `node-2`, ...
pub fn node_id(i: usize) -> String {
    format!("node-{}", i + 1)
}

/// The ids of `n` nodes.
pub fn node_ids(n: usize) -> Vec<String> {
    (0..n).map(node_id).collect()
}

/// Writes the node PKI into `dir` (node-ca.pem, `ID.crt`/`ID.key`; `dir` must already hold the
/// hub CA, hub-ca.pem) and each node's Falcon pair `ID-falcon.key`/`.pub`.
pub fn write_node_keys(dir: &Path, ids: &[String]) {
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    kirq::pki::write_dev_node_pki(dir, &refs).unwrap();
    for i in ids {
        SigningKey::generate()
            .write_pair(dir, &format!("{i}-falcon"))
            .unwrap();
    }
}

/// Writes `dir/ID.toml` for node `i` of `ids`: signing with `key_file`, listening on `port`
/// (metrics on `metrics_port`), asking `quorum` peers, trusting every other node's Falcon key.
pub fn write_node_config(
    dir: &Path,
    ids: &[String],
    i: usize,
    key_file: &str,
    (port, metrics_port): (u16, u16),
    quorum: usize,
) -> PathBuf {
    let peers: String = (0..ids.len())
        .filter(|&j| j != i)
        .map(|j| format!("{0} = \"{0}-falcon.pub\"\n", ids[j]))
        .collect();
    let text = format!(
        r#"id = "{id}"
signing_key = "{key_file}"
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics_port}"
quorum = {quorum}
max_contribution_bytes = 4096
round_ttl_secs = 30
[tls]
cert = "{id}.crt"
key = "{id}.key"
client_ca = "hub-ca.pem"
[source]
type = "local"
[peers]
{peers}"#,
        id = ids[i],
    );
    let cfg = dir.join(format!("{}.toml", ids[i]));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Starts `kirq-hub node --config CFG [--fault FAULT]`, logging to `log`; does not wait.
pub fn spawn_node(cfg: &Path, fault: Option<&str>, log: &Path) -> Proc {
    let mut args = vec!["node", "--config", cfg.to_str().unwrap()];
    if let Some(fault) = fault {
        args.extend(["--fault", fault]);
    }
    Proc::spawn(env!("CARGO_BIN_EXE_kirq-hub"), &args, log, &[])
}

/// Waits (30 s at most) until a node listens on `port`.
pub fn wait_for_node(port: u16) {
    wait_for_port(port, Duration::from_secs(30), "a node's listener");
}

/// How the hub runs its rounds with the nodes.
pub struct Rounds<'a> {
    pub quorum: usize,
    pub bytes_per_node: usize,
    pub commit_timeout_ms: u64,
    pub reveal_timeout_ms: u64,
    /// The `[decentralized.offenders]` table's body.
    pub offenders: &'a str,
}

/// For nodes listening on `ports` whose Falcon keys are in `dir`, the fleet's configs of a
/// proven, node-backed delivery: a pushing hub (metrics and /health on `hub_metrics_port`,
/// proofs required, 448-byte packets to keep a debug build quick, `[decentralized]` with `r`)
/// and a daemon without fallback requiring a proof and `r.quorum` trusted node signatures per
/// packet. Returns (hub config, daemon config).
pub fn proven_node_configs(
    f: &Fleet,
    dir: &Path,
    ports: &[u16],
    r: &Rounds,
    hub_metrics_port: u16,
) -> (PathBuf, PathBuf) {
    let (tables, trust) = proven_node_tables(dir, ports, r);
    let hub = f.hub_config_with(
        true,
        &format!("metrics_listen = \"127.0.0.1:{hub_metrics_port}\""),
        &tables,
    );
    let daemon = f.daemon_config_trust(false, &trust, "[fallback]\nenabled = false");
    (hub, daemon)
}

/// The hub's `[proof]` and `[decentralized]` tables and the daemon's `[trust]` lines.
fn proven_node_tables(dir: &Path, ports: &[u16], r: &Rounds) -> (String, String) {
    let mut hub = format!(
        "[proof]\nmode = \"required\"\nmax_output_bytes = 448\n[decentralized]\nquorum = {}\n\
         node_ca = \"{}\"\nbytes_per_node = {}\ncommit_timeout_ms = {}\nreveal_timeout_ms = {}\n\
         [decentralized.offenders]\n{}\n",
        r.quorum,
        dir.join("node-ca.pem").display(),
        r.bytes_per_node,
        r.commit_timeout_ms,
        r.reveal_timeout_ms,
        r.offenders.trim_end(),
    );
    let mut trust = format!("require_proof = true\nmin_node_quorum = {}\n", r.quorum);
    for (i, port) in ports.iter().enumerate() {
        let key = dir.join(format!("{}-falcon.pub", node_id(i)));
        hub += &format!(
            "[[decentralized.nodes]]\nid = \"{}\"\nurl = \"https://localhost:{port}\"\n\
             public_key = \"{}\"\n",
            node_id(i),
            key.display()
        );
        trust += &format!(
            "[[trust.nodes]]\nid = \"{}\"\npublic_key = \"{}\"\n",
            node_id(i),
            key.display()
        );
    }
    (hub, trust)
}
