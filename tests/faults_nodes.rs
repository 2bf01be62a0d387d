//! Decentralized node faults, all real processes: three `kirq-hub node` processes (quorum two),
//! a pushing `kirq-hub run` that asks them every round, and kirqd requiring two trusted node
//! signatures per packet. One node misbehaves: it withholds its reveal (the request hangs), or
//! equivocates (it reveals bytes other than the ones it signed a commitment to).
//!
//! For each: the hub excludes it with the named reason and benches it (its /health and
//! `kirq_hub_node_exclusions_total`), rounds complete with the two honest nodes, kirqd admits
//! only packets that verify (none refused, nothing served repeats, served ≤ admitted); then
//! the node is restarted honest and the hub takes it back by itself once its bench ends. Times
//! are printed as `FAULT node-...` lines.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use kirq::crypto::falcon::SigningKey;

const N: usize = 3;
const K: usize = 2;

fn id(i: usize) -> String {
    format!("node-{}", i + 1)
}

struct Node {
    cfg: PathBuf,
    port: u16,
}

fn node_configs(dir: &Path) -> Vec<Node> {
    let ids: Vec<String> = (0..N).map(id).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    kirq::pki::write_dev_node_pki(dir, &refs).unwrap();
    for i in &ids {
        SigningKey::generate()
            .write_pair(dir, &format!("{i}-falcon"))
            .unwrap();
    }
    (0..N)
        .map(|i| {
            let port = free_port();
            let peers: String = (0..N)
                .filter(|&j| j != i)
                .map(|j| format!("{0} = \"{0}-falcon.pub\"\n", ids[j]))
                .collect();
            let text = format!(
                r#"id = "{id}"
signing_key = "{id}-falcon.key"
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{mport}"
quorum = {K}
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
                mport = free_port(),
            );
            let cfg = dir.join(format!("{}.toml", ids[i]));
            std::fs::write(&cfg, text).unwrap();
            Node { cfg, port }
        })
        .collect()
}

fn start_node(f: &Fleet, n: &Node, fault: Option<&str>, log: &str) -> Proc {
    let mut args = vec!["node", "--config", n.cfg.to_str().unwrap()];
    if let Some(fault) = fault {
        args.extend(["--fault", fault]);
    }
    let p = Proc::spawn(env!("CARGO_BIN_EXE_kirq-hub"), &args, &f.path(log), &[]);
    wait_for(Duration::from_secs(30), "a node's listener", || {
        std::net::TcpStream::connect(("127.0.0.1", n.port)).is_ok()
    });
    p
}

