//! `kirqd status` and `kirq-hub status` against real running programs: a healthy hub and daemon
//! (the hub signing with an ML-DSA-65 key, so this is also that key's end-to-end path), and the
//! degraded, unreachable and unusable cases with their exit codes.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use kirq::crypto::sig::{HubSigningKey, PacketSigner, SigAlg};

/// Runs a status command; returns (exit code, stdout).
fn status(bin: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin)
        .arg("status")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8(out.stdout).unwrap(),
    )
}

const KIRQD: &str = env!("CARGO_BIN_EXE_kirqd");
const HUB: &str = env!("CARGO_BIN_EXE_kirq-hub");

/// Replaces the fleet's Falcon-512 hub key with an ML-DSA-65 one made by `kirq-hub keygen --alg
/// ml-dsa-65` in the same files, so the hub signs with it and the daemon trusts it from
/// `trust.hub_keys` as before. Also checks that keygen's default is Falcon-512.
fn use_ml_dsa_hub_key(fleet: &Fleet) -> HubSigningKey {
    std::fs::remove_file(fleet.path("hub-signing.key")).unwrap();
    std::fs::remove_file(fleet.path("hub-signing.pub")).unwrap();
    let keygen = |args: &[&str]| {
        let out = Command::new(HUB)
            .args(["keygen", "--out", fleet.dir.path().to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = keygen(&["--name", "hub-signing", "--alg", "ml-dsa-65"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ml-dsa-65, key id"), "{out}");
    let (code, _) = keygen(&["--name", "default-alg"]);
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(fleet.path("default-alg.pub")).unwrap();
    assert!(text.starts_with("falcon512-public:"), "{text}");
    assert_eq!(keygen(&["--name", "x", "--alg", "rsa"]).0, Some(2));
    let key = HubSigningKey::load(&fleet.path("hub-signing.key")).unwrap();
    assert_eq!(key.sig_alg(), SigAlg::MlDsa65);
    key
}

#[test]
fn healthy_hub_and_daemon_report_ok_in_text_and_json() {
    let fleet = Fleet::new();
    let key = use_ml_dsa_hub_key(&fleet);
    let mport = free_port();
    let hub_cfg =
        fleet.hub_config_with(true, &format!("metrics_listen = \"127.0.0.1:{mport}\""), "");
    let dcfg = fleet.daemon_config(true, "");
    let _hub = hub(&fleet, &hub_cfg, &[]);
    let _d = kirqd(&fleet, &dcfg, &[]);
    let base = fleet.http("");

    // Healthy once ML-DSA-signed packets have filled the pool above its watermark and the
    // daemon has heard from its hub.
    let mut last = (0, String::new());
    wait_for(Duration::from_secs(60), "kirqd status to say ok", || {
        last = status(KIRQD, &["--url", &base]);
        last.0 == 0
    });
    let text = last.1;
    assert!(text.starts_with("kirqd kirqd-1: OK (exit 0)\n"), "{text}");
    for part in [
        "by provenance",
        "local ",
        &format!("https://localhost:{} reachable", fleet.hub_port),
        "last packet",
        "fallback      inactive",
        "device        off",
        "kernel feeder off",
        &format!("hub:{} up", key.key_id()),
    ] {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }

    let (code, out) = status(KIRQD, &["--config", dcfg.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["reasons"], serde_json::json!([]));
    assert!(v["health"]["pool"]["total_bytes"].as_u64().unwrap() >= 1024);
    // Every packet was accepted under the ML-DSA-65 key; none refused.
    assert!(v["stats"]["packets_accepted"].as_u64().unwrap() > 0);
    let rejected = v["stats"]["packets_rejected"].as_object().unwrap();
    assert!(rejected.values().all(|n| n == 0), "{rejected:?}");

    let hub_base = format!("http://127.0.0.1:{mport}");
    let (code, text) = status(HUB, &["--url", &hub_base]);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("kirq-hub hub-1: OK (exit 0)\n"), "{text}");
    assert!(
        text.contains(&format!("{} (ml-dsa-65)", key.key_id())),
        "{text}"
    );
    assert!(text.contains("mode hybrid"), "{text}");
    let (code, out) = status(HUB, &["--config", hub_cfg.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["health"]["sig_alg"], "ml-dsa-65");
    assert_eq!(v["health"]["key_id"], key.key_id().to_string());
}

#[test]
fn degraded_unreachable_and_bad_addresses_exit_non_zero() {
    let fleet = Fleet::new();
    // A daemon whose hub is not running: it falls back to local entropy after 1 s, loudly.
    let dcfg = fleet.daemon_config(true, "[fallback]\nenabled = true\nafter_secs = 1\n");
    let mut d = kirqd(&fleet, &dcfg, &[]);
    let base = fleet.http("");
    wait_for(Duration::from_secs(30), "the fallback", || {
        get_json(&fleet.http("/api/rng/health"))["fallback_active"] == true
    });
    let (code, text) = status(KIRQD, &["--url", &base]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.starts_with("kirqd kirqd-1: DEGRADED (exit 1)\n"),
        "{text}"
    );
    assert!(text.contains("! fallback active"), "{text}");
    assert!(
        text.contains(&format!(
            "! hub https://localhost:{} unreachable",
            fleet.hub_port
        )),
        "{text}"
    );
    assert!(text.contains("fallback      ACTIVE"), "{text}");
    let (code, out) = status(KIRQD, &["--url", &base, "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["exit_code"].as_u64()),
        (Some("degraded"), Some(1))
    );
    assert!(
        v["health"]["pool"]["by_provenance"]["local"]
            .as_u64()
            .unwrap()
            > 0
    );

    // A hub with a source that fails (a device that is not there) beside the OS RNG.
    let mport = free_port();
    let hub_cfg = fleet.hub_config_with(
        true,
        &format!("metrics_listen = \"127.0.0.1:{mport}\""),
        "[[sources]]\ntype = \"device\"\nid = \"gone\"\npath = \"/nonexistent/kirq-status-test\"\n",
    );
    let _hub = hub(&fleet, &hub_cfg, &[]);
    let hub_base = format!("http://127.0.0.1:{mport}");
    let mut last = (0, String::new());
    wait_for(
        Duration::from_secs(30),
        "kirq-hub status to see the failed source",
        || {
            last = status(HUB, &["--url", &hub_base]);
            last.0 == 1
        },
    );
    assert!(
        last.1.starts_with("kirq-hub hub-1: DEGRADED (exit 1)\n"),
        "{}",
        last.1
    );
    assert!(last.1.contains("! source gone:"), "{}", last.1);

    // Nothing listening: unknown, 3, in both forms; so is an address that is not one.
    d.kill();
    let (code, text) = status(KIRQD, &["--url", &base]);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("UNKNOWN (exit 3)") && text.contains("not reachable"),
        "{text}"
    );
    let (code, out) = status(KIRQD, &["--url", &base, "--json"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["exit_code"], 3);
    assert_eq!(status(KIRQD, &["--url", "https://127.0.0.1:1"]).0, 3);
    let closed = format!("http://127.0.0.1:{}", free_port());
    assert_eq!(status(HUB, &["--url", &closed]).0, 3);
    // A hub config without metrics_listen has no local health endpoint to read.
    let bare = fleet.hub_config(false);
    let (code, out) = status(HUB, &["--config", bare.to_str().unwrap(), "--json"]);
    assert_eq!(code, 3);
    assert!(out.contains("metrics_listen is not set"), "{out}");
}
