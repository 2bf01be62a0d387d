//! A hub with several real sources (a loopback QRNG service in the Quantis preset's shape, a
//! pty standing in for a serial RNG, the OS RNG) runs end to end into kirqd over mutual TLS: the
//! daemon admits hybrid packets, and the hub's /health and /metrics tell the hybrid state.
// Helpers outside #[test] fns unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Query;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use common::{https_server, random};
use kirq::config::{BelowMin, HybridConfig, SourceConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_with_real_sources_delivers_hybrid_packets_to_kirqd() {
    // The QRNG service.
    let router = Router::new().route(
        "/api/2.0/streambytes",
        get(|q: Query<HashMap<String, String>>| async move {
            let n: usize = q["size"].parse().unwrap();
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                random(n),
            )
                .into_response()
        }),
    );
    let qrng = https_server(router).await;
    // The serial RNG: a pty whose far end streams random bytes.
    let pty = nix::pty::openpty(None, None).unwrap();
    let tty = nix::unistd::ttyname(&pty.slave).unwrap();
    let mut master = std::fs::File::from(pty.master);
    // Left running when the test ends: it blocks once nobody reads the pty.
    std::thread::spawn(move || {
        while master.write_all(&random(4096)).is_ok() {
            std::thread::sleep(Duration::from_millis(2));
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let (mut hub_cfg, daemon_cfg) = kirq::demo::configs(dir.path(), None).unwrap();
    let sources = format!(
        "[[sources]]\ntype = \"rest\"\nid = \"quantis\"\npreset = \"quantis\"\n\
         base_url = \"{}\"\nca_cert = \"{}\"\nweight = 2\n\
         [[sources]]\ntype = \"device\"\nid = \"truerng\"\npath = \"{}\"\n\
         min_entropy_per_byte = 6\n\
         [[sources]]\ntype = \"local\"\nid = \"os\"\n",
        qrng.base(),
        qrng.ca_path.display(),
        tty.display()
    );
    #[derive(serde::Deserialize)]
    struct Sources {
        sources: Vec<SourceConfig>,
    }
    hub_cfg.sources = toml::from_str::<Sources>(&sources).unwrap().sources;
    hub_cfg.hybrid = HybridConfig {
        min_sources: 3,
        below_min: BelowMin::Stop,
    };
    hub_cfg.push_interval_ms = 100;
    let metrics_port = kirq::demo::free_port().unwrap();
    hub_cfg.metrics_listen = Some(([127, 0, 0, 1], metrics_port).into());
    hub_cfg.validate().unwrap();
    let key = kirq::crypto::falcon::SigningKey::load(&hub_cfg.signing_key).unwrap();
    let hub = kirq::hub::start(hub_cfg, key).await.unwrap();
    let hardening = kirq::secret::Hardening {
        no_core_dumps: false,
        memory_locked: false,
    };
    let daemon = kirq::daemon::start(daemon_cfg, hardening).await.unwrap();

    let t = Instant::now();
    let hybrid = loop {
        let s = daemon.daemon.pool.snapshot();
        let h = s.by_provenance.get("hybrid").copied().unwrap_or(0);
        if h >= 3 * 4096 || t.elapsed() > Duration::from_secs(20) {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = t.elapsed();
    assert!(
        hybrid >= 3 * 4096,
        "only {hybrid} hybrid bytes admitted in {took:?}"
    );
    eprintln!("kirqd admitted {hybrid} hybrid bytes in {took:?}");

    let base = format!("http://127.0.0.1:{metrics_port}");
    let health: serde_json::Value = reqwest::get(format!("{base}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["hybrid"]["mode"], "hybrid", "{health}");
    assert_eq!(health["hybrid"]["healthy_sources"], 3, "{health}");
    let ids: Vec<_> = health["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("quantis".to_owned(), "up".to_owned()),
            ("truerng".to_owned(), "up".to_owned()),
            ("os".to_owned(), "up".to_owned())
        ],
        "{health}"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kirq_hub_below_min_sources 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kirq_hub_packets_by_mode_total{mode=\"hybrid\"}"),
        "{metrics}"
    );
    for id in ["quantis", "truerng", "os"] {
        assert!(
            metrics.contains(&format!(
                "kirq_hub_source_raw_bytes_total{{source=\"{id}\"}}"
            )),
            "{id}: {metrics}"
        );
    }
    daemon.stop();
    hub.stop();
}
