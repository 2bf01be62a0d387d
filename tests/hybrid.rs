//! The hybrid policy with three real sources: the OS RNG (healthy), a loopback QRNG service that
//! serves a stuck stream (fails the health tests), and one that never answers in time.
// Helpers outside #[test] fns unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Query;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use common::sources::{TlsServer, factory, https_server, random, source_from_toml};
use kirq::config::{BelowMin, HybridConfig};
use kirq::hub::{BuildError, Mode, PacketFactory};
use kirq::metrics::HubMetrics;
use kirq::wire::{Packet, SourceKind};

type Q = Query<HashMap<String, String>>;

fn n(q: &Q) -> usize {
    q["n"].parse().unwrap()
}

fn octets(b: Vec<u8>) -> axum::response::Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response()
}

async fn server() -> TlsServer {
    let router = Router::new()
        .route("/good", get(|q: Q| async move { octets(random(n(&q))) }))
        .route(
            "/stuck",
            get(|q: Q| async move { octets(vec![0x55; n(&q)]) }),
        )
        .route(
            "/delayed",
            get(|q: Q| async move {
                tokio::time::sleep(Duration::from_millis(250)).await;
                octets(random(n(&q)))
            }),
        )
        .route(
            "/slow",
            get(|q: Q| async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                octets(random(n(&q)))
            }),
        );
    https_server(router).await
}

/// A rest source on the loopback service; `timeout_ms = 300` unless `extra` sets it.
fn rest(srv: &TlsServer, id: &str, path: &str, extra: &str) -> String {
    let timeout = if extra.contains("timeout_ms") {
        ""
    } else {
        "timeout_ms = 300\n"
    };
    format!(
        "type = \"rest\"\nid = \"{id}\"\nurl = \"{}/{path}?n={{n}}\"\nformat = \"octets\"\n\
         max_bytes_per_call = 65536\nca_cert = \"{}\"\n{timeout}{extra}",
        srv.base(),
        srv.ca_path.display()
    )
}

/// local (healthy), qrng-stuck (fails health tests), qrng-slow (times out).
fn three(srv: &TlsServer, min_sources: usize, below_min: BelowMin) -> PacketFactory {
    let sources = vec![
        source_from_toml("type = \"local\"\nid = \"os\""),
        source_from_toml(&rest(srv, "qrng-stuck", "stuck", "")),
        source_from_toml(&rest(srv, "qrng-slow", "slow", "")),
    ];
    factory(
        sources,
        HybridConfig {
            min_sources,
            below_min,
        },
    )
}

fn provenance(bytes: &[u8]) -> Vec<(String, SourceKind, u32)> {
    let p = Packet::decode(bytes).unwrap().packet;
    p.provenance
        .iter()
        .map(|e| (e.id.clone(), e.kind, e.byte_count))
        .collect()
}

fn status(f: &PacketFactory) -> Vec<(String, &'static str, String)> {
    f.sources()
        .iter()
        .map(|s| {
            let r = s.report();
            (r.id, r.status.as_str(), r.reason.unwrap_or_default())
        })
        .collect()
}

#[tokio::test]
async fn packets_keep_flowing_from_the_healthy_source_with_exact_provenance() {
    let srv = server().await;
    let f = three(&srv, 1, BelowMin::Stop);
    let m = HubMetrics::new();
    let t = Instant::now();
    let first = f.build("d1", 1024, &m).await.unwrap();
    let first_took = t.elapsed();
    // Three equal weights: each was asked for a third; only the OS RNG's bytes went in, so the
    // packet is cut to what they carry.
    assert_eq!(
        provenance(&first),
        [("os".to_owned(), SourceKind::Local, 342)]
    );
    assert_eq!(Packet::decode(&first).unwrap().packet.entropy.len(), 342);
    let st = status(&f);
    assert_eq!(st[0].1, "up");
    assert_eq!(st[1].1, "quarantined");
    assert!(st[1].2.contains("repetition count"), "{:?}", st[1]);
    assert_eq!(st[2].1, "degraded");
    assert!(st[2].2.contains("timed out"), "{:?}", st[2]);
    // The broken ones are no longer asked: the next packets are whole and fast.
    let t = Instant::now();
    for _ in 0..5 {
        let p = f.build("d1", 1024, &m).await.unwrap();
        assert_eq!(provenance(&p), [("os".to_owned(), SourceKind::Local, 1024)]);
    }
    let next_took = t.elapsed() / 5;
    assert!(first_took >= Duration::from_millis(300), "{first_took:?}");
    assert!(next_took < Duration::from_millis(100), "{next_took:?}");
    assert_eq!(f.mode(), (Mode::Hybrid, 1));
    eprintln!("first packet (waits out the slow source): {first_took:?}; next: {next_took:?}");
}

