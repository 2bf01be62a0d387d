//! `kirqd demo`: a hub and a daemon in one process, on loopback, over real mutual TLS.
//!
//! Everything is made fresh at start in a private temporary directory (mode 0700, removed on
//! exit): a Falcon-512 hub key, two development CAs and their certificates, and both configs. The
//! hub's only source is `local` (the OS RNG), so everything the demo serves is honestly marked
//! `local`: the demo shows the delivery path, not quantum entropy. For the same reason the demo
//! lets its VRF key be made from `local` pool bytes.

pub mod testing;

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{
    DaemonConfig, DaemonEndpoint, DeviceConfig, DeviceMode, FallbackConfig, HealthConfig,
    HttpConfig, HubConfig, HubEndpoint, HubTlsConfig, KernelFeedConfig, PoolConfig, ReceiveConfig,
    SourceConfig, TrustConfig,
};
use crate::crypto::falcon::SigningKey;

const HUB_ID: &str = "demo-hub";
const DAEMON_ID: &str = "demo-kirqd";

/// A free loopback port to put in a config before the listener exists.
///
/// Picked at random below Linux's ephemeral range (32768-60999): a port the kernel handed out and
/// took back could be given to an outgoing connection before our listener binds it.
///
/// A port is handed out once per process: threads that each pick ports and only later start the
/// listeners (tests running in parallel) cannot pick the same one.
pub fn free_port() -> std::io::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..200 {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
        let port = 20_000 + u16::from_le_bytes(b) % 12_000;
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Configs for one hub and one daemon that trust each other, with all files in `dir`.
pub fn configs(dir: &Path, http: Option<SocketAddr>) -> anyhow::Result<(HubConfig, DaemonConfig)> {
    let key = SigningKey::generate();
    key.write_pair(dir, "hub-signing")?;
    crate::pki::write_dev_pki(dir, &[HUB_ID], &[DAEMON_ID])?;
    let hub_port = free_port()?;
    let daemon_port = free_port()?;
    let hub = HubConfig {
        id: HUB_ID.into(),
        signing_key: dir.join("hub-signing.key"),
        packet_bytes: 4096,
        push_interval_ms: 1000,
        packet_lifetime_ms: 60_000,
        tls: HubTlsConfig {
            cert: dir.join(format!("{HUB_ID}.crt")),
            key: dir.join(format!("{HUB_ID}.key")),
            daemon_ca: dir.join("daemon-ca.pem"),
            pq_only: false,
            spiffe_trust_domain: None,
        },
        listen: SocketAddr::from(([127, 0, 0, 1], hub_port)),
        metrics_listen: None,
        daemons: vec![DaemonEndpoint {
            id: DAEMON_ID.into(),
            url: Some(format!("https://localhost:{daemon_port}")),
        }],
        sources: vec![SourceConfig::local("local")],
        health: HealthConfig::default(),
        hybrid: Default::default(),
        decentralized: None,
        proof: Default::default(),
        limits: Default::default(),
    };
    let daemon = DaemonConfig {
        id: DAEMON_ID.into(),
        trust: TrustConfig {
            hub_keys: vec![dir.join("hub-signing.pub")],
            require_proof: false,
            nodes: Vec::new(),
            min_node_quorum: 0,
            max_clock_skew_ms: crate::verify::DEFAULT_MAX_SKEW_MS,
            replay_cache_entries: crate::verify::DEFAULT_REPLAY_CAPACITY,
            replay_state_file: Some(dir.join("replay.state")),
        },
        receive: ReceiveConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], daemon_port)),
            cert: dir.join(format!("{DAEMON_ID}.crt")),
            key: dir.join(format!("{DAEMON_ID}.key")),
            hub_ca: dir.join("hub-ca.pem"),
            pq_only: false,
            max_body_bytes: crate::wire::MAX_PACKET_BYTES,
        },
        hubs: vec![HubEndpoint {
            url: format!("https://localhost:{hub_port}"),
        }],
        pool: PoolConfig::default(),
        fallback: FallbackConfig::default(),
        http: HttpConfig {
            listen: http,
            ..HttpConfig::default()
        },
        health: HealthConfig::default(),
        persist: Default::default(),
        quantum: None,
        device: DeviceConfig {
            mode: DeviceMode::Off,
            ..DeviceConfig::default()
        },
        kernel: KernelFeedConfig::default(),
    };
    hub.validate()?;
    daemon.validate()?;
    Ok((hub, daemon))
}

