//! Source faults, with a real kirq-hub process pushing to a real kirqd: the hub has the local
//! source and one REST QRNG (a loopback HTTPS server in this test, Quantis wire format) that
//! turns, in turn, hung (never answers), garbage (an HTML error page with status 200) and biased
//! (75 % zero bytes), and then good again.
//!
//! For each: the hub's /health names the source's state and reason and its
//! `kirq_hub_source_failures_total` grows; the daemon keeps being served by the hub (never the
//! faulty bytes: nothing served repeats, served ≤ admitted); when the source is good again the
//! hub takes it back by itself, and the time that took is printed (`FAULT source-...`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use common::*;

const GOOD: u8 = 0;
const HANG: u8 = 1;
const GARBAGE: u8 = 2;
const BIASED: u8 = 3;

async fn streambytes(
    State(mode): State<Arc<AtomicU8>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    let n: usize = q.get("size").and_then(|s| s.parse().ok()).unwrap_or(0);
    match mode.load(Ordering::Relaxed) {
        HANG => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            ().into_response()
        }
        GARBAGE => (
            [("content-type", "text/html")],
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response(),
        BIASED => {
            let mut b = common::sources::random(n);
            for (i, x) in b.iter_mut().enumerate() {
                if i % 4 != 0 {
                    *x = 0;
                }
            }
            b.into_response()
        }
        _ => common::sources::random(n).into_response(),
    }
}

/// The QRNG server on its own runtime thread; returns (base URL, CA path, mode switch).
fn qrng() -> (
    String,
    std::path::PathBuf,
    Arc<AtomicU8>,
    std::sync::mpsc::Sender<()>,
) {
    let mode = Arc::new(AtomicU8::new(GOOD));
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let m = mode.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let router = axum::Router::new()
                .route("/api/2.0/streambytes", axum::routing::get(streambytes))
                .with_state(m);
            let srv = common::sources::https_server(router).await;
            tx.send((srv.base(), srv.ca_path.clone())).unwrap();
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            drop(srv);
        });
    });
    let (base, ca) = rx.recv().unwrap();
    (base, ca, mode, stop_tx)
}

fn hub_health(port: u16) -> serde_json::Value {
    get_json(&format!("http://127.0.0.1:{port}/health"))
}

fn source_report(port: u16) -> serde_json::Value {
    hub_health(port)["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "qrng-fault")
        .cloned()
        .expect("the REST source in the hub's /health")
}

/// Sum of the hub's `kirq_hub_source_failures_total` lines for the REST source.
fn failures(port: u16) -> u64 {
    let text = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("kirq_hub_source_failures_total") && l.contains("qrng-fault"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Takes 512 bytes when the pool has them.
fn take(f: &Fleet, out: &mut Vec<Vec<u8>>) {
    out.extend(f.take(&reqwest::blocking::Client::new(), 512));
}

#[test]
fn a_source_that_hangs_returns_garbage_or_turns_biased() {
    let (base, ca, mode, _stop) = qrng();
    let f = Fleet::new();
    let metrics_port = free_port();
    let tables = format!(
        "[[sources]]\ntype = \"rest\"\nid = \"qrng-fault\"\npreset = \"quantis\"\n\
         base_url = \"{base}\"\nca_cert = \"{}\"\ntimeout_ms = 500\nbackoff_max_secs = 1\n\
         [health]\nquarantine_secs = 2\n",
        ca.display()
    );
    let hub_cfg = f.hub_config_with(
        true,
        &format!("metrics_listen = \"127.0.0.1:{metrics_port}\""),
        &tables,
    );
    let _d = kirqd(
        &f,
        &f.daemon_config(false, "[fallback]\nafter_secs = 3\n"),
        &[],
    );
    let _h = hub(&f, &hub_cfg, &[]);
    wait_for(Duration::from_secs(30), "the REST source up", || {
        source_report(metrics_port)["status"] == "up"
            && get_json(&f.http("/api/rng/stats"))["packets_accepted"]
                .as_u64()
                .unwrap()
                >= 3
    });
    let mut out = Vec::new();
    let mut report = Vec::new();
    for (name, m) in [("hang", HANG), ("garbage", GARBAGE), ("biased", BIASED)] {
        let fails = failures(metrics_port);
        mode.store(m, Ordering::Relaxed);
        let t0 = Instant::now();
        wait_for(
            Duration::from_secs(30),
            "the hub to mark the source",
            || {
                take(&f, &mut out);
                source_report(metrics_port)["status"] != "up"
            },
        );
        let detect = t0.elapsed();
        let r = source_report(metrics_port);
        assert!(r["reason"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
        wait_for(Duration::from_secs(10), "a counted failure", || {
            failures(metrics_port) > fails
        });
        // The daemon is still served by the hub while the source is out.
        let accepted = get_json(&f.http("/api/rng/stats"))["packets_accepted"]
            .as_u64()
            .unwrap();
        wait_for(Duration::from_secs(10), "packets during the fault", || {
            take(&f, &mut out);
            get_json(&f.http("/api/rng/stats"))["packets_accepted"]
                .as_u64()
                .unwrap()
                > accepted
        });
        let fallback = get_json(&f.http("/api/rng/health"))["fallback_active"].clone();

        mode.store(GOOD, Ordering::Relaxed);
        let t1 = Instant::now();
        wait_for(Duration::from_secs(60), "the source back up", || {
            take(&f, &mut out);
            source_report(metrics_port)["status"] == "up"
        });
        let recover = t1.elapsed();
        report.push(format!(
            "FAULT source-{name}: hub marked it {:?} ({}) after {detect:?}, failures {} -> {}, \
             daemon fallback_active {fallback} and still admitting hub packets; back up \
             {recover:?} after the source was good",
            r["status"],
            r["reason"],
            fails,
            failures(metrics_port)
        ));
    }
    for r in &report {
        eprintln!("{r}");
    }
    assert_no_repeated_window(&out);
    let s = get_json(&f.http("/api/rng/stats"));
    assert!(s["bytes_served_total"].as_u64() <= s["bytes_admitted_total"].as_u64());
    eprintln!(
        "FAULT source: no-repeat ok over {} answers; served {} <= admitted {}",
        out.len(),
        s["bytes_served_total"],
        s["bytes_admitted_total"]
    );
}
