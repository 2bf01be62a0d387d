use super::*;

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

const DAEMON: &str = r#"
id = "kirqd-1"
[trust]
hub_keys = ["hub.pub"]
[receive]
listen = "127.0.0.1:8443"
cert = "d.crt"
key = "d.key"
hub_ca = "hub-ca.pem"
[[hubs]]
url = "https://hub.example:8444"
"#;

#[test]
fn daemon_defaults_and_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let c = DaemonConfig::load(&write(dir.path(), DAEMON)).unwrap();
    assert_eq!(c.pool.capacity_bytes, 16 << 20);
    assert_eq!(c.pool.low_watermark_bytes, 1024);
    assert_eq!(c.pool.high_watermark(), 1 << 20);
    assert_eq!(c.fallback.after_secs, 30);
    assert_eq!(c.trust.max_clock_skew_ms, 5000);
    assert_eq!(c.health.alpha_exponent, 30);
    assert_eq!(c.http.listen.unwrap().to_string(), "127.0.0.1:8080");
    assert_eq!(c.trust.hub_keys[0], dir.path().join("hub.pub"));
}

#[test]
fn unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = DAEMON.replace("[trust]", "[trust]\nrequire_prooof = true");
    let e = DaemonConfig::load(&write(dir.path(), &text)).unwrap_err();
    assert!(matches!(e, ConfigError::Parse { .. }));
    let chain = format!("{:#}", anyhow::Error::from(e));
    assert!(chain.contains("require_prooof"), "{chain}");
}

#[test]
fn validation_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("id = \"kirqd-1\"", "id = \"bad id\"", "id"),
        (
            "url = \"https://hub.example:8444\"",
            "url = \"http://hub\"",
            "hubs.url",
        ),
        (
            "[[hubs]]",
            "[pool]\nlow_watermark_bytes = 99999999\n[[hubs]]",
            "pool.low_watermark_bytes",
        ),
        (
            "[[hubs]]",
            "[pool]\nhigh_watermark_bytes = 512\n[[hubs]]",
            "pool.high_watermark_bytes",
        ),
        (
            "[[hubs]]",
            "[fallback]\nafter_secs = 0\n[[hubs]]",
            "fallback.after_secs",
        ),
        ("[[hubs]]", "[http]\nallow = []\n[[hubs]]", "http.allow"),
        (
            "hub_keys = [\"hub.pub\"]",
            "hub_keys = []",
            "trust.hub_keys",
        ),
        (
            "hub_keys = [\"hub.pub\"]",
            "hub_keys = [\"hub.pub\"]\nmin_node_quorum = 1",
            "trust.min_node_quorum",
        ),
        (
            "hub_keys = [\"hub.pub\"]",
            "hub_keys = [\"hub.pub\"]\nmin_node_quorum = 1\n\
             [[trust.nodes]]\nid = \"n1\"\npublic_key = \"n1.pub\"",
            "trust.min_node_quorum",
        ),
        (
            "[receive]",
            "[[trust.nodes]]\nid = \"n 1\"\npublic_key = \"n.pub\"\n[receive]",
            "trust.nodes.id",
        ),
        (
            "[receive]",
            "[[trust.nodes]]\nid = \"n1\"\npublic_key = \"n.pub\"\n\
             [[trust.nodes]]\nid = \"n1\"\npublic_key = \"m.pub\"\n[receive]",
            "trust.nodes.id",
        ),
    ];
    for (from, to, key) in cases {
        let text = DAEMON.replace(from, to);
        match DaemonConfig::load(&write(dir.path(), &text)) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{to}"),
            other => panic!("{to}: expected Invalid({key}), got {other:?}"),
        }
    }
    // A node quorum without a required proof names both keys.
    let text = DAEMON.replace(
        "hub_keys = [\"hub.pub\"]",
        "hub_keys = [\"hub.pub\"]\nmin_node_quorum = 1\n[[trust.nodes]]\nid = \"n1\"\npublic_key = \"n1.pub\"",
    );
    let e = DaemonConfig::load(&write(dir.path(), &text))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trust.min_node_quorum") && e.contains("trust.require_proof"),
        "{e}"
    );
}

