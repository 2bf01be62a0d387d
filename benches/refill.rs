//! Demand-aware refill: a loop of 64 KiB `POST /api/rng/random` requests against the demo's hub
//! and daemon (in this process, real mutual TLS between them, the demo's configs: 4 KiB packets,
//! `local` source) after the pool was drained. Reports the served rate, the share of 503s, and
//! the ratio to reading /dev/urandom in 64 KiB chunks in the same run.
//!
//! Run: `cargo bench --bench refill` (10 s per client count). From `cargo test` it runs 1 s as a
//! smoke test.

use std::io::Read;
use std::time::{Duration, Instant};

/// One client looping 64 KiB requests for `dur`: (bytes served, 200s, 503s).
async fn loop_64k(url: String, dur: Duration) -> (u64, u32, u32) {
    let c = reqwest::Client::new();
    let body = r#"{"num_bytes":65536,"encoding":"base64"}"#;
    let (mut bytes, mut ok, mut unavailable) = (0u64, 0u32, 0u32);
    let end = Instant::now() + dur;
    while Instant::now() < end {
        let r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => {
                let _ = r.bytes().await.unwrap();
                bytes += 65_536;
                ok += 1;
            }
            503 => unavailable += 1,
            s => panic!("status {s}"),
        }
    }
    (bytes, ok, unavailable)
}

fn urandom_rate(dur: Duration) -> f64 {
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    let mut buf = vec![0u8; 65_536];
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < dur {
        f.read_exact(&mut buf).unwrap();
        n += buf.len() as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let dur = Duration::from_secs(if quick { 1 } else { 10 });
    if quick {
        println!("(smoke run from cargo test: numbers are meaningless; run cargo bench)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let http = std::net::SocketAddr::from(([127, 0, 0, 1], kirq::demo::free_port().unwrap()));
        let (hub_cfg, dcfg) = kirq::demo::configs(dir.path(), Some(http)).unwrap();
        let key = kirq::crypto::falcon::SigningKey::load(&hub_cfg.signing_key).unwrap();
        let hardening = kirq::secret::Hardening {
            no_core_dumps: false,
            memory_locked: false,
        };
        let hub = kirq::hub::start(hub_cfg, key).await.unwrap();
        let d = kirq::daemon::start(dcfg, hardening).await.unwrap();
        let url = format!("http://{http}/api/rng/random");
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.daemon.pool.snapshot().admitted_bytes_total == 0 {
            assert!(Instant::now() < deadline, "no refill in 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Drain what is there, once.
        let left = d.daemon.pool.len();
        let _ = d.daemon.pool.take(left, kirq::pool::Want::Any);
        let base = urandom_rate(dur);
        println!(
            "64 KiB requests after a drain, {dur:?} per row; baseline /dev/urandom 64 KiB reads"
        );
        println!(
            "{:<10} {:>10} {:>8} {:>8} {:>7} {:>16}",
            "clients", "MB/s", "200s", "503s", "503 %", "ratio to urandom"
        );
        for clients in [1usize, 4] {
            let tasks: Vec<_> = (0..clients)
                .map(|_| tokio::spawn(loop_64k(url.clone(), dur)))
                .collect();
            let (mut bytes, mut ok, mut unavailable) = (0, 0, 0);
            for t in tasks {
                let (b, o, u) = t.await.unwrap();
                bytes += b;
                ok += o;
                unavailable += u;
            }
            let rate = bytes as f64 / dur.as_secs_f64();
            println!(
                "{clients:<10} {:>10.2} {ok:>8} {unavailable:>8} {:>7.2} {:>16.4}",
                rate / 1e6,
                100.0 * f64::from(unavailable) / f64::from((ok + unavailable).max(1)),
                rate / base
            );
        }
        println!("baseline /dev/urandom: {:.1} MB/s", base / 1e6);
        d.stop();
        hub.stop();
    });
}
