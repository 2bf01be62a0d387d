//! A fleet on one machine: two share-nothing hubs (each its own signing key, no `[[daemons]]`
//! list) and 50 kirqd processes, each with its own id and certificate from the daemon CA (half
//! named by DNS name, half by SPIFFE ID), half listing hub-1 first and half hub-2. Every packet
//! reaches exactly one daemon, a packet captured for one daemon is refused by another and by
//! itself a second time, a certificate pulls only for the id it names, and killing hub-1 moves
//! its daemons to hub-2 without the local fallback and without any byte served twice.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use kirq::crypto::falcon::SigningKey;
use kirq::pki::{Ca, write_new};
use kirq::wire::refill::{self, Frames, RefillRequest};

const DAEMONS: usize = 50;
const TRUST_DOMAIN: &str = "fleet.test";
const POOL_TARGET: u64 = 64 * 1024;
/// `refill_bytes`: a daemon pulls once at least this much is missing from its target.
const REFILL: u64 = 32 * 1024;

struct Hub {
    id: &'static str,
    port: u16,
    metrics: String,
    proc: Option<Proc>,
}

struct Member {
    id: String,
    dir: PathBuf,
    http: u16,
    receive: u16,
    _proc: Proc,
}

impl Member {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    fn metrics(&self) -> String {
        scrape(&self.url("/metrics"))
    }

    fn accepted(&self) -> u64 {
        metric(&self.metrics(), "kirq_packets_accepted_total ").unwrap_or(0)
    }

    /// The last lines of this daemon's log, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("kirqd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn health(&self) -> serde_json::Value {
        get_json(&self.url("/api/rng/health"))
    }

    /// A pool's worth of bytes, served in 4 KiB requests.
    fn drain(&self, c: &reqwest::blocking::Client, out: &mut Vec<Vec<u8>>) -> usize {
        let mut n = 0;
        loop {
            let r = c
                .post(self.url("/api/rng/random"))
                .json(&serde_json::json!({"num_bytes": 4096, "encoding": "hex"}))
                .send()
                .unwrap();
            if r.status() != 200 {
                return n;
            }
            let body: serde_json::Value = r.json().unwrap();
            let bytes = hex::decode(body["random_data"].as_str().unwrap()).unwrap();
            n += bytes.len();
            out.push(bytes);
            if n >= POOL_TARGET as usize {
                return n;
            }
        }
    }
}

fn write_leaf(dir: &Path, name: &str, leaf: &kirq::pki::Leaf) {
    write_new(&dir.join(format!("{name}.crt")), &leaf.cert_pem, 0o644).unwrap();
    write_new(&dir.join(format!("{name}.key")), &leaf.key_pem, 0o600).unwrap();
}

