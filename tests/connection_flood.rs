//! An unauthenticated stranger cannot stop the daemon or the hub: a flood of idle plain-TCP
//! connections to a mutual-TLS port (from another loopback address, the process held to 1024 open
//! files as under systemd's default) must leave the other listeners answering and packets being
//! delivered, and every refused connection is counted.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// Idle connections the stranger keeps open (reopening each one the daemon closes).
const FLOOD: usize = 1_100;
/// How long the flood lasts once it is fully open.
const FLOOD_WINDOW: Duration = Duration::from_secs(6);
/// A health answer slower than this counts as the shim not answering (a liveness bound).
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Opens `FLOOD` connections from 127.0.0.2 to `target` and keeps them open until `stop`; a
/// connection the server closes is reopened after a second. Counts the connections opened.
fn flood(target: SocketAddr, stop: Arc<AtomicBool>, opened: Arc<AtomicUsize>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("flood runtime");
    rt.block_on(async move {
        let mut slots = Vec::new();
        for i in 0..FLOOD {
            let (stop, opened) = (stop.clone(), opened.clone());
            // In waves of 100, so the listener's accept queue never overflows and every
            // connection the flood counts is one the daemon has to deal with.
            let start = Duration::from_millis(50 * (i as u64 / 100));
            slots.push(tokio::spawn(async move {
                tokio::time::sleep(start).await;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(mut s) = connect_from_127_0_0_2(target).await {
                        opened.fetch_add(1, Ordering::Relaxed);
                        // Idle: send nothing, wait for the server to close (or the end).
                        let mut buf = [0u8; 64];
                        loop {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            use tokio::io::AsyncReadExt;
                            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf))
                                .await
                            {
                                Err(_) => continue,
                                Ok(Ok(n)) if n > 0 => continue,
                                Ok(_) => break,
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }));
        }
        for s in slots {
            let _ = s.await;
        }
    });
}

/// The stranger: [`flood`] on its own thread.
struct Flood {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Flood {
    /// Starts the flood against `target` and gives it 20 s to open `FLOOD` connections;
    /// returns it and how many it had open by then.
    fn start(target: SocketAddr) -> (Self, usize) {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, opened) = (stop.clone(), opened.clone());
            std::thread::spawn(move || flood(target, stop, opened))
        };
        wait_at_most(Duration::from_secs(20), Duration::from_millis(20), || {
            opened.load(Ordering::Relaxed) >= FLOOD
        });
        let at_start = opened.load(Ordering::Relaxed);
        (
            Self {
                stop,
                opened,
                thread,
            },
            at_start,
        )
    }

    /// Ends the flood; returns how many connections it opened in all.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("flood thread");
        self.opened.load(Ordering::Relaxed)
    }
}

async fn connect_from_127_0_0_2(target: SocketAddr) -> Option<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.2:0".parse().expect("address"))
        .expect("bind 127.0.0.2 (loopback covers 127.0.0.0/8)");
    tokio::time::timeout(Duration::from_secs(3), sock.connect(target))
        .await
        .ok()?
        .ok()
}

