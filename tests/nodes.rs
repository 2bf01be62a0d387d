//! Decentralized QRNG nodes: five real `kirq-hub node` processes on loopback (k = 3), some of them
//! misbehaving on purpose (`--fault`, a key the hub does not trust, not started at all), driven by
//! the hub's library client `Decentralized::round` over mutual TLS, and by hand-made requests.
// Helpers outside #[test] fns unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::nodes::node_id as id;
use common::nodes::{
    Rounds, node_ids, proven_node_configs, spawn_node, wait_for_node, write_node_config,
    write_node_keys,
};
use common::{DAEMON_ID, Fleet, Proc, free_port, get_json, metric, scrape, wait_for};
use kirq::config::DecentralizedConfig;
use kirq::crypto::falcon::{SigningKey, VerifyingKey};
use kirq::crypto::{node_signing_digest, stark};
use kirq::sources::decentralized::{Decentralized, Exclusion, Phase, QuorumError};
use serde_json::{Value, json};

const N: usize = 5;
const K: usize = 3;
const BYTES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Honest,
    Withhold,
    WrongReveal,
    /// Signs with a key neither the hub nor the peers list for it.
    RogueKey,
    /// Configured everywhere, never started.
    Down,
}
use Role::*;

struct Nodes {
    // Killed before the directory goes.
    _procs: Vec<Proc>,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    metrics_ports: Vec<u16>,
}

impl Nodes {
    fn start(roles: [Role; N]) -> Self {
        Self::start_for(roles, None)
    }

