//! End to end over real sockets: kirq-hub and kirqd as separate processes, mutual TLS on loopback.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use common::*;

#[test]
fn hub_process_delivers_and_daemon_serves_over_http() {
    let f = Fleet::new();
    let _d = kirqd(
        &f,
        &f.daemon_config(true, "[fallback]\nenabled = false"),
        &[],
    );
    let _h = hub(&f, &f.hub_config(true), &[]);
    wait_for(Duration::from_secs(20), "packets admitted", || {
        get_json(&f.http("/api/rng/stats"))["packets_accepted"].as_u64() > Some(0)
    });
    let (status, body) = random(&f, serde_json::json!({ "num_bytes": 32 }));
    assert_eq!(status, 200, "{body}");
    let data = body["random_data"].as_str().unwrap();
    assert_eq!(data.len(), 64);
    assert!(hex::decode(data).is_ok());
    assert_eq!(body["consumed"], true);
    assert_eq!(body["num_bytes"], 32);
    // The hub's only source is the OS RNG: honestly marked local.
    assert_eq!(body["source"], "local");
    let (status, body) = random(
        &f,
        serde_json::json!({ "num_bytes": 48, "encoding": "base64" }),
    );
    assert_eq!(status, 200);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body["random_data"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 48);
    wait_for(Duration::from_secs(10), "a pull from the hub", || {
        get_json(&f.http("/api/rng/health"))["hubs"][0]["reachable"] == true
    });
    let health = get_json(&f.http("/api/rng/health"));
    assert_eq!(health["fallback_active"], false);
    assert!(health["pool"]["by_provenance"]["local"].as_u64().unwrap() > 0);
    let metrics = reqwest::blocking::get(f.http("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    for name in [
        "entropy_pool_bytes ",
        "entropy_requests_total{",
        "entropy_quality_score_bucket{",
        "kirq_packets_rejected_total{reason=\"bad_signature\"}",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
}

#[test]
fn bad_requests_name_the_field_and_cost_nothing() {
    let f = Fleet::new();
    let _d = kirqd(
        &f,
        &f.daemon_config(false, "[fallback]\nenabled = false"),
        &[],
    );
    f.feed(1, 4096);
    for (body, field) in [
        (serde_json::json!({}), "num_bytes"),
        (serde_json::json!({ "num_bytes": 0 }), "num_bytes"),
        (serde_json::json!({ "num_bytes": 65537 }), "num_bytes"),
        (serde_json::json!({ "num_bytes": "8" }), "num_bytes"),
        (
            serde_json::json!({ "num_bytes": 8, "encoding": "hexx" }),
            "encoding",
        ),
        (
            serde_json::json!({ "num_bytes": 8, "source": "moon" }),
            "source",
        ),
        (serde_json::json!({ "num_bytes": 8, "extra": 1 }), "extra"),
    ] {
        let (status, resp) = random(&f, body.clone());
        assert_eq!(status, 400, "{body}");
        assert!(
            resp["error"].as_str().unwrap().contains(field),
            "{body} -> {resp}"
        );
    }
    let big = format!("{{\"num_bytes\": 8, \"pad\": \"{}\"}}", "x".repeat(5000));
    let r = reqwest::blocking::Client::new()
        .post(f.http("/api/rng/random"))
        .body(big)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("max_request_bytes"),
        "{v}"
    );
    let (status, _) = random(&f, serde_json::json!({ "num_bytes": 8, "source": "hsm" }));
    assert_eq!(status, 503, "no hsm bytes in the pool");
    // A request larger than the pool: 503 with Retry-After, nothing consumed.
    let r = reqwest::blocking::Client::new()
        .post(f.http("/api/rng/random"))
        .json(&serde_json::json!({ "num_bytes": 5000 }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let stats = get_json(&f.http("/api/rng/stats"));
    assert_eq!(stats["bytes_served_total"], 0, "{stats}");
    assert_eq!(
        get_json(&f.http("/api/rng/health"))["pool"]["total_bytes"],
        4096
    );
    // Packets go only to the mutual-TLS listener.
    let r = reqwest::blocking::Client::new()
        .post(f.http("/api/rng/receive"))
        .body(vec![0u8; 10])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[test]
fn concurrent_consumers_drain_the_pool_each_byte_once() {
    let f = Fleet::new();
    let _d = kirqd(
        &f,
        &f.daemon_config(false, "[fallback]\nenabled = false"),
        &[],
    );
    f.feed(32, 16 * 1024);
    let admitted = 32 * 16 * 1024u64;
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let url = f.http("/api/rng/random");
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::new();
                let mut got = Vec::new();
                let mut n = 100 + t * 997;
                loop {
                    let r = c
                        .post(&url)
                        .json(&serde_json::json!({ "num_bytes": n }))
                        .send()
                        .unwrap();
                    let status = r.status().as_u16();
                    let body: serde_json::Value = r.json().unwrap();
                    if status == 503 {
                        // Smaller requests may still fit; stop at one byte.
                        if n == 1 {
                            return got;
                        }
                        n = (n / 2).max(1);
                        continue;
                    }
                    assert_eq!(status, 200, "{body}");
                    got.push(hex::decode(body["random_data"].as_str().unwrap()).unwrap());
                    n = n * 7 % 6000 + 1;
                }
            })
        })
        .collect();
    let outputs: Vec<Vec<u8>> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let served: u64 = outputs.iter().map(|o| o.len() as u64).sum();
    assert_eq!(
        served, admitted,
        "served must equal admitted exactly once the pool is drained"
    );
    let stats = get_json(&f.http("/api/rng/stats"));
    assert_eq!(stats["bytes_served_total"], served);
    assert_eq!(stats["bytes_admitted_total"], admitted);
    let mut windows = HashSet::new();
    for o in &outputs {
        for w in o.windows(16) {
            assert!(
                windows.insert(w.to_vec()),
                "a 16-byte window was served twice"
            );
        }
    }
}