fn hub_metric(port: u16, prefix: &str) -> u64 {
    let text = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn accepted(f: &Fleet) -> u64 {
    get_json(&f.http("/api/rng/stats"))["packets_accepted"]
        .as_u64()
        .unwrap()
}

/// Takes what the pool holds (in requests of at most 16 KiB).
fn drain(f: &Fleet, out: &mut Vec<Vec<u8>>) {
    let c = reqwest::blocking::Client::new();
    loop {
        let (left, _) = f.pool();
        if left == 0 {
            return;
        }
        let r = c
            .post(f.http("/api/rng/random"))
            .json(&serde_json::json!({ "num_bytes": left.min(16_384) }))
            .send()
            .unwrap();
        match r.status().as_u16() {
            200 => {
                let v: serde_json::Value = r.json().unwrap();
                out.push(hex::decode(v["random_data"].as_str().unwrap()).unwrap());
            }
            503 => return,
            s => panic!("unexpected status {s}"),
        }
    }
}

fn misbehaving_node(fault: &str, reason: &str) {
    let f = Fleet::new();
    let dir = f.path("nodes");
    std::fs::create_dir(&dir).unwrap();
    kirq::pki::write_dev_pki(&dir, &["unused-hub"], &[]).unwrap();
    std::fs::copy(f.path("hub-ca.pem"), dir.join("hub-ca.pem")).unwrap();
    let nodes = node_configs(&dir);
    let mut procs: Vec<Proc> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let fault = (i == N - 1).then_some(fault);
            start_node(&f, n, fault, &format!("node-{i}-a.log"))
        })
        .collect();

    let metrics_port = free_port();
    // A node quorum is accepted only with a required proof (small, to keep a debug build quick).
    let mut tables = format!(
        "[proof]\nmode = \"required\"\nmax_output_bytes = 448\n[decentralized]\nquorum = {K}\nnode_ca = \"{}\"\nbytes_per_node = 64\n\
         commit_timeout_ms = 3000\nreveal_timeout_ms = 1000\n\
         [decentralized.offenders]\nbench_after = 1\nbench_secs = 2\nbench_max_secs = 4\n",
        dir.join("node-ca.pem").display()
    );
    let mut trust = format!("require_proof = true\nmin_node_quorum = {K}\n");
    for (i, n) in nodes.iter().enumerate() {
        let key = dir.join(format!("{}-falcon.pub", id(i)));
        tables += &format!(
            "[[decentralized.nodes]]\nid = \"{}\"\nurl = \"https://localhost:{}\"\npublic_key = \"{}\"\n",
            id(i),
            n.port,
            key.display()
        );
        trust += &format!(
            "[[trust.nodes]]\nid = \"{}\"\npublic_key = \"{}\"\n",
            id(i),
            key.display()
        );
    }
    let hub_cfg = f.hub_config_with(
        true,
        &format!("metrics_listen = \"127.0.0.1:{metrics_port}\""),
        &tables,
    );
    let d_cfg = f.daemon_config_trust(false, &trust, "[fallback]\nenabled = false");
    let _d = kirqd(&f, &d_cfg, &[]);
    let t0 = Instant::now();
    let _h = hub(&f, &hub_cfg, &[]);

    let excluded =
        format!("kirq_hub_node_exclusions_total{{node=\"node-{N}\",reason=\"{reason}\"}} ");
    wait_for(Duration::from_secs(60), "the offender excluded", || {
        hub_metric(metrics_port, &excluded) >= 1
    });
    let detect = t0.elapsed();
    wait_for(
        Duration::from_secs(60),
        "packets from the honest quorum",
        || accepted(&f) >= 5,
    );
    let delivering = t0.elapsed();
    let health = get_json(&format!("http://127.0.0.1:{metrics_port}/health"));
    let offender = &health["decentralized"]["nodes"][N - 1];
    assert_eq!(offender["id"], id(N - 1), "{health}");
    assert_eq!(offender["benched"], true, "{health}");
    let mut out = Vec::new();
    drain(&f, &mut out);

    // The node comes back honest; the hub takes it back when its bench ends.
    procs.pop().unwrap().kill();
    let contributed = format!("kirq_hub_node_contributions_total{{node=\"node-{N}\"}} ");
    let before = hub_metric(metrics_port, &contributed);
    procs.push(start_node(&f, &nodes[N - 1], None, "node-2-b.log"));
    let t1 = Instant::now();
    wait_for(
        Duration::from_secs(60),
        "the node contributing again",
        || hub_metric(metrics_port, &contributed) > before,
    );
    let recover = t1.elapsed();
    drain(&f, &mut out);

    let stats = get_json(&f.http("/api/rng/stats"));
    let rejected = stats["packets_rejected"].as_object().unwrap();
    assert!(
        rejected.values().all(|v| v == 0),
        "kirqd refused a packet: {stats}"
    );
    assert_no_repeated_window(&out);
    let (served, admitted) = (
        stats["bytes_served_total"].as_u64().unwrap(),
        stats["bytes_admitted_total"].as_u64().unwrap(),
    );
    assert!(served <= admitted);
    eprintln!(
        "FAULT node-{fault}: excluded as {reason} {detect:?} after the hub started and benched \
         ({} exclusions), kirqd admitted packets from the honest quorum by {delivering:?}, none \
         refused; restarted honest it contributed again after {recover:?}; no-repeat ok over \
         {} answers, served {served} <= admitted {admitted}",
        hub_metric(metrics_port, &excluded),
        out.len()
    );
}

#[test]
fn a_node_that_withholds_its_reveal() {
    misbehaving_node("withhold-reveal", "withheld");
}

#[test]
fn a_node_that_equivocates() {
    misbehaving_node("wrong-reveal", "mismatch");
}