/// The demo's `[quantum]` section: keys in `keys` (state dir, at-rest key file) or, without it,
/// in `dir` under a fresh at-rest key. The demo hub's only source is `local`, so the VRF key may
/// be made from `local` entropy here, which a production config does not allow by default.
pub fn quantum_config(
    dir: &Path,
    keys: Option<(PathBuf, PathBuf)>,
) -> anyhow::Result<crate::config::QuantumConfig> {
    let (state_dir, key_file) = match keys {
        Some(k) => k,
        None => {
            let key_file = dir.join("at-rest.key");
            let mut key = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(&mut key[..]).map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_file)?
                .write_all(&key[..])?;
            (dir.join("quantum"), key_file)
        }
    };
    let mut q = crate::config::QuantumConfig::new(state_dir);
    q.at_rest_key_file = Some(key_file);
    q.keygen_provenance = crate::wire::Provenance::ALL.to_vec();
    q.validate()?;
    Ok(q)
}

/// Runs the demo until Ctrl-C. `keys` = (state dir, at-rest key file) keeps the quantum keys.
/// With `device_dir`, the pool is also served as `<device_dir>/kirq-rng`: a FUSE file, or with
/// `cuse` a symlink to the CUSE node /dev/kirq-rng.
pub async fn run(
    listen: SocketAddr,
    keys: Option<(PathBuf, PathBuf)>,
    device_dir: Option<PathBuf>,
    cuse: bool,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("kirq-demo-").tempdir()?;
    let (hub_cfg, mut daemon_cfg) = configs(dir.path(), Some(listen))?;
    daemon_cfg.quantum = Some(quantum_config(dir.path(), keys)?);
    if let Some(d) = &device_dir {
        daemon_cfg.device.mode = if cuse {
            DeviceMode::Cuse
        } else {
            DeviceMode::Fuse
        };
        daemon_cfg.device.mountpoint = Some(d.clone());
    }
    let key = SigningKey::load(&hub_cfg.signing_key)?;
    let key_id = key.verifying_key().id();
    let hardening = crate::secret::harden_process();
    crate::service::log_hardening(hardening);
    let hub = crate::hub::start(hub_cfg, key).await?;
    let daemon = crate::daemon::start(daemon_cfg, hardening).await?;
    let http = daemon.http_addr.unwrap_or(listen);
    let device = daemon.daemon.device_status.borrow().clone();
    let mut link = None;
    if let (Some(d), Some(node)) = (&device_dir, &device.path)
        && device.mode == crate::device::Face::Cuse
    {
        let l = d.join(&daemon.daemon.cfg.device.name);
        std::fs::create_dir_all(d)?;
        let _ = std::fs::remove_file(&l);
        std::os::unix::fs::symlink(node, &l)?;
        link = Some(l);
    }
    println!("Kirq demo running (Ctrl-C to stop)");
    println!(
        "  hub     {HUB_ID}: Falcon-512 key {key_id}, source `local` (OS RNG), pull on https://{}",
        hub.pull_addr
    );
    println!(
        "  kirqd   {DAEMON_ID}: receives packets over mutual TLS 1.3 (X25519MLKEM768) on https://{}",
        daemon.receive_addr
    );
    println!("  serving the HTTP API on http://{http}");
    println!();
    println!(
        "  curl -s -X POST http://{http}/api/rng/random -H 'content-type: application/json' -d '{{\"num_bytes\":32}}'"
    );
    println!("  curl -s http://{http}/api/rng/health");
    println!("  curl -s http://{http}/api/rng/stats");
    println!("  curl -s http://{http}/metrics");
    println!(
        "  curl -s -X POST http://{http}/quantum/vrf -H 'content-type: application/json' -d '{{\"alpha\":\"68656c6c6f\"}}'"
    );
    println!(
        "  curl -s -X POST http://{http}/quantum/falcon-signature -H 'content-type: application/json' -d '{{\"message\":\"68656c6c6f\"}}'"
    );
    println!("  curl -s http://{http}/openapi.json");
    if let Some(p) = link.as_ref().or(device.path.as_ref()) {
        println!();
        println!("  the pool as a device ({}): {}", device.mode, p.display());
        println!("  head -c 32 {} | od -An -tx1", p.display());
    }
    println!();
    let d = daemon.daemon.clone();
    let reporter = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let s = d.pool.snapshot();
            println!(
                "pool {} bytes | admitted {} | served {} | packets accepted {} | fallback {}",
                s.total_bytes,
                s.admitted_bytes_total,
                s.served_bytes_total,
                d.metrics.packets_accepted.get(),
                if d.supply.fallback.active() {
                    "ACTIVE"
                } else {
                    "off"
                },
            );
        }
    });
    crate::service::shutdown_signal().await;
    println!("stopping");
    reporter.abort();
    if let Some(l) = link {
        let _ = std::fs::remove_file(l);
    }
    daemon.shutdown().await?;
    hub.stop();
    Ok(())
}