fn hub_config(root: &Path, id: &str, port: u16, metrics: u16) -> PathBuf {
    let text = format!(
        r#"id = "{id}"
signing_key = "{id}-signing.key"
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics}"
push_interval_ms = 0
packet_bytes = 4096
[tls]
cert = "{id}.crt"
key = "{id}.key"
daemon_ca = "daemon-ca.pem"
spiffe_trust_domain = "{TRUST_DOMAIN}"
[limits]
connections_per_peer = 512
[[sources]]
type = "local"
"#
    );
    let p = root.join(format!("{id}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn daemon_config(root: &Path, m_dir: &Path, id: &str, ports: (u16, u16), hubs: [u16; 2]) {
    let r = root.display();
    let text = format!(
        r#"id = "{id}"
[trust]
hub_keys = ["{r}/hub-1-signing.pub", "{r}/hub-2-signing.pub"]
replay_state_file = "kirqd.replay"
[receive]
listen = "127.0.0.1:{}"
cert = "{id}.crt"
key = "{id}.key"
hub_ca = "{r}/hub-ca.pem"
[http]
listen = "127.0.0.1:{}"
[pool]
capacity_bytes = 131072
high_watermark_bytes = {POOL_TARGET}
refill_bytes = {REFILL}
[fallback]
after_secs = 30
[[hubs]]
url = "https://localhost:{}"
[[hubs]]
url = "https://localhost:{}"
"#,
        ports.0, ports.1, hubs[0], hubs[1]
    );
    std::fs::write(m_dir.join("kirqd.toml"), text).unwrap();
}

/// Pulls one packet for `recipient` from the hub on `port`: the status and the frames' bytes.
fn pull(c: &reqwest::blocking::Client, port: u16, recipient: &str) -> (u16, Vec<Vec<u8>>) {
    let body = serde_json::to_vec(&RefillRequest::new(recipient, 4096, None)).unwrap();
    let r = c
        .post(format!("https://localhost:{port}{}", refill::REFILL_PATH))
        .header(refill::TRANSPORT_HEADER, refill::TRANSPORT_VERSION)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let bytes = r.bytes().unwrap();
    let frames = if status == 200 {
        Frames::new(&bytes).map(|f| f.unwrap().to_vec()).collect()
    } else {
        Vec::new()
    };
    (status, frames)
}

/// POSTs a packet to `m`'s receive listener as a hub would: (status, body).
fn push(c: &reqwest::blocking::Client, m: &Member, packet: &[u8]) -> (u16, serde_json::Value) {
    let r = c
        .post(format!("https://localhost:{}/api/rng/receive", m.receive))
        .header(refill::TRANSPORT_HEADER, refill::TRANSPORT_VERSION)
        .header("Content-Type", "application/octet-stream")
        .body(packet.to_vec())
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn delivered(hub: &Hub) -> u64 {
    metric(
        &scrape(&hub.metrics),
        "kirq_hub_delivered_packets_total{class=\"pull\"} ",
    )
    .unwrap_or(0)
}

/// Waits until every daemon's pool is within `REFILL` of its target (no pull due) and no packet
/// moves between two looks.
fn settle(members: &[Member], what: &str) -> Vec<u64> {
    let mut last = Vec::new();
    wait_for(Duration::from_secs(180), what, || {
        let full = members.iter().all(|m| {
            m.health()["pool"]["total_bytes"].as_u64().unwrap_or(0) > POOL_TARGET - REFILL
        });
        let now: Vec<u64> = members.iter().map(Member::accepted).collect();
        let still = full && now == last;
        last = now;
        if !still {
            std::thread::sleep(Duration::from_millis(500));
        }
        still
    });
    last
}

#[test]
fn fifty_daemons_two_hubs_one_owner_per_packet_and_failover_without_fallback() {
    raise_own_nofile();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hub_ca = Ca::new("fleet hub CA").unwrap();
    let daemon_ca = Ca::new("fleet daemon CA").unwrap();
    write_new(&root.join("hub-ca.pem"), hub_ca.cert_pem(), 0o644).unwrap();
    write_new(&root.join("daemon-ca.pem"), daemon_ca.cert_pem(), 0o644).unwrap();
    let mut hubs = Vec::new();
    for id in ["hub-1", "hub-2"] {
        let leaf = hub_ca.issue(id, &["localhost", "127.0.0.1"]).unwrap();
        write_leaf(root, id, &leaf);
        SigningKey::generate()
            .write_pair(root, &format!("{id}-signing"))
            .unwrap();
        let (port, metrics) = (free_port(), free_port());
        let cfg = hub_config(root, id, port, metrics);
        let log = root.join(format!("{id}.log"));
        let proc = Proc::spawn(
            env!("CARGO_BIN_EXE_kirq-hub"),
            &["run", "--config", cfg.to_str().unwrap()],
            &log,
            &[],
        );
        wait_for_port(port, Duration::from_secs(30), "a hub's pull listener");
        hubs.push(Hub {
            id,
            port,
            metrics: format!("http://127.0.0.1:{metrics}/metrics"),
            proc: Some(proc),
        });
    }

    // 50 daemons: even ones named by DNS name, odd ones by SPIFFE ID only; the first half
    // lists hub-1 first, the second half hub-2.
    let mut members = Vec::new();
    for i in 0..DAEMONS {
        let id = format!("kirqd-{i:02}");
        let dir = root.join(&id);
        std::fs::create_dir(&dir).unwrap();
        let sans = ["localhost", "127.0.0.1"];
        let leaf = if i % 2 == 0 {
            daemon_ca.issue(&id, &sans).unwrap()
        } else {
            let uri = kirq::tls::spiffe_daemon_id(TRUST_DOMAIN, &id);
            daemon_ca.issue_uri(&uri, &sans).unwrap()
        };
        write_leaf(&dir, &id, &leaf);
        let order = if i < DAEMONS / 2 {
            [hubs[0].port, hubs[1].port]
        } else {
            [hubs[1].port, hubs[0].port]
        };
        let (receive, http) = (free_port(), free_port());
        daemon_config(root, &dir, &id, (receive, http), order);
        let cfg = dir.join("kirqd.toml");
        let proc = Proc::spawn(
            env!("CARGO_BIN_EXE_kirqd"),
            &["run", "--config", cfg.to_str().unwrap()],
            &dir.join("kirqd.log"),
            &[],
        );
        members.push(Member {
            id,
            dir,
            http,
            receive,
            _proc: proc,
        });
    }
    let started = std::time::Instant::now();
    let accepted = settle(&members, "all 50 daemons to fill their pools from the hubs");
    eprintln!(
        "{DAEMONS} daemons filled to {POOL_TARGET} B in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Every packet a hub delivered was admitted by exactly one daemon: the counts match and no
    // daemon refused anything.
    let from_hubs: Vec<u64> = hubs.iter().map(delivered).collect();
    let admitted: u64 = accepted.iter().sum();
    eprintln!("hubs delivered {from_hubs:?}, daemons admitted {admitted}");
    assert!(
        from_hubs.iter().all(|&n| n > 0),
        "both hubs serve: {from_hubs:?}"
    );
    assert_eq!(from_hubs.iter().sum::<u64>(), admitted);
    for m in &members {
        let rejected: u64 = m
            .metrics()
            .lines()
            .filter(|l| l.starts_with("kirq_packets_rejected_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(rejected, 0, "{} refused packets", m.id);
    }

    // A certificate pulls for the id it names and no other; a malformed id is refused.
    let (a, b) = (&members[0], &members[1]);
    let ca = root.join("hub-ca.pem");
    let as_a = mtls_client(&a.dir, &a.id, &ca);
    let as_b = mtls_client(&b.dir, &b.id, &ca);
    assert_eq!(
        pull(&as_a, hubs[1].port, &b.id).0,
        403,
        "DNS cert, other id"
    );
    assert_eq!(
        pull(&as_b, hubs[1].port, &a.id).0,
        403,
        "SPIFFE cert, other id"
    );
    assert_eq!(pull(&as_a, hubs[1].port, "../kirqd-00").0, 400, "bad id");
    assert_eq!(pull(&as_a, hubs[1].port, "").0, 400, "empty id");

    // A packet captured on its way to `a` is refused by `b`, admitted by `a` once, then refused
    // by `a` as a replay.
    let (status, frames) = pull(&as_a, hubs[1].port, &a.id);
    assert_eq!(status, 200);
    let captured = &frames[0];
    let as_hub = mtls_client(root, "hub-2", &root.join("daemon-ca.pem"));
    let (s, body) = push(&as_hub, b, captured);
    assert_eq!((s, body["reason"].as_str()), (400, Some("wrong_recipient")));
    let (s, body) = push(&as_hub, a, captured);
    assert_eq!(
        s, 200,
        "the captured packet, first time at its recipient: {body}"
    );
    let (s, body) = push(&as_hub, a, captured);
    assert_eq!((s, body["reason"].as_str()), (400, Some("replayed")));

    // Serve every pool once, then kill hub-1: all daemons refill from hub-2 (the first half
    // fails over), none falls back to local entropy, and no byte is served twice.
    let plain = reqwest::blocking::Client::new();
    let mut served = Vec::new();
    for m in &members {
        assert!(m.drain(&plain, &mut served) > 0, "{} served nothing", m.id);
    }
    eprintln!(
        "served every pool once at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let before = settle(&members, "the daemons to refill after the drain");
    eprintln!("refilled at {:.1} s", started.elapsed().as_secs_f64());
    let hub2_before = delivered(&hubs[1]);
    hubs[0].proc.take().unwrap().kill();
    eprintln!("killed {}", hubs[0].id);
    for m in &members {
        assert!(m.drain(&plain, &mut served) > 0, "{} served nothing", m.id);
    }
    eprintln!(
        "served every pool again at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let after = settle(&members, "the daemons to refill from hub-2 alone");
    eprintln!("refilled at {:.1} s", started.elapsed().as_secs_f64());
    let gained: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "every daemon admitted again"
    );
    assert_eq!(delivered(&hubs[1]) - hub2_before, gained, "all from hub-2");
    for (i, m) in members.iter().enumerate() {
        let h = m.health();
        let why = || format!("{}: {h}\n{}", m.id, m.log_tail());
        assert_eq!(h["fallback_active"], false, "{}", why());
        if i < DAEMONS / 2 {
            // It pulled from hub-1, found it gone and moved on. (The other half has had no
            // reason to ask hub-1 since it died: what it says about hub-1 is its last answer.)
            assert_eq!(h["hubs"][0]["reachable"], false, "{}", why());
            assert_eq!(h["hubs"][1]["reachable"], true, "{}", why());
        } else {
            assert_eq!(h["hubs"][0]["reachable"], true, "{}", why());
        }
    }
    eprintln!(
        "after the kill: {gained} packets from hub-2; {} outputs checked",
        served.len()
    );
    assert_no_repeated_window(&served);
}