/// Descriptors `pid` holds now.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[test]
fn a_stranger_flooding_the_receive_port_cannot_stop_the_daemon() {
    need_program("prlimit", "util-linux");
    raise_own_nofile();
    let f = Fleet::new();
    let config = f.daemon_config(
        true,
        "[fallback]\nenabled = false\n[device]\nmode = \"off\"\n",
    );
    // Soft and hard limit 1024: the daemon cannot raise itself out of the flood's reach, so the
    // connection limits alone must hold.
    let d = kirqd_with(
        &f,
        &config,
        &["prlimit", "--nofile=1024:1024", "--"],
        &[],
        &[],
    );
    let _h = hub(&f, &f.hub_config(true), &[]);
    let accepted = || {
        get_json(&f.http("/api/rng/stats"))["packets_accepted"]
            .as_u64()
            .expect("packets_accepted")
    };
    wait_for(Duration::from_secs(20), "the hub's first packets", || {
        accepted() > 0
    });

    let client = reqwest::blocking::Client::builder()
        .timeout(ANSWER_WITHIN)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let (flood, opened_at_start) = Flood::start(([127, 0, 0, 1], f.receive_port).into());

    // During the flood: the shim answers each health request promptly, and packets keep coming.
    let accepted_before = client
        .get(f.http("/api/rng/stats"))
        .send()
        .and_then(|r| r.json::<serde_json::Value>())
        .ok()
        .and_then(|v| v["packets_accepted"].as_u64());
    let mut slow = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut answers = 0;
    let mut fds_held = 0;
    let window = Instant::now();
    while window.elapsed() < FLOOD_WINDOW {
        let t = Instant::now();
        let ok = client
            .get(f.http("/api/rng/health"))
            .send()
            .is_ok_and(|r| r.status().is_success());
        let took = t.elapsed();
        slowest = slowest.max(took);
        answers += 1;
        if !ok || took >= ANSWER_WITHIN {
            slow.push(format!(
                "{:.1}s: {took:?} ok={ok}",
                window.elapsed().as_secs_f64()
            ));
        }
        fds_held = fds_held.max(open_fds(d.child.id()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let accepted_after = client
        .get(f.http("/api/rng/stats"))
        .send()
        .and_then(|r| r.json::<serde_json::Value>())
        .ok()
        .and_then(|v| v["packets_accepted"].as_u64());
    let opened_total = flood.stop();

    wait_for(Duration::from_secs(15), "the shim after the flood", || {
        client.get(f.http("/api/rng/health")).send().is_ok()
    });
    let metrics = scrape(&f.http("/metrics"));
    let refused = metric::<u64>(
        &metrics,
        "kirq_tls_connections_refused_total{reason=\"peer_limit\"} ",
    );
    let log = d.log_text();
    let emfile = log.matches("Too many open files").count();
    let summary = format!(
        "flood: {opened_at_start} connections open at start, {opened_total} opened in all; \
         health: {answers} requests, slowest {slowest:?}, {} slow or failed {slow:?}; \
         kirqd held up to {fds_held} descriptors; packets_accepted {accepted_before:?} -> {accepted_after:?}; \
         \"Too many open files\" logged {emfile} times; refused (peer_limit) {refused:?}",
        slow.len()
    );
    println!("{summary}");
    assert!(
        opened_at_start >= FLOOD,
        "the flood never got going: {summary}"
    );
    assert!(
        slow.is_empty(),
        "the HTTP shim stopped answering: {summary}"
    );
    assert!(
        matches!((accepted_before, accepted_after), (Some(a), Some(b)) if b > a),
        "the hub's packets stopped being admitted: {summary}"
    );
    assert_eq!(emfile, 0, "kirqd ran out of descriptors: {summary}");
    assert!(
        refused.is_some_and(|n| n >= (FLOOD as u64) / 2),
        "refused connections are not counted: {summary}"
    );
}

/// The hub's pull listener under the same flood: the hub (held to 1024 descriptors) keeps
/// answering the daemon's pulls, its /health keeps answering, and the refusals are counted.
#[test]
fn a_stranger_flooding_the_hub_cannot_stop_its_deliveries() {
    need_program("prlimit", "util-linux");
    raise_own_nofile();
    let f = Fleet::new();
    let metrics_port = free_port();
    let hub_cfg = f.hub_config_with(
        false,
        &format!("metrics_listen = \"127.0.0.1:{metrics_port}\""),
        "",
    );
    let h = hub_with(&f, &hub_cfg, &["prlimit", "--nofile=1024:1024", "--"], &[]);
    let _d = kirqd(
        &f,
        &f.daemon_config(
            true,
            "[fallback]\nenabled = false\n[device]\nmode = \"off\"\n",
        ),
        &[],
    );
    wait_for(Duration::from_secs(20), "the first pull", || f.pool().1 > 0);
    let (flood, opened_at_start) = Flood::start(([127, 0, 0, 1], f.hub_port).into());
    // During the flood the daemon keeps pulling: take what the pool holds, again and again, and
    // the refill must keep bringing more from the flooded hub.
    let client = reqwest::blocking::Client::builder()
        .timeout(ANSWER_WITHIN)
        .build()
        .expect("client");
    let admitted_before = f.pool().1;
    let mut hub_health_failures = 0;
    let window = Instant::now();
    while window.elapsed() < FLOOD_WINDOW {
        let (left, _) = f.pool();
        if left > 0 {
            let _ = random(&f, serde_json::json!({ "num_bytes": left.min(65_536) }));
        }
        let ok = client
            .get(format!("http://127.0.0.1:{metrics_port}/health"))
            .send()
            .is_ok_and(|r| r.status().is_success());
        hub_health_failures += usize::from(!ok);
        std::thread::sleep(Duration::from_millis(200));
    }
    let admitted_after = f.pool().1;
    flood.stop();
    let metrics = scrape(&format!("http://127.0.0.1:{metrics_port}/metrics"));
    let refused = metric::<u64>(
        &metrics,
        "kirq_tls_connections_refused_total{reason=\"peer_limit\"} ",
    );
    let emfile = h.log_text().matches("Too many open files").count();
    let summary = format!(
        "flood: {opened_at_start} open at start; admitted {admitted_before} -> {admitted_after}; \
         hub /health failures {hub_health_failures}; EMFILE {emfile}; refused {refused:?}"
    );
    println!("{summary}");
    assert!(
        opened_at_start >= FLOOD,
        "the flood never got going: {summary}"
    );
    assert!(
        admitted_after > admitted_before,
        "the daemon's pulls stopped being answered: {summary}"
    );
    assert_eq!(
        hub_health_failures, 0,
        "the hub's /health stopped: {summary}"
    );
    assert_eq!(emfile, 0, "the hub ran out of descriptors: {summary}");
    assert!(
        refused.is_some_and(|n| n >= (FLOOD as u64) / 2),
        "refused connections are not counted: {summary}"
    );
}
