//! End-to-end proven delivery, hub → kirqd: a hub (one `local` source, proofs required) pushes
//! back to back over mutual TLS to a kirqd that requires a proof on every packet; the rate is the
//! entropy the daemon admits per second. The baseline is the same pair with proofs off (the
//! SHAKE256 mixer), measured in the same run, so the ratio is what proving costs end to end.
//!
//! Run: `cargo bench --bench proven_delivery` (about 2 minutes). Hub, daemon and prover share
//! this process and the machine's cores.

use std::time::{Duration, Instant};

use kirq::config::{ProofConfig, ProofMode};
use kirq::crypto::falcon::SigningKey;

/// Admitted bytes per second over `dur`, after a warm-up packet, for one hub/daemon pair.
async fn rate(packet: usize, proof: ProofMode, dur: Duration) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], kirq::demo::free_port().unwrap()));
    let (mut hub, mut daemon) = kirq::demo::configs(dir.path(), Some(http)).unwrap();
    hub.packet_bytes = packet;
    hub.push_interval_ms = 1;
    // The daemon's share (8 MiB/s by default) is policy, not a cost: lifted so the baseline
    // without proofs is the delivery path's rate.
    hub.limits.daemon_bytes_per_second = 1 << 40;
    hub.limits.daemon_burst_bytes = 1 << 40;
    hub.proof = ProofConfig {
        mode: proof,
        workers: 1,
        max_output_bytes: packet,
    };
    daemon.trust.require_proof = proof != ProofMode::Off;
    daemon.pool.capacity_bytes = 1 << 30;
    daemon.hubs.clear();
    let key = SigningKey::load(&hub.signing_key).unwrap();
    let d = kirq::daemon::start(
        daemon,
        kirq::secret::Hardening {
            no_core_dumps: false,
            memory_locked: false,
        },
    )
    .await
    .unwrap();
    let h = kirq::hub::start(hub, key).await.unwrap();
    let admitted = || d.daemon.pool.snapshot().admitted_bytes_total;
    while admitted() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (b0, t0) = (admitted(), Instant::now());
    tokio::time::sleep(dur).await;
    let (b1, t1) = (admitted(), Instant::now());
    let m = h.metrics.encode();
    let value = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let proofs = value("kirq_hub_proof_packets_total{proof=\"proven\"} ");
    let per_proof_ms = 1e3 * value("kirq_hub_proof_seconds_total ") / proofs.max(1.0);
    let proof_kb = value("kirq_hub_proof_bytes_total ") / proofs.max(1.0) / 1024.0;
    h.stop();
    d.stop();
    (
        (b1 - b0) as f64 / (t1 - t0).as_secs_f64(),
        per_proof_ms,
        proof_kb,
    )
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (sizes, dur): (&[usize], _) = if quick {
        println!("(smoke run from cargo test: numbers are meaningless; run cargo bench)");
        (&[448], Duration::from_secs(1))
    } else {
        // (2^k - 2) blocks of 56 bytes: each fills its trace of 2^k cycles.
        (&[7_056, 28_560, 114_576, 229_264], Duration::from_secs(15))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| packet | proven KB/s | baseline (no proof) KB/s | ratio | prove ms/packet | proof KB |"
    );
    println!("|---|---|---|---|---|---|");
    for &size in sizes {
        let (base, _, _) = rt.block_on(rate(size, ProofMode::Off, dur.min(Duration::from_secs(5))));
        let (proven, ms, kb) = rt.block_on(rate(size, ProofMode::Required, dur));
        assert!(proven > 0.0, "no proven bytes delivered");
        println!(
            "| {} B | {:.1} | {:.1} | {:.4} | {:.0} | {:.1} |",
            size,
            proven / 1e3,
            base / 1e3,
            proven / base,
            ms,
            kb
        );
    }
}