#[test]
fn hub_config_validates() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
id = "hub-1"
signing_key = "hub.key"
listen = "127.0.0.1:8444"
[tls]
cert = "h.crt"
key = "h.key"
daemon_ca = "daemon-ca.pem"
[[daemons]]
id = "kirqd-1"
url = "https://127.0.0.1:8443"
[[sources]]
type = "local"
"#;
    let c = HubConfig::load(&write(dir.path(), text)).unwrap();
    assert_eq!(c.sources[0].id(), "local");
    assert_eq!(c.packet_bytes, 4096);
    let dup = format!("{text}\n[[daemons]]\nid = \"kirqd-1\"\n");
    assert!(matches!(
        HubConfig::load(&write(dir.path(), &dup)),
        Err(ConfigError::Invalid {
            key: "daemons.id",
            ..
        })
    ));
    let big = text.replace("listen =", "packet_bytes = 99999999\nlisten =");
    assert!(matches!(
        HubConfig::load(&write(dir.path(), &big)),
        Err(ConfigError::Invalid {
            key: "packet_bytes",
            ..
        })
    ));
    // Proofs: off by default; sizes are whole 56-byte blocks within the bound.
    assert_eq!(c.proof.mode, ProofMode::Off);
    assert_eq!(c.proof.max_output_bytes % 56, 0);
    for (proof, key) in [
        ("mode = \"required\"\nworkers = 0", "proof.workers"),
        ("max_output_bytes = 1000", "proof.max_output_bytes"),
        ("max_output_bytes = 0", "proof.max_output_bytes"),
        ("max_output_bytes = 262192", "proof.max_output_bytes"),
    ] {
        let t = format!("{text}\n[proof]\n{proof}\n");
        match HubConfig::load(&write(dir.path(), &t)) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{proof}"),
            other => panic!("{proof}: expected Invalid({key}), got {other:?}"),
        }
    }
    let t = format!("{text}\n[proof]\nmode = \"always\"\n");
    assert!(matches!(
        HubConfig::load(&write(dir.path(), &t)),
        Err(ConfigError::Parse { .. })
    ));
    // A SPIFFE trust domain is a bare domain; a hub budget must hold one packet.
    assert_eq!(c.tls.spiffe_trust_domain, None);
    let t = text.replace(
        "[tls]\n",
        "[tls]\nspiffe_trust_domain = \"fleet.example\"\n",
    );
    let c2 = HubConfig::load(&write(dir.path(), &t)).unwrap();
    assert_eq!(c2.tls.spiffe_trust_domain.as_deref(), Some("fleet.example"));
    for (edit, key) in [
        (
            text.replace("[tls]\n", "[tls]\nspiffe_trust_domain = \"spiffe://x\"\n"),
            "tls.spiffe_trust_domain",
        ),
        (
            text.replace("[tls]\n", "[tls]\nspiffe_trust_domain = \"\"\n"),
            "tls.spiffe_trust_domain",
        ),
        (
            format!("{text}\n[limits]\nhub_bytes_per_second = 1000\nhub_burst_bytes = 100\n"),
            "limits.hub_burst_bytes",
        ),
        (
            format!("{text}\n[limits]\nconnections_per_peer = 0\n"),
            "limits.connections_per_peer",
        ),
        (
            format!("{text}\n[limits]\nconnections_per_peer = 16385\n"),
            "limits.connections_per_peer",
        ),
    ] {
        match HubConfig::load(&write(dir.path(), &edit)) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{edit}"),
            other => panic!("expected Invalid({key}), got {other:?}"),
        }
    }
    assert_eq!(c.limits.hub_bytes_per_second, 0, "no hub budget by default");
    assert_eq!(c.limits.connections_per_peer, 32);
    let t = format!("{text}\n[limits]\nconnections_per_peer = 512\n");
    let c3 = HubConfig::load(&write(dir.path(), &t)).unwrap();
    assert_eq!(c3.limits.connections_per_peer, 512);
    let t = format!("{text}\n[proof]\nmode = \"when_idle\"\nmax_output_bytes = 262136\n");
    assert_eq!(
        HubConfig::load(&write(dir.path(), &t)).unwrap().proof.mode,
        ProofMode::WhenIdle
    );
}