    /// Like [`Self::start`]; with `hub_ca`, the nodes accept hubs whose certificates that CA
    /// issued (a [`common::Fleet`]'s hub) instead of their own test hub's.
    fn start_for(roles: [Role; N], hub_ca: Option<&std::path::Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let ids = node_ids(N);
        kirq::pki::write_dev_pki(p, &["hub-1"], &[]).unwrap();
        if let Some(ca) = hub_ca {
            std::fs::copy(ca, p.join("hub-ca.pem")).unwrap();
        }
        write_node_keys(p, &ids);
        SigningKey::generate()
            .write_pair(p, "rogue-falcon")
            .unwrap();
        let ports: Vec<u16> = (0..N).map(|_| free_port()).collect();
        let metrics_ports: Vec<u16> = (0..N).map(|_| free_port()).collect();
        let mut procs = Vec::new();
        for (i, role) in roles.iter().enumerate() {
            let key = if *role == RogueKey {
                "rogue-falcon.key".to_owned()
            } else {
                format!("{}-falcon.key", ids[i])
            };
            let cfg = write_node_config(p, &ids, i, &key, (ports[i], metrics_ports[i]), K);
            let fault = match role {
                Withhold => Some("withhold-reveal"),
                WrongReveal => Some("wrong-reveal"),
                _ => None,
            };
            if *role == Down {
                continue;
            }
            let log = p.join(format!("{}.log", ids[i]));
            procs.push(spawn_node(&cfg, fault, &log));
        }
        for (i, role) in roles.iter().enumerate() {
            if *role != Down {
                wait_for_node(ports[i]);
            }
        }
        Self {
            dir,
            ports,
            metrics_ports,
            _procs: procs,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The hub's `[decentralized]` section for these nodes.
    fn config(&self, reveal_timeout_ms: u64, bench_after: u32) -> DecentralizedConfig {
        let mut text = format!(
            "quorum = {K}\nnode_ca = \"{}\"\nbytes_per_node = {BYTES}\n\
             commit_timeout_ms = 10000\nreveal_timeout_ms = {reveal_timeout_ms}\n\
             [offenders]\nbench_after = {bench_after}\nbench_secs = 60\n",
            self.path("node-ca.pem").display()
        );
        for i in 0..N {
            text += &format!(
                "[[nodes]]\nid = \"{0}\"\nurl = \"https://localhost:{1}\"\n\
                 public_key = \"{2}\"\n",
                id(i),
                self.ports[i],
                self.path(&format!("{}-falcon.pub", id(i))).display()
            );
        }
        let cfg: DecentralizedConfig = toml::from_str(&text).unwrap();
        cfg.validate().unwrap();
        cfg
    }

    fn hub_identity(&self) -> kirq::tls::Identity {
        kirq::tls::Identity::load(&self.path("hub-1.crt"), &self.path("hub-1.key")).unwrap()
    }

    fn hub(&self, reveal_timeout_ms: u64, bench_after: u32) -> Decentralized {
        let cfg = self.config(reveal_timeout_ms, bench_after);
        Decentralized::new(&cfg, &self.hub_identity(), false).unwrap()
    }

    /// A raw HTTPS client with the hub's certificate, for hand-made requests.
    fn client(&self) -> reqwest::Client {
        let ca = kirq::tls::load_certs(&self.path("node-ca.pem")).unwrap();
        let cfg = kirq::tls::client_config(&self.hub_identity(), &ca, false).unwrap();
        kirq::tls::https_client(cfg, Duration::from_secs(10))
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("https://localhost:{}{path}", self.ports[i])
    }

    fn public_key(&self, i: usize) -> VerifyingKey {
        VerifyingKey::load(&self.path(&format!("{}-falcon.pub", id(i)))).unwrap()
    }

    async fn node_metrics(&self, i: usize) -> String {
        reqwest::get(format!(
            "http://127.0.0.1:{}/metrics",
            self.metrics_ports[i]
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
    }
}

fn hub_metrics(d: &Decentralized) -> String {
    let mut r = prometheus_client::registry::Registry::default();
    d.register_metrics(&mut r);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
    out
}

fn exclusion_line(node: &str, reason: &str, n: u64) -> String {
    format!("kirq_hub_node_exclusions_total{{node=\"{node}\",reason=\"{reason}\"}} {n}")
}

/// A round with one misbehaving node completes with the other four and names the one.
async fn round_without(hub: &Decentralized, bad: usize, why: Exclusion) {
    let round = hub.next_round();
    let out = hub.round(round, DAEMON_ID, &[]).await.unwrap();
    assert_eq!(out.excluded, vec![(id(bad), why)]);
    assert_eq!(out.contributions.len(), N - 1);
    for c in &out.contributions {
        assert_ne!(c.node_id, id(bad));
        assert_eq!(
            stark::commit(round, &c.node_id, c.bytes.expose()).unwrap(),
            c.commitment
        );
    }
    let m = hub_metrics(hub);
    assert!(
        m.contains(&exclusion_line(&id(bad), why.as_str(), 1)),
        "{m}"
    );
    assert!(
        m.contains("kirq_hub_node_rounds_total{outcome=\"complete\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_honest_round_has_verified_contributions_from_every_node() {
    let nodes = Nodes::start([Honest; N]);
    let hub = nodes.hub(5000, 3);
    let hub_source = stark::commit(1, "hub-local", &[7; 64]).unwrap();
    let round = hub.next_round();
    let out = hub
        .round(round, DAEMON_ID, &[("hub-local".to_owned(), hub_source)])
        .await
        .unwrap();
    assert_eq!(out.round, round);
    assert!(out.excluded.is_empty(), "{:?}", out.excluded);
    assert_eq!(out.contributions.len(), N);
    let mut seen = std::collections::HashSet::new();
    for (i, c) in out.contributions.iter().enumerate() {
        assert_eq!(c.node_id, id(i), "in configured order");
        assert_eq!(c.bytes.len(), BYTES);
        assert!(seen.insert(c.bytes.expose().to_vec()), "distinct bytes");
        assert_eq!(
            stark::commit(round, &c.node_id, c.bytes.expose()).unwrap(),
            c.commitment
        );
        let digest = node_signing_digest(round, &c.node_id, &c.commitment);
        assert!(nodes.public_key(i).verify(&digest, &c.signature));
    }
    // A round number is used once; the next one is fresh and works.
    assert_eq!(
        hub.round(round, DAEMON_ID, &[]).await.unwrap_err(),
        QuorumError::StaleRound(round)
    );
    let next = hub.next_round();
    assert!(next > round);
    assert_eq!(
        hub.round(next, DAEMON_ID, &[])
            .await
            .unwrap()
            .contributions
            .len(),
        N
    );
    let m = hub_metrics(&hub);
    assert!(
        m.contains("kirq_hub_node_contributions_total{node=\"node-1\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("kirq_hub_node_benched{node=\"node-5\"} 0"),
        "{m}"
    );
    // Every node answered one commit and one reveal per round, and holds the tombstones.
    let nm = nodes.node_metrics(0).await;
    assert!(
        nm.contains("kirq_node_requests_total{endpoint=\"reveal\",outcome=\"ok\"} 2"),
        "{nm}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_a_withheld_reveal_is_excluded_and_the_offender_benched() {
    let nodes = Nodes::start([Honest, Honest, Withhold, Honest, Honest]);
    let hub = nodes.hub(2500, 1);
    let t = Instant::now();
    round_without(&hub, 2, Exclusion::Withheld).await;
    assert!(t.elapsed() >= Duration::from_millis(2500));
    // bench_after = 1: the next round does not ask node-3, so it does not wait for it either.
    let t = Instant::now();
    let out = hub.round(hub.next_round(), DAEMON_ID, &[]).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(out.excluded, vec![(id(2), Exclusion::Benched)]);
    assert_eq!(out.contributions.len(), N - 1);
    let m = hub_metrics(&hub);
    assert!(m.contains(&exclusion_line("node-3", "benched", 1)), "{m}");
    assert!(
        m.contains("kirq_hub_node_benched{node=\"node-3\"} 1"),
        "{m}"
    );
    let r = hub.report();
    assert!(r[2].benched && r[2].benched_for_ms.unwrap() > 50_000);
    assert!(!r[0].benched);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_a_wrong_reveal_is_excluded_as_mismatch() {
    let nodes = Nodes::start([Honest, Honest, Honest, WrongReveal, Honest]);
    let hub = nodes.hub(5000, 3);
    round_without(&hub, 3, Exclusion::Mismatch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_a_node_signing_with_an_untrusted_key_is_excluded() {
    let nodes = Nodes::start([Honest, Honest, Honest, Honest, RogueKey]);
    let hub = nodes.hub(5000, 3);
    round_without(&hub, 4, Exclusion::BadSignature).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_three_bad_nodes_of_five_break_the_quorum_and_give_no_bytes() {
    // Commit phase: two down, one signing with an untrusted key: two commitments, three needed.
    let nodes = Nodes::start([Honest, Honest, Down, Down, RogueKey]);
    let hub = nodes.hub(5000, 3);
    let err = hub
        .round(hub.next_round(), DAEMON_ID, &[])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        QuorumError::QuorumNotMet {
            phase: Phase::Commit,
            have: 2,
            need: K,
            excluded: vec![
                (id(2), Exclusion::Unreachable),
                (id(3), Exclusion::Unreachable),
                (id(4), Exclusion::BadSignature),
            ],
        }
    );
    // Nothing was revealed: the honest nodes were never asked to.
    let nm = nodes.node_metrics(0).await;
    assert!(!nm.contains("endpoint=\"reveal\""), "{nm}");
    drop(nodes);

    // Reveal phase: three commit, one of them withholds: two reveals, three needed.
    let nodes = Nodes::start([Honest, Down, Withhold, Honest, Down]);
    let hub = nodes.hub(1500, 3);
    let err = hub
        .round(hub.next_round(), DAEMON_ID, &[])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        QuorumError::QuorumNotMet {
            phase: Phase::Reveal,
            have: 2,
            need: K,
            excluded: vec![
                (id(1), Exclusion::Unreachable),
                (id(2), Exclusion::Withheld),
                (id(4), Exclusion::Unreachable),
            ],
        }
    );
    let m = hub_metrics(&hub);
    assert!(
        m.contains("kirq_hub_node_rounds_total{outcome=\"reveal_quorum_not_met\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(&exclusion_line("node-2", "unreachable", 1)),
        "{m}"
    );
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let r = client.post(url).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_a_node_reveals_once_and_only_when_shown_a_quorum() {
    let nodes = Nodes::start([Honest, Honest, Honest, Down, Down]);
    let client = nodes.client();
    let round = 42u64;
    let mut signed = Vec::new();
    for i in 0..3 {
        let url = nodes.url(i, "/api/node/commit");
        let (s, a) = post(&client, &url, json!({"round": round, "bytes": 32})).await;
        assert_eq!(s, 200, "{a}");
        // Idempotent: the same commitment, no second draw.
        let (s2, a2) = post(&client, &url, json!({"round": round, "bytes": 32})).await;
        assert_eq!((s2, &a2), (200, &a));
        let (s3, e) = post(&client, &url, json!({"round": round, "bytes": 33})).await;
        assert_eq!((s3, e["reason"].as_str()), (409, Some("size_mismatch")));
        signed.push(json!({
            "node_id": a["node_id"], "commitment": a["commitment"], "signature": a["signature"]
        }));
    }
    let reveal = nodes.url(0, "/api/node/reveal");
    let ask = |list: Vec<Value>| json!({"round": round, "recipient": DAEMON_ID, "commitments": list, "hub_commitments": []});

    // Two valid commitments: fewer than k.
    let (s, e) = post(&client, &reveal, ask(signed[..2].to_vec())).await;
    assert_eq!(
        (s, e["reason"].as_str()),
        (403, Some("quorum_not_shown")),
        "{e}"
    );
    // Three listed, one with a forged signature: still two valid.
    let mut forged = signed.clone();
    forged[2]["signature"] = signed[1]["signature"].clone();
    let (s, e) = post(&client, &reveal, ask(forged)).await;
    assert_eq!((s, e["reason"].as_str()), (403, Some("quorum_not_shown")));
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("1 with bad signatures"),
        "{e}"
    );
    // Its own commitment missing.
    let (s, e) = post(
        &client,
        &nodes.url(2, "/api/node/reveal"),
        ask(signed[..2].to_vec()),
    )
    .await;
    assert_eq!(
        (s, e["reason"].as_str()),
        (403, Some("own_commitment_missing"))
    );
    // A commitment for a round it never committed.
    let (s, e) = post(
        &client,
        &reveal,
        json!({"round": 43, "recipient": DAEMON_ID, "commitments": signed, "hub_commitments": []}),
    )
    .await;
    assert_eq!((s, e["reason"].as_str()), (404, Some("unknown_round")));

    // A quorum: the bytes, matching the commitment.
    let (s, a) = post(&client, &reveal, ask(signed.clone())).await;
    assert_eq!(s, 200, "{a}");
    let bytes = kirq::wire::node::decode_bytes(a["bytes"].as_str().unwrap()).unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(
        hex::encode(stark::commit(round, "node-1", &bytes).unwrap()),
        signed[0]["commitment"].as_str().unwrap()
    );
    // At most once, and the round can never be committed again.
    let (s, e) = post(&client, &reveal, ask(signed.clone())).await;
    assert_eq!((s, e["reason"].as_str()), (409, Some("already_revealed")));
    let (s, e) = post(
        &client,
        &nodes.url(0, "/api/node/commit"),
        json!({"round": round, "bytes": 32}),
    )
    .await;
    assert_eq!((s, e["reason"].as_str()), (409, Some("already_revealed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_malformed_and_oversized_requests_get_precise_errors_and_are_counted() {
    let nodes = Nodes::start([Honest, Down, Down, Down, Down]);
    // `--check` loads the config and every file it names.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kirq-hub"))
        .args(["node", "--check", "--config"])
        .arg(nodes.path("node-1.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("ok (node node-1"),
        "{out:?}"
    );
    let client = nodes.client();
    let commit = nodes.url(0, "/api/node/commit");
    let reveal = nodes.url(0, "/api/node/reveal");
    let raw = |url: &str, ct: &str, body: Vec<u8>| {
        client
            .post(url)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let (commit, reveal) = (commit.as_str(), reveal.as_str());
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (commit, "application/json", b"{".to_vec(), 400, "bad_json"),
        (commit, "application/json", br#"{"round":1,"bytes":8,"x":1}"#.to_vec(), 400, "bad_json"),
        (commit, "text/plain", br#"{"round":1,"bytes":8}"#.to_vec(), 415, "bad_content_type"),
        (commit, "application/json", vec![b' '; 2048], 413, "body_too_large"),
        (commit, "application/json", br#"{"round":9223372036854775808,"bytes":8}"#.to_vec(), 400, "bad_round"),
        (commit, "application/json", br#"{"round":1,"bytes":0}"#.to_vec(), 400, "bad_size"),
        (commit, "application/json", br#"{"round":1,"bytes":4097}"#.to_vec(), 400, "bad_size"),
        (reveal, "application/json", vec![b' '; 300 * 1024], 413, "body_too_large"),
        (
            reveal,
            "application/json",
            br#"{"round":1,"recipient":"kirqd-1","commitments":[{"node_id":"node-2","commitment":"zz","signature":"AA=="}],"hub_commitments":[]}"#.to_vec(),
            400,
            "bad_field",
        ),
        (
            reveal,
            "application/json",
            br#"{"round":1,"recipient":"kirqd-1","commitments":[],"hub_commitments":[{"source_id":"a b","commitment":"00"}]}"#.to_vec(),
            400,
            "bad_field",
        ),
    ];
    for (url, ct, body, status, reason) in &cases {
        let r = raw(url, ct, body.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), *status, "{reason}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["reason"].as_str(), Some(*reason), "{e}");
        assert!(!e["error"].as_str().unwrap().is_empty());
    }
    let too_many: Vec<Value> = (0..65)
        .map(|i| json!({"node_id": format!("n{i}"), "commitment": "00", "signature": "AA=="}))
        .collect();
    let (s, e) = post(
        &client,
        reveal,
        json!({"round": 1, "recipient": DAEMON_ID, "commitments": too_many, "hub_commitments": []}),
    )
    .await;
    assert_eq!((s, e["reason"].as_str()), (400, Some("too_many_entries")));

    let m = nodes.node_metrics(0).await;
    for (line, n) in [
        ("endpoint=\"commit\",outcome=\"bad_json\"", 2),
        ("endpoint=\"commit\",outcome=\"bad_content_type\"", 1),
        ("endpoint=\"commit\",outcome=\"body_too_large\"", 1),
        ("endpoint=\"commit\",outcome=\"bad_round\"", 1),
        ("endpoint=\"commit\",outcome=\"bad_size\"", 2),
        ("endpoint=\"reveal\",outcome=\"body_too_large\"", 1),
        ("endpoint=\"reveal\",outcome=\"bad_field\"", 2),
        ("endpoint=\"reveal\",outcome=\"too_many_entries\"", 1),
    ] {
        let want = format!("kirq_node_requests_total{{{line}}} {n}");
        assert!(m.contains(&want), "{want} not in\n{m}");
    }
    // A client without a certificate never reaches the API; the refused handshake is counted
    // (the readiness probe's bare TCP connection already was).
    let handshakes = |m: String| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix("kirq_tls_handshake_failures_total "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = handshakes(nodes.node_metrics(0).await);
    let ca = kirq::tls::load_certs(&nodes.path("node-ca.pem")).unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(kirq::tls::provider(false))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(kirq::tls::roots(&ca).unwrap())
        .with_no_client_auth();
    let anonymous = kirq::tls::https_client(anonymous, Duration::from_secs(10));
    let r = anonymous
        .post(commit)
        .json(&json!({"round": 1, "bytes": 8}))
        .send()
        .await;
    assert!(r.is_err(), "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while handshakes(nodes.node_metrics(0).await) != before + 1 {
        assert!(
            Instant::now() < deadline,
            "the refused handshake was not counted:\n{}",
            nodes.node_metrics(0).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric_value(text: &str, line_prefix: &str) -> u64 {
    metric(text, line_prefix).unwrap_or(0)
}

/// The whole path: five node processes with `roles`, a `kirq-hub run` process with proofs
/// required, and kirqd requiring a proof and three trusted nodes per packet. Waits for five
/// packets in the pool and checks that none was refused and none went out unproven; returns the
/// hub's metrics and /health for the caller's checks on exclusions.
fn proven_delivery(roles: [Role; N]) -> (String, Value) {
    let f = Fleet::new();
    let nodes = Nodes::start_for(roles, Some(&f.path("hub-ca.pem")));
    let hub_metrics_port = free_port();
    let (hub_cfg, daemon_cfg) = proven_node_configs(
        &f,
        nodes.dir.path(),
        &nodes.ports,
        &Rounds {
            quorum: K,
            bytes_per_node: BYTES,
            commit_timeout_ms: 5000,
            reveal_timeout_ms: 1500,
            offenders: "bench_after = 1\nbench_secs = 600",
        },
        hub_metrics_port,
    );
    let _kirqd = common::kirqd(&f, &daemon_cfg, &[]);
    let _hub = common::hub(&f, &hub_cfg, &[]);

    // Five pushed packets of 448 proven bytes each.
    wait_for(
        Duration::from_secs(120),
        "five proven packets in the pool",
        || {
            get_json(&f.http("/api/rng/health"))["pool"]["admitted_bytes_total"]
                .as_u64()
                .unwrap()
                >= 5 * 448
        },
    );
    let stats = get_json(&f.http("/api/rng/stats"));
    let rejected = stats["packets_rejected"].as_object().unwrap();
    assert!(
        rejected.values().all(|v| v == 0),
        "no packet refused: {stats}"
    );

    let hub_metrics = scrape(&format!("http://127.0.0.1:{hub_metrics_port}/metrics"));
    assert!(
        metric_value(
            &hub_metrics,
            "kirq_hub_proof_packets_total{proof=\"proven\"} "
        ) >= 5,
        "{hub_metrics}"
    );
    assert_eq!(
        metric_value(
            &hub_metrics,
            "kirq_hub_proof_packets_total{proof=\"unproven\"} "
        ),
        0
    );
    let health = get_json(&format!("http://127.0.0.1:{hub_metrics_port}/health"));
    assert_eq!(health["proof"], "required", "{health}");
    (hub_metrics, health)
}

/// One node withholds its reveal, one signs with a key nobody trusts: both are excluded with
/// their reasons, every round completes with the other three, and kirqd admits the proven packets.
#[test]
fn proven_packets_from_five_nodes_reach_kirqd() {
    let (hub_metrics, health) = proven_delivery([Honest, Honest, Honest, Withhold, RogueKey]);
    // node-4 withheld and was benched; node-5's signatures never verify. Rounds already running
    // when node-4 first withheld (the hub keeps up to PUSH_IN_FLIGHT pushes in flight) each
    // meet its withholding too; every round left it out, for its offence or benched.
    let withheld = "kirq_hub_node_exclusions_total{node=\"node-4\",reason=\"withheld\"} ";
    let withheld = metric_value(&hub_metrics, withheld);
    assert!(
        (1..=kirq::hub::PUSH_IN_FLIGHT as u64).contains(&withheld),
        "{hub_metrics}"
    );
    let benched = "kirq_hub_node_exclusions_total{node=\"node-4\",reason=\"benched\"} ";
    assert!(metric_value(&hub_metrics, benched) >= 1, "{hub_metrics}");
    assert!(
        withheld + metric_value(&hub_metrics, benched) >= 5,
        "{hub_metrics}"
    );
    let rogue = "kirq_hub_node_exclusions_total{node=\"node-5\",reason=\"bad_signature\"} ";
    assert!(metric_value(&hub_metrics, rogue) >= 1, "{hub_metrics}");
    for honest in 1..=3 {
        let line = format!("kirq_hub_node_contributions_total{{node=\"node-{honest}\"}} ");
        assert!(metric_value(&hub_metrics, &line) >= 5, "{hub_metrics}");
    }
    let node4 = &health["decentralized"]["nodes"][3];
    assert_eq!(node4["id"], "node-4");
    assert_eq!(node4["benched"], true, "{health}");
}

/// One node reveals other bytes than it committed to: excluded as `mismatch` (then benched), and
/// the rounds complete with the four others into kirqd.
#[test]
fn a_node_revealing_other_bytes_is_excluded_and_delivery_goes_on() {
    let (hub_metrics, health) = proven_delivery([Honest, Honest, Honest, WrongReveal, Honest]);
    // Once per round already running when it first lied (up to PUSH_IN_FLIGHT), then benched.
    let mismatch = "kirq_hub_node_exclusions_total{node=\"node-4\",reason=\"mismatch\"} ";
    assert!(
        (1..=kirq::hub::PUSH_IN_FLIGHT as u64).contains(&metric_value(&hub_metrics, mismatch)),
        "{hub_metrics}"
    );
    for honest in [1, 2, 3, 5] {
        let line = format!("kirq_hub_node_contributions_total{{node=\"node-{honest}\"}} ");
        assert!(metric_value(&hub_metrics, &line) >= 5, "{hub_metrics}");
    }
    let line = "kirq_hub_node_contributions_total{node=\"node-4\"} ";
    assert_eq!(metric_value(&hub_metrics, line), 0, "{hub_metrics}");
    assert_eq!(
        health["decentralized"]["nodes"][3]["benched"], true,
        "{health}"
    );
}
