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

use common::nodes::*;
use common::*;

const N: usize = 3;
const K: usize = 2;

struct Node {
    cfg: PathBuf,
    port: u16,
}

fn node_configs(dir: &Path) -> Vec<Node> {
    let ids = node_ids(N);
    write_node_keys(dir, &ids);
    (0..N)
        .map(|i| {
            let port = free_port();
            let key = format!("{}-falcon.key", ids[i]);
            let cfg = write_node_config(dir, &ids, i, &key, (port, free_port()), K);
            Node { cfg, port }
        })
        .collect()
}

fn start_node(f: &Fleet, n: &Node, fault: Option<&str>, log: &str) -> Proc {
    let p = spawn_node(&n.cfg, fault, &f.path(log));
    wait_for_node(n.port);
    p
}

fn hub_metric(port: u16, prefix: &str) -> u64 {
    metric(&scrape(&format!("http://127.0.0.1:{port}/metrics")), prefix).unwrap_or(0)
}

fn accepted(f: &Fleet) -> u64 {
    get_json(&f.http("/api/rng/stats"))["packets_accepted"]
        .as_u64()
        .unwrap()
}

/// Takes what the pool holds (in requests of at most 16 KiB); stops at the first 503.
fn drain(f: &Fleet, out: &mut Vec<Vec<u8>>) {
    let c = reqwest::blocking::Client::new();
    loop {
        let (left, _) = f.pool();
        if left == 0 {
            return;
        }
        match f.take(&c, usize::try_from(left.min(16_384)).unwrap()) {
            Some(b) => out.push(b),
            None => return,
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
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let (hub_cfg, d_cfg) = proven_node_configs(
        &f,
        &dir,
        &ports,
        &Rounds {
            quorum: K,
            bytes_per_node: 64,
            commit_timeout_ms: 3000,
            reveal_timeout_ms: 1000,
            offenders: "bench_after = 1\nbench_secs = 2\nbench_max_secs = 4",
        },
        metrics_port,
    );
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
    assert_eq!(offender["id"], node_id(N - 1), "{health}");
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
