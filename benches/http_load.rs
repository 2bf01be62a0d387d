//! `/api/rng/random` under a keep-alive load: requests/s and latency percentiles for 32-byte
//! requests, against a same-run baseline server that answers the same JSON shape from getrandom.
//!
//! Run: `cargo bench --bench http_load`. The load generator shares the machine with the server
//! (both in this process), so absolute numbers are a floor; the ratio is the comparison that
//! counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

const CONNECTIONS: usize = 16;
const BODY: &str = r#"{"num_bytes":32}"#;

async fn serve(app: Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    addr
}

/// Baseline: same request parsing shape, bytes straight from getrandom.
fn baseline_app() -> Router {
    Router::new().route(
        "/api/rng/random",
        post(|body: Bytes| async move {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let n = v["num_bytes"].as_u64().unwrap() as usize;
            let mut buf = vec![0u8; n];
            getrandom::fill(&mut buf).unwrap();
            axum::Json(serde_json::json!({
                "random_data": hex::encode(&buf), "num_bytes": n, "encoding": "hex",
                "source": "local", "consumed": true, "timestamp": kirq::util::rfc3339_now(),
            }))
        }),
    )
}

/// Runs `CONNECTIONS` keep-alive clients for `dur`; returns (requests/s, latencies sorted).
async fn load(addr: SocketAddr, dur: Duration) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut lat = Vec::new();
            while start.elapsed() < dur {
                let req = hyper::Request::post("/api/rng/random")
                    .header("host", "bench")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                    .unwrap();
                let t0 = Instant::now();
                let resp = send.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200, "every bench request must be served");
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                lat.push(t0.elapsed());
                std::hint::black_box(body);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let el = start.elapsed();
    all.sort();
    (all.len() as f64 / el.as_secs_f64(), all)
}

fn pct(l: &[Duration], p: f64) -> f64 {
    l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1e3
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let dur = Duration::from_secs(if quick { 1 } else { 5 });
    if quick {
        println!("(smoke run from cargo test: numbers are meaningless; run cargo bench)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (hub_cfg, mut dcfg) = kirq::demo::configs(dir.path(), None).unwrap();
        dcfg.fallback.enabled = false;
        let key = kirq::crypto::falcon::SigningKey::load(&hub_cfg.signing_key).unwrap();
        let keys = kirq::daemon::load_trusted_keys(&dcfg).unwrap();
        let hardening = kirq::secret::Hardening {
            no_core_dumps: false,
            memory_locked: false,
        };
        let d = Arc::new(kirq::daemon::Daemon::new(dcfg.clone(), keys, hardening));
        // Fill the pool through the real verifier: 240 packets of 64 KiB (15 MiB). The smoke
        // run needs enough for a second of requests on an idle machine (4 MiB: 131,072
        // requests), or it measures an empty pool.
        let fill = if quick { 64 } else { 240 };
        for _ in 0..fill {
            let p = kirq::wire::sample_packet(&key, &dcfg.id, 65536, kirq::wire::SourceKind::Qrng);
            d.receive(&p.encode_signed(&key)).unwrap();
        }
        let kirq_addr = serve(kirq::http::router(d.handles())).await;
        let base_addr = serve(baseline_app()).await;
        println!(
            "POST /api/rng/random, 32 bytes, {CONNECTIONS} keep-alive connections, {dur:?} each"
        );
        println!(
            "{:<22} {:>10} {:>9} {:>9} {:>9}",
            "server", "req/s", "p50 ms", "p99 ms", "p99.9 ms"
        );
        let (base_rps, base_lat) = load(base_addr, dur).await;
        let (rps, lat) = load(kirq_addr, dur).await;
        for (name, r, l) in [
            ("baseline (getrandom)", base_rps, &base_lat),
            ("kirqd pool", rps, &lat),
        ] {
            println!(
                "{name:<22} {r:>10.0} {:>9.3} {:>9.3} {:>9.3}",
                pct(l, 0.5),
                pct(l, 0.99),
                pct(l, 0.999)
            );
        }
        println!("ratio kirqd/baseline req/s: {:.2}", rps / base_rps);
        let served = d.pool.snapshot().served_bytes_total;
        assert_eq!(
            served,
            32 * lat.len() as u64,
            "each request took exactly 32 pool bytes"
        );
    });
}