#[tokio::test]
async fn below_min_sources_stop_refuses_packets_and_says_so() {
    let srv = server().await;
    let f = three(&srv, 2, BelowMin::Stop);
    let mut m = HubMetrics::new();
    f.register_metrics(&mut m.registry);
    for _ in 0..3 {
        let e = f.build("d1", 1024, &m).await.unwrap_err();
        assert!(
            matches!(e, BuildError::BelowMinSources { have: 1, need: 2 }),
            "{e}"
        );
    }
    assert_eq!(m.packets_built.get(), 0);
    assert_eq!(f.mode(), (Mode::Stopped, 1));
    let text = m.encode();
    assert!(text.contains("kirq_hub_below_min_sources 1"), "{text}");
    assert!(
        text.contains("kirq_hub_packets_refused_total{reason=\"below_min_sources\"} 3"),
        "{text}"
    );
}

#[tokio::test]
async fn below_min_sources_single_makes_single_source_packets() {
    let srv = server().await;
    let f = three(&srv, 2, BelowMin::Single);
    let mut m = HubMetrics::new();
    f.register_metrics(&mut m.registry);
    let first = f.build("d1", 1024, &m).await.unwrap();
    assert_eq!(
        provenance(&first),
        [("os".to_owned(), SourceKind::Local, 342)]
    );
    let p = f.build("d1", 1024, &m).await.unwrap();
    assert_eq!(provenance(&p), [("os".to_owned(), SourceKind::Local, 1024)]);
    assert_eq!(f.mode(), (Mode::Single, 1));
    let text = m.encode();
    assert!(text.contains("kirq_hub_below_min_sources 1"), "{text}");
    assert!(
        text.contains("kirq_hub_packets_by_mode_total{mode=\"single\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn weights_split_credit_and_single_source_requests_use_that_source() {
    let srv = server().await;
    let sources = vec![
        source_from_toml("type = \"local\"\nid = \"os\"\nweight = 3"),
        source_from_toml(&rest(&srv, "qrng-a", "good", "min_entropy_per_byte = 4")),
    ];
    let f = factory(
        sources,
        HybridConfig {
            min_sources: 2,
            below_min: BelowMin::Stop,
        },
    );
    let m = HubMetrics::new();
    let p = f.build("d1", 1024, &m).await.unwrap();
    // 8192 bits: os carries 3/4 at 8 bits a byte, qrng-a 1/4 at 4 bits a byte.
    assert_eq!(
        provenance(&p),
        [
            ("os".to_owned(), SourceKind::Local, 768),
            ("qrng-a".to_owned(), SourceKind::Qrng, 512)
        ]
    );
    assert_eq!(f.mode(), (Mode::Hybrid, 2));
    for name in ["qrng", "qrng-a"] {
        let p = f.build_from("d1", 1024, &m, Some(name)).await.unwrap();
        assert_eq!(
            provenance(&p),
            [("qrng-a".to_owned(), SourceKind::Qrng, 2048)]
        );
    }
    assert!(!f.knows("hsm"));
    let e = f.build_from("d1", 1024, &m, Some("hsm")).await.unwrap_err();
    assert!(matches!(e, BuildError::UnknownSource(_)), "{e}");
}

#[tokio::test]
async fn sources_are_asked_concurrently() {
    let srv = server().await;
    let sources = (0..3)
        .map(|i| {
            let id = format!("q{i}");
            source_from_toml(&rest(&srv, &id, "delayed", "timeout_ms = 2000"))
        })
        .collect();
    let f = factory(
        sources,
        HybridConfig {
            min_sources: 3,
            below_min: BelowMin::Stop,
        },
    );
    let t = Instant::now();
    let p = f.build("d1", 1024, &HubMetrics::new()).await.unwrap();
    let took = t.elapsed();
    assert_eq!(provenance(&p).len(), 3);
    // Three sources that each take 250 ms: together, not one after another.
    assert!(took < Duration::from_millis(700), "{took:?}");
    eprintln!("three 250 ms sources: packet in {took:?}");
}
