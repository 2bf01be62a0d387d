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
use common::sources::{https_server, random};
use kirq::config::{BelowMin, HybridConfig, SourceConfig};
use kirq::wire::refill;

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
    let (mut hub_cfg, daemon_cfg) =
        kirq::demo::configs(dir.path(), Some(([127, 0, 0, 1], 0).into())).unwrap();
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

    // A daemon's pull may ask for one source by kind or id.
    let id = kirq::tls::Identity::load(
        &dir.path().join("demo-kirqd.crt"),
        &dir.path().join("demo-kirqd.key"),
    )
    .unwrap();
    let hub_ca = kirq::tls::load_certs(&dir.path().join("hub-ca.pem")).unwrap();
    let client = kirq::tls::https_client(
        kirq::tls::client_config(&id, &hub_ca, false).unwrap(),
        Duration::from_secs(10),
    );
    let url = format!(
        "https://localhost:{}{}",
        hub.pull_addr.port(),
        refill::REFILL_PATH
    );
    let pull = |source: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = refill::RefillRequest {
                recipient: "demo-kirqd".into(),
                bytes: 8192,
                source: Some(source.into()),
            };
            client
                .post(url)
                .header(refill::TRANSPORT_HEADER, refill::TRANSPORT_VERSION)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    for (source, want) in [("qrng", vec!["quantis", "truerng"]), ("os", vec!["os"])] {
        let r = pull(source).await;
        assert!(r.status().is_success(), "{source}: {}", r.status());
        let body = r.bytes().await.unwrap();
        let mut packets = 0;
        for frame in refill::Frames::new(&body) {
            let p = kirq::wire::Packet::decode(frame.unwrap()).unwrap().packet;
            let ids: Vec<&str> = p.provenance.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(ids, want, "{source}");
            packets += 1;
        }
        assert_eq!(packets, 2, "{source}");
    }
    assert_eq!(pull("hsm").await.status(), reqwest::StatusCode::BAD_REQUEST);

    // A consumer asking kirqd for qrng bytes: the pool holds only hybrid ones, so kirqd pulls
    // qrng-only packets from the hub while the request waits (http.max_wait_ms), then serves it.
    let url = format!("http://{}/api/rng/random", daemon.http_addr.unwrap());
    let ask = || async {
        let r = reqwest::Client::new()
            .post(&url)
            .json(&serde_json::json!({ "num_bytes": 64, "source": "qrng" }))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let held = daemon.daemon.pool.snapshot().by_provenance["qrng"];
    assert_eq!(held, 0, "no qrng bytes yet");
    let t = Instant::now();
    let body = loop {
        let (status, body) = ask().await;
        if status == 200 || t.elapsed() > Duration::from_secs(15) {
            assert_eq!(status, 200, "{body}");
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["source"], "qrng", "{body}");

    daemon.stop();
    hub.stop();
}