#[test]
fn fallback_engages_when_the_hub_stops_and_recovers_when_it_returns() {
    let f = Fleet::new();
    let _d = kirqd(
        &f,
        &f.daemon_config(true, "[fallback]\nafter_secs = 2\nfill_bytes = 8192"),
        &[],
    );
    let mut h = hub(&f, &f.hub_config(false), &[]);
    wait_for(Duration::from_secs(20), "pulled packets", || {
        get_json(&f.http("/api/rng/stats"))["packets_accepted"].as_u64() > Some(0)
    });
    assert_eq!(
        get_json(&f.http("/api/rng/health"))["fallback_active"],
        false
    );
    h.kill();
    // Drain what the hub delivered so the fallback has room to show itself.
    loop {
        let left = get_json(&f.http("/api/rng/health"))["pool"]["total_bytes"]
            .as_u64()
            .unwrap();
        if left == 0 {
            break;
        }
        let (status, body) = random(&f, serde_json::json!({ "num_bytes": left.min(65536) }));
        assert_eq!(status, 200, "{body}");
    }
    let t0 = std::time::Instant::now();
    wait_for(Duration::from_secs(10), "fallback_active", || {
        get_json(&f.http("/api/rng/health"))["fallback_active"] == true
    });
    let waited = t0.elapsed();
    let health = get_json(&f.http("/api/rng/health"));
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["hubs"][0]["reachable"], false, "{health}");
    wait_for(Duration::from_secs(5), "local fallback bytes", || {
        get_json(&f.http("/api/rng/health"))["pool"]["fallback_bytes"].as_u64() > Some(0)
    });
    let (status, body) = random(
        &f,
        serde_json::json!({ "num_bytes": 64, "source": "local" }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "local");
    let metrics = reqwest::blocking::get(f.http("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("kirq_fallback_active 1"), "{metrics}");
    let log = std::fs::read_to_string(f.path("kirqd.log")).unwrap();
    assert!(
        log.contains("ALERT: no verified packet from any hub"),
        "the fallback must be loud:\n{log}"
    );

    let accepted_before = get_json(&f.http("/api/rng/stats"))["packets_accepted"]
        .as_u64()
        .unwrap();
    let _h2 = hub(&f, &f.hub_config(false), &[]);
    wait_for(Duration::from_secs(15), "recovery from fallback", || {
        get_json(&f.http("/api/rng/health"))["fallback_active"] == false
    });
    wait_for(Duration::from_secs(15), "hub packets again", || {
        get_json(&f.http("/api/rng/stats"))["packets_accepted"].as_u64() > Some(accepted_before)
    });
    eprintln!("fallback engaged {waited:?} after the pool drained (after_secs = 2)");
}

/// Runs a whole session at trace level and checks that no served byte sequence and no key
/// material appears in either program's log.
#[test]
fn no_secret_reaches_the_logs_at_trace_level() {
    let f = Fleet::new();
    let trace = [("RUST_LOG", "trace")];
    let mut d = kirqd(
        &f,
        &f.daemon_config(true, "[fallback]\nenabled = false"),
        &trace,
    );
    let mut h = hub(&f, &f.hub_config(true), &trace);
    wait_for(Duration::from_secs(20), "packets admitted", || {
        get_json(&f.http("/api/rng/stats"))["packets_accepted"].as_u64() > Some(2)
    });
    let mut served = Vec::new();
    for i in 0..40 {
        let enc = if i % 2 == 0 { "hex" } else { "base64" };
        let (status, body) = random(&f, serde_json::json!({ "num_bytes": 48, "encoding": enc }));
        assert_eq!(status, 200, "{body}");
        served.push(body["random_data"].as_str().unwrap().to_owned());
    }
    // Also push one packet by hand so its entropy is known.
    let pkt = f.packet(256);
    let known = hex::encode(pkt.entropy.expose());
    assert_eq!(f.push(&pkt).0, 200);
    d.terminate();
    h.terminate();
    let logs = format!("{}\n{}", d.log_text(), h.log_text());
    assert!(
        logs.len() > 10_000,
        "trace logging produced too little to be a real check"
    );
    let lower = logs.to_lowercase();
    let mut needles: Vec<String> = Vec::new();
    for s in &served {
        // Every 24-character window of what was served (12 bytes of hex, 18 of base64).
        for i in (0..s.len().saturating_sub(24)).step_by(4) {
            needles.push(s[i..i + 24].to_owned());
        }
    }
    for i in (0..known.len() - 24).step_by(8) {
        needles.push(known[i..i + 24].to_owned());
    }
    for file in ["hub-signing.key", "hub-1.key", "kirqd-1.key"] {
        let text = std::fs::read_to_string(f.path(file)).unwrap();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("-----"))
        {
            let body = line.split(':').next_back().unwrap_or(line);
            for i in (0..body.len().saturating_sub(24)).step_by(24) {
                needles.push(body[i..i + 24].to_owned());
            }
        }
    }
    assert!(needles.len() > 200);
    for n in &needles {
        assert!(
            !logs.contains(n.as_str()) && !lower.contains(&n.to_lowercase()),
            "secret material found in the logs"
        );
    }
}
